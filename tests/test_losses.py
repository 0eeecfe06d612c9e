"""FFTLoss and JUDELoss: values against hand computation, BasicSR conventions, autocast, gradients."""
import numpy as np
import pytest
import torch
from basicsr.losses import build_loss
from basicsr.losses.basic_loss import L1Loss

from jude_arch.losses import FFTLoss, JUDELoss


def dft_half(x):
    """The non-redundant half (W//2+1 columns) of the 2-D DFT, summed by its definition, in numpy."""
    h, w = x.shape[-2:]
    y, xx = np.arange(h), np.arange(w)
    out = np.zeros(x.shape[:-1] + (w // 2 + 1, ), complex)
    for u in range(h):
        for v in range(w // 2 + 1):
            phase = np.exp(-2j * np.pi * (u * y[:, None] / h + v * xx[None, :] / w))
            out[..., u, v] = (x * phase).sum(axis=(-2, -1))
    return out


def test_fft_loss_of_a_2x2_image_by_hand():
    pred = torch.tensor([[[[1., 2.], [3., 4.]]]])
    target = torch.zeros_like(pred)
    # DFT of [[1, 2], [3, 4]]: 10, -2 (first row), -4, 0 (second row); all real. L1 over 4 real + 4 imag parts.
    assert FFTLoss()(pred, target).item() == pytest.approx((10 + 2 + 4 + 0) / 8)
    assert FFTLoss(reduction='sum')(pred, target).item() == pytest.approx(16)
    # JUDELoss = MAE (2.5) + 0.1 · FFT (2.0)
    assert JUDELoss()(pred, target).item() == pytest.approx(2.5 + 0.1 * 2.0)
    assert JUDELoss(reduction='sum')(pred, target).item() == pytest.approx(10 + 0.1 * 16)


def test_losses_match_the_dft_definition_on_random_tensors():
    rng = np.random.default_rng(0)
    pred, target = rng.random((2, 3, 5, 7)), rng.random((2, 3, 5, 7))  # odd sizes: no symmetry shortcuts
    diff = dft_half(pred) - dft_half(target)
    fft_mean = np.concatenate([np.abs(diff.real).ravel(), np.abs(diff.imag).ravel()]).mean()
    mae = np.abs(pred - target).mean()

    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    assert FFTLoss()(p, t).item() == pytest.approx(fft_mean, rel=1e-10)
    assert JUDELoss()(p, t).item() == pytest.approx(mae + 0.1 * fft_mean, rel=1e-10)
    assert JUDELoss(fft_weight=0.5, loss_weight=2.0)(p, t).item() == pytest.approx(2 * (mae + 0.5 * fft_mean))
    assert FFTLoss(loss_weight=3.0)(p, t).item() == pytest.approx(3 * fft_mean, rel=1e-10)

    elementwise = FFTLoss(reduction='none')(p, t)
    assert elementwise.shape == (2, 3, 5, 7 // 2 + 1, 2)
    assert torch.allclose(elementwise[..., 0], torch.from_numpy(np.abs(diff.real)))
    assert torch.allclose(elementwise[..., 1], torch.from_numpy(np.abs(diff.imag)))


def test_jude_loss_is_l1_plus_the_weighted_fft_loss():
    """JUDELoss is BasicSR's L1Loss plus FFTLoss weighted σ, to the bit, for both reductions, values and gradients."""
    torch.manual_seed(1)
    target = torch.rand(2, 3, 9, 12)
    for reduction in ('mean', 'sum'):
        pred = torch.rand(2, 3, 9, 12, requires_grad=True)
        total = JUDELoss(loss_weight=2.0, fft_weight=0.3, reduction=reduction)(pred, target)
        parts = 2.0 * (L1Loss(reduction=reduction)(pred, target) + FFTLoss(0.3, reduction)(pred, target))
        assert torch.equal(total, parts)
        assert torch.equal(torch.autograd.grad(total, pred)[0], torch.autograd.grad(parts, pred)[0])


def test_gradients_flow_and_match_finite_differences():
    torch.manual_seed(0)
    pred = torch.rand(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 3, 6, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: JUDELoss()(x, target), (pred, ))
    assert torch.autograd.gradcheck(lambda x: FFTLoss()(x, target), (pred, ))

    pred32 = pred.detach().float().requires_grad_()
    JUDELoss()(pred32, target.float()).backward()
    assert torch.isfinite(pred32.grad).all() and pred32.grad.abs().sum() > 0


def test_fft_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 32, 32).bfloat16(), torch.rand(2, 3, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = JUDELoss()(pred, target)
        fft = FFTLoss()(pred, target)
    assert loss.dtype == torch.float32 and fft.dtype == torch.float32
    assert fft.item() == pytest.approx(FFTLoss()(pred.float(), target).item(), rel=1e-6)
    assert loss.item() == pytest.approx(JUDELoss()(pred.float(), target).item(), rel=1e-3)


def test_registered_and_buildable_from_options():
    loss = build_loss({'type': 'JUDELoss'})
    assert isinstance(loss, JUDELoss) and loss.fft_weight == 0.1 and loss.loss_weight == 1.0
    assert isinstance(build_loss({'type': 'FFTLoss', 'loss_weight': 0.1}), FFTLoss)


@pytest.mark.parametrize('make, message', [
    (lambda: FFTLoss(reduction='avg'), 'unsupported reduction'),
    (lambda: JUDELoss(reduction='none'), 'unsupported reduction'),
])
def test_bad_options_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_calls_are_clear_errors():
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match='weights have no meaning'):
        JUDELoss()(a, b, weight=torch.ones_like(a))
    for loss in (FFTLoss(), JUDELoss()):
        with pytest.raises(ValueError, match='differ in shape'):
            loss(a, torch.rand(1, 3, 8, 9))
