"""The FFT data step (docs/algorithm.md): exact algebra and physical deblurring."""
import numpy as np
import pytest
import torch

from jude_arch.archs import FFTDataStep, blur, solve_i_update
from jude_arch.tools.boundary_study import compare_boundaries, format_table, observation_pairs


def circular_conv(img, kernel, transpose=False):
    """H ⊗ img (or Hᵀ img) on a periodic domain, written independently of the FFT code with np.roll.

    (H ⊗ I)[y, x] = Σ_ij k[i, j] · I[y − i + c, x − j + c] with c = k // 2 and indices modulo the size.
    """
    out = np.zeros_like(img)
    k_h, k_w = kernel.shape
    for i in range(k_h):
        for j in range(k_w):
            shift = (i - k_h // 2, j - k_w // 2)
            if transpose:
                shift = (-shift[0], -shift[1])
            out += kernel[i, j] * np.roll(img, shift, axis=(-2, -1))
    return out


def normal_equation_residual(X, Z, delta, kernel, lam1, lam5, I):
    """max |λ1·Hᵀ(H⊗I − X) + Δ + λ5(I − Z)| per sample (kernel: N×k×k numpy)."""
    res = []
    for n in range(X.shape[0]):
        r = lam1[n] * circular_conv(circular_conv(I[n], kernel[n]) - X[n], kernel[n], transpose=True)
        res.append(np.abs(r + delta[n] + lam5[n] * (I[n] - Z[n])).max())
    return max(res)


def random_problem(rng, n, c, h, w, k, dtype):
    X = torch.from_numpy(rng.uniform(size=(n, c, h, w))).to(dtype)
    Z = torch.from_numpy(rng.uniform(size=(n, c, h, w))).to(dtype)
    delta = torch.from_numpy(rng.normal(size=(n, c, h, w)) * 0.1).to(dtype)
    kernel = torch.from_numpy(rng.uniform(size=(n, 1, k, k)))
    kernel = (kernel / kernel.sum((-2, -1), keepdim=True)).to(dtype)
    lam1 = torch.from_numpy(10**rng.uniform(-2, 2, size=n)).to(dtype)
    lam5 = torch.from_numpy(10**rng.uniform(-3, 0, size=n)).to(dtype)
    return X, Z, delta, kernel, lam1, lam5


@pytest.mark.parametrize('k', [3, 4, 5, 9, 15, 31])
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_circular_solve_satisfies_normal_equation(k, dtype, tol):
    rng = np.random.default_rng(k)
    # 31 > 17 and 20: the kernel wraps around the periodic domain, which the solve must honour too.
    X, Z, delta, kernel, lam1, lam5 = random_problem(rng, 2, 3, 17, 20, k, dtype)
    I = solve_i_update(X, Z, delta, kernel, lam1, lam5, boundary='circular')
    assert I.dtype == dtype and I.shape == X.shape
    residual = normal_equation_residual(*(t.double().numpy() for t in (X, Z, delta)), kernel[:, 0].double().numpy(),
                                        lam1.double().numpy(), lam5.double().numpy(), I.double().numpy())
    assert residual <= tol


def test_lambdas_broadcast_as_n111():
    X, Z, delta, kernel, lam1, lam5 = random_problem(np.random.default_rng(0), 3, 3, 12, 10, 5, torch.float64)
    a = solve_i_update(X, Z, delta, kernel, lam1, lam5, boundary='circular')
    b = solve_i_update(X, Z, delta, kernel, lam1.view(3, 1, 1, 1), lam5.view(3, 1, 1, 1), boundary='circular')
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize('boundary', ['circular', 'reflect', 'replicate'])
def test_several_kernels_mix_per_kernel_solutions(boundary):
    rng = np.random.default_rng(1)
    X, Z, delta, _, lam1, lam5 = random_problem(rng, 2, 3, 16, 14, 5, torch.float64)
    kernel = torch.from_numpy(rng.uniform(size=(2, 3, 5, 5)))
    kernel = kernel / kernel.sum((-2, -1), keepdim=True)
    weight_map = torch.from_numpy(rng.uniform(size=(2, 3, 16, 14))).softmax(1)
    mixed = solve_i_update(X, Z, delta, kernel, lam1, lam5, weight_map=weight_map, boundary=boundary)
    expected = sum(weight_map[:, b:b + 1] *
                   solve_i_update(X, Z, delta, kernel[:, b:b + 1], lam1, lam5, boundary=boundary) for b in range(3))
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-12)


def test_several_kernels_need_a_weight_map():
    X, Z, delta, _, lam1, lam5 = random_problem(np.random.default_rng(2), 1, 3, 8, 8, 3, torch.float64)
    with pytest.raises(ValueError, match='weight_map'):
        solve_i_update(X, Z, delta, torch.ones(1, 2, 3, 3) / 9, lam1, lam5)
    with pytest.raises(ValueError, match='boundary'):
        solve_i_update(X, Z, delta, torch.ones(1, 1, 3, 3) / 9, lam1, lam5, boundary='zeros')


def test_boundaries_are_checked_the_same_way_everywhere():
    """One check names the valid modes: the blur model's three, the data step's four, and one kernel for 'released'."""
    X, Z, delta, _, lam1, lam5 = random_problem(np.random.default_rng(2), 1, 3, 8, 8, 3, torch.float64)
    blur_modes = r"\('reflect', 'replicate', 'circular'\)"
    with pytest.raises(ValueError, match=rf"^boundary must be one of {blur_modes}, got 'released'$"):
        blur(X, torch.ones(3, 3) / 9, 'released')
    with pytest.raises(ValueError, match=r"^boundary must be one of .*'released'\), got 'zeros'$"):
        FFTDataStep(X, torch.ones(1, 1, 3, 3) / 9, boundary='zeros')
    with pytest.raises(ValueError, match="^boundary 'released' takes one kernel .*, got 2$"):
        FFTDataStep(X, torch.ones(1, 2, 3, 3) / 9, torch.full((1, 2, 8, 8), 0.5), boundary='released')


@pytest.mark.parametrize('k', [4, 7])
def test_spatial_blur_is_the_model_the_fft_inverts(k):
    rng = np.random.default_rng(k)
    img = torch.from_numpy(rng.uniform(size=(2, 3, 13, 11)))
    kernel = torch.from_numpy(rng.uniform(size=(2, 1, k, k)))
    expected = np.stack([circular_conv(img[n].numpy(), kernel[n, 0].numpy()) for n in range(2)])
    np.testing.assert_allclose(blur(img, kernel, 'circular').numpy(), expected, atol=1e-12)


def psnr(a, b, border=None):
    if border is not None:
        mask = torch.ones(a.shape[-2:], dtype=torch.bool)
        mask[border:-border, border:-border] = False
        a, b = a[..., mask], b[..., mask]
    return (10 * torch.log10(1 / ((a - b)**2).mean())).item()


def deblur(observed, kernel, boundary):
    lam1, lam5 = torch.ones(1, dtype=observed.dtype), torch.full((1, ), 0.002, dtype=observed.dtype)
    return solve_i_update(observed, observed, torch.zeros_like(observed), kernel, lam1, lam5, boundary=boundary)


@pytest.fixture(scope='module')
def real_border_pairs():
    """One observation per bundled photo, cut from the larger blurred photo: real content beyond the frame."""
    return list(observation_pairs(pairs=5, size=128, kernel_size=15, seed=1))


def test_default_boundary_deblurs_a_photo_including_its_border(real_border_pairs):
    """A noiseless photo must gain ≥ 5 dB, and ≥ 3 dB on the border band, from one data step."""
    for sharp, blurred, kernel in real_border_pairs:
        restored = solve_i_update(blurred, blurred, torch.zeros_like(blurred), kernel, torch.ones(1, dtype=blurred.dtype),
                                  torch.full((1, ), 0.002, dtype=blurred.dtype))  # the default boundary
        torch.testing.assert_close(restored, deblur(blurred, kernel, 'replicate'), rtol=0, atol=0)
        assert psnr(restored, sharp) >= psnr(blurred, sharp) + 5
        assert psnr(restored, sharp, border=16) >= psnr(blurred, sharp, border=16) + 3


def test_replicate_beats_reflect_where_the_scene_goes_on_beyond_the_frame(real_border_pairs):
    """Why 'replicate' is the default (docs/boundary.md): better on every pair, most of all at the border."""
    for sharp, blurred, kernel in real_border_pairs:
        reflect, replicate = (deblur(blurred, kernel, boundary) for boundary in ('reflect', 'replicate'))
        assert psnr(reflect, sharp) >= psnr(blurred, sharp) + 3  # reflect deblurs too, less well
        assert psnr(replicate, sharp) > psnr(reflect, sharp)
        assert psnr(replicate, sharp, border=16) > psnr(reflect, sharp, border=16)


def test_circular_boundary_rings_at_the_border(real_border_pairs):
    """Why the padded modes exist: the periodic solve is worse than doing nothing near the border."""
    sharp, blurred, kernel = real_border_pairs[0]
    restored = deblur(blurred, kernel, 'circular')
    assert psnr(restored, sharp, border=16) < psnr(blurred, sharp, border=16)


def test_boundary_study_reports_every_mode():
    gains = compare_boundaries(pairs=2, size=64, kernel_size=7, border=8)
    assert set(gains) == {'reflect', 'replicate', 'circular'} and gains['replicate']['whole'].shape == (2, )
    table = format_table(gains, border=8)
    assert table.count('\n') == 4 and '| replicate |' in table and '8-px border band' in table


def test_fft_step_stays_float32_under_autocast(photo, shake_kernel):
    X = blur(photo, shake_kernel, 'reflect').float()
    kernel = shake_kernel.float()
    args = (X, torch.zeros_like(X), kernel, torch.ones(1), torch.full((1, ), 0.01))
    reference = solve_i_update(X, *args)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        step = FFTDataStep(X, kernel)
        result = step.solve(X, *args[1:2], *args[3:])
    assert result.dtype == torch.float32 and step.otf.dtype == torch.complex64
    torch.testing.assert_close(result, reference)


def test_solve_is_differentiable(shake_kernel):
    X = torch.rand(1, 3, 20, 24, dtype=torch.float64)
    kernel = shake_kernel.clone().requires_grad_()
    lam = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    Z = torch.rand_like(X, requires_grad=True)
    out = solve_i_update(X, Z, torch.zeros_like(X), kernel, lam, lam * 0.1)
    out.square().sum().backward()
    for t in (kernel, lam, Z):
        assert t.grad is not None and t.grad.abs().sum() > 0
