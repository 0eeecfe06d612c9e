"""The physics measures and losses: re-blur in linear light, translation-tolerant kernel error, entropy."""
import numpy as np
import pytest
import torch

from jude_arch.archs import blur
from jude_arch.data.blur_kernels import camera_shake_kernel
from jude_arch.losses import KernelLoss, ReblurLoss
from jude_arch.physics import (fft_blur, gaussian_kernel, kernel_entropy, kernel_error, kernel_similarity,
                               linear_to_srgb, reblur, reblur_psnr, srgb_to_linear)


@pytest.fixture
def scene(photo, shake_kernel):
    """A dark sharp photo (sRGB) and its blur with a camera-shake kernel in linear light, as the synthesis does."""
    sharp = linear_to_srgb(0.1 * srgb_to_linear(photo[..., :96, :96]))
    blurred = linear_to_srgb(blur(srgb_to_linear(sharp), shake_kernel))
    return sharp, blurred, shake_kernel


def test_srgb_round_trip():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x)


@pytest.mark.parametrize('size', [31, 8])
@pytest.mark.parametrize('boundary', ['reflect', 'replicate', 'circular'])
def test_fft_blur_is_blur(photo, size, boundary):
    kernel = torch.rand(1, 1, size, size, dtype=torch.float64)
    kernel /= kernel.sum()
    torch.testing.assert_close(fft_blur(photo[..., :40, :56], kernel, boundary), blur(photo[..., :40, :56], kernel,
                                                                                     boundary))


def test_reblur_loss_is_zero_for_the_true_kernel_only(scene):
    sharp, blurred, kernel = scene
    loss = ReblurLoss()
    assert loss(kernel, sharp, blurred) < 1e-6
    shifted = kernel.roll((2, -1), dims=(-2, -1))  # right blur, wrong place: the image comes out shifted
    assert loss(shifted, sharp, blurred) > 2e-3
    assert loss(kernel.transpose(-2, -1), sharp, blurred) > 2e-3  # wrong shape
    # Blurring the encoded values instead of the light is a different (wrong) forward model.
    assert ReblurLoss(light='srgb')(kernel, sharp, blurred) > 1e-4


def test_reblur_psnr_ranks_kernels(scene):
    sharp, blurred, kernel = scene
    observed = torch.round(blurred * 255) / 255  # 8-bit, like the data
    true = reblur_psnr(sharp, kernel, observed).item()
    gaussian = reblur_psnr(sharp, gaussian_kernel(15, 2.0)[None, None], observed).item()
    uniform = reblur_psnr(sharp, torch.full((1, 1, 15, 15), 1 / 225.), observed).item()
    assert true == 100  # exact up to the 8-bit rounding, which both sides share
    assert true > gaussian > uniform


def test_reblur_rejects_unknown_light(scene):
    sharp, _, kernel = scene
    with pytest.raises(ValueError, match="light must be one of .*'gamma'"):
        reblur(sharp, kernel, light='gamma')


def test_kernel_error_tolerates_translation_within_max_shift(shake_kernel):
    kernel = shake_kernel[:, 0].float()  # 1×15×15
    # The estimator's 31×31 grid against a 15×15 truth (sizes may differ: both are centred), shifted by (3, −2).
    shifted = torch.nn.functional.pad(kernel, (8, 8, 8, 8)).roll((3, -2), dims=(-2, -1))
    assert kernel_error(shifted, kernel, max_shift=4).item() < 1e-6
    assert kernel_error(shifted, kernel, max_shift=1).item() > 0.3  # beyond the tolerance it counts
    assert kernel_similarity(shifted, kernel, max_shift=4).item() == pytest.approx(1, abs=1e-6)
    assert kernel_similarity(shifted, kernel, max_shift=1).item() < 0.9
    uniform = torch.full((1, 31, 31), 1 / 961)
    assert kernel_error(uniform, kernel).item() > 0.9
    other = torch.from_numpy(camera_shake_kernel(15, np.random.default_rng(11)))[None].float()
    assert kernel_similarity(other, kernel).item() < 0.9


def test_kernel_loss_gradient_moves_towards_the_true_kernel(shake_kernel):
    target = shake_kernel.float()
    logits = torch.zeros(1, 1, 31 * 31, requires_grad=True)
    loss = KernelLoss()
    optimizer = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(30):
        kernel = logits.softmax(-1).view(1, 1, 31, 31)
        value = loss(kernel, target)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.5 * first


def test_kernel_loss_options():
    with pytest.raises(ValueError, match='max_shift must be a non-negative integer'):
        KernelLoss(max_shift=-1)


def test_kernel_entropy():
    assert kernel_entropy(torch.full((2, 31, 31), 1 / 961)).tolist() == pytest.approx([1, 1])
    delta = torch.zeros(31, 31)
    delta[15, 15] = 1
    assert kernel_entropy(delta).item() == pytest.approx(0, abs=1e-6)
    assert 0.2 < kernel_entropy(gaussian_kernel(31, 2.0)).item() < 0.7


def test_reblur_loss_as_psnr_ranks_kernels_per_image_and_leaves_out_the_border(scene):
    sharp, blurred, kernel = scene
    observed = torch.round(blurred * 255) / 255
    gaussian = gaussian_kernel(15, 2.0)[None, None]
    loss = ReblurLoss(metric='psnr', crop_border=7)
    # The negative of the score with the same border left out (the score also rounds to 8 bits, the loss cannot).
    assert loss(gaussian, sharp, observed).item() == pytest.approx(
        -reblur_psnr(sharp, gaussian, observed, crop_border=7).item(), abs=0.2)
    assert loss(kernel, sharp, observed).item() < -55 < loss(gaussian, sharp, observed).item() + 20
    # Per image in decibels: a frame 10× darker counts as much, where L1 would shrink it tenfold.
    dark = torch.cat([sharp, linear_to_srgb(0.1 * srgb_to_linear(sharp))])  # a frame and the same 10× darker
    pair = linear_to_srgb(blur(srgb_to_linear(dark), kernel))
    both = torch.cat([gaussian, gaussian])
    per_image = [loss(gaussian, dark[i:i + 1], pair[i:i + 1]).item() for i in range(2)]
    assert loss(both, dark, pair).item() == pytest.approx(sum(per_image) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="metric must be one of \\('l1', 'psnr'\\)"):
        ReblurLoss(metric='mse')
