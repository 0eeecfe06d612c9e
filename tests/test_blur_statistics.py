"""The kernel estimator's optional blur statistics: gradient correlations that show the blur and ignore the
noise, the refiner on the kernel grid, centred kernels; off by default (the paper's estimator and its keys)."""
import numpy as np
import pytest
import torch

from jude_arch.archs import JUDE, JUDEKernelNet
from jude_arch.archs.blur_statistics import StatisticsRefiner, centre_kernels, gradient_correlations
from jude_arch.physics import linear_to_srgb, reblur, srgb_to_linear


def line_kernel(length, size=15):
    """A horizontal motion blur of `length` pixels (1×1×size×size)."""
    kernel = torch.zeros(1, 1, size, size, dtype=torch.float64)
    kernel[..., size // 2, size // 2 - length // 2:size // 2 + length // 2 + 1] = 1
    return kernel / kernel.sum()


def spread(maps):
    """Second moments of |map| along y and x, per map: N×4×2."""
    weights = maps.abs() / maps.abs().sum((2, 3), keepdim=True)
    lags = torch.arange(maps.shape[-1], dtype=maps.dtype) - maps.shape[-1] // 2
    return torch.stack([(weights.sum(3) * lags.square()).sum(2), (weights.sum(2) * lags.square()).sum(2)], -1)


@pytest.fixture(scope='module')
def dark_photo():
    from helpers import load_photo
    return linear_to_srgb(0.1 * srgb_to_linear(load_photo('astronaut', 128))).double()


def test_correlations_show_the_blurs_direction_and_length(dark_photo):
    def cross_spread(kernel):
        """y and x spread of the positive part of the two cross-channel maps' sum."""
        maps = gradient_correlations(reblur(dark_photo, kernel), 7)
        assert maps.shape == (1, 4, 15, 15)
        return spread(maps[:, :2].sum(1, keepdim=True).clamp_min(0))[0, 0]

    # The scene's own edges make the maps anisotropic too: compare blurs of one scene.
    horizontal, vertical = cross_spread(line_kernel(13)), cross_spread(line_kernel(13).transpose(-2, -1))
    assert horizontal[1] > 1.3 * vertical[1] and vertical[0] > 1.3 * horizontal[0]
    assert horizontal[1] > 1.5 * cross_spread(line_kernel(5))[1]


def test_cross_channel_correlations_ignore_sensor_noise(dark_photo):
    blurred = reblur(dark_photo, line_kernel(9))
    noise = torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0), dtype=blurred.dtype)
    noisy = (blurred + 0.02 * noise).clamp(0, 1)  # a dark frame's noise, several 8-bit levels
    clean, seen = gradient_correlations(blurred, 7)[0], gradient_correlations(noisy, 7)[0]

    def similarity(a, b):
        return (a * b).sum() / (a.norm() * b.norm())

    assert similarity(clean[0], seen[0]) > 0.9 and similarity(clean[1], seen[1]) > 0.9
    # The same-channel correlations keep the noise's lags masked: they are exactly zero.
    assert seen[2, 7, 6:9].abs().max() == 0 and seen[3, 6:9, 7].abs().max() == 0


def test_centred_kernels_have_their_centroid_on_the_grid_centre():
    kernel = torch.zeros(2, 1, 15, 15)
    kernel[0, 0, 7, 7:12] = 0.2  # a streak starting at the centre: centroid 2 px right
    kernel[1, 0, 7, 7] = 1  # already centred
    centred = centre_kernels(kernel)
    lags = torch.arange(15.) - 7
    assert (centred.sum(3)[:, 0] * lags).sum(1).abs().max() < 1e-5
    assert (centred.sum(2)[:, 0] * lags).sum(1).abs().max() < 1e-5
    torch.testing.assert_close(centred.sum((2, 3)), torch.ones(2, 1))
    torch.testing.assert_close(centred[1], kernel[1])
    torch.testing.assert_close(centred[0, 0, 7, 5:10], torch.full((5, ), 0.2))


def test_statistics_are_off_by_default_and_keep_the_papers_keys():
    torch.manual_seed(0)
    plain = JUDE(preset='small')
    assert not any('statistics' in key for key in plain.state_dict())
    torch.manual_seed(0)
    refined = JUDE(preset='small', kernel_statistics=True)
    added = set(refined.state_dict()) - set(plain.state_dict())
    assert added and all(key.startswith('kernel_estimator.statistics.') for key in added)
    assert set(plain.state_dict()) <= set(refined.state_dict())
    # Untrained, the refiner changes nothing but the centring.
    refined.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(refined.kernel_estimator(x)[0], centre_kernels(plain.kernel_estimator(x)[0]))


def test_statistics_options_are_checked():
    with pytest.raises(ValueError, match='num_kernels must be 1 with kernel_statistics true'):
        JUDE(preset='small', kernel_statistics=True, num_kernels=2)
    with pytest.raises(ValueError, match='kernel_statistics must be true or false'):
        JUDEKernelNet(preset='small', kernel_statistics='yes')
    with pytest.raises(ValueError, match='kernel_size must be odd'):
        StatisticsRefiner(30)


def test_the_refiner_learns_a_kernel_from_the_statistics(dark_photo):
    """A few steps of the re-blur loss through the refiner alone move the kernel towards the blur."""
    from jude_arch.losses import ReblurLoss
    torch.manual_seed(0)
    net = JUDEKernelNet(preset='small', kernel_size=15, kernel_statistics=True)
    optimizer = torch.optim.Adam(net.kernel_estimator.statistics.parameters(), lr=3e-3)
    sharp = dark_photo.float()
    blurred = reblur(sharp, line_kernel(9).float())
    loss = ReblurLoss()
    first = None
    for _ in range(25):
        value = loss(net(blurred)[0], sharp, blurred)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.7 * first
    kernel = net(blurred)[0][0, 0].detach()
    assert np.isclose(kernel.sum().item(), 1, atol=1e-5)
