"""The blur a dark photo carries in its own statistics: a refinement of JUDE's kernel estimate (optional,
`kernel_statistics: true`; docs/physics.md).

Natural images have nearly white gradients, so the correlation of a blurred image's gradients at a lag s is, up
to the scene's own residual correlation, the blur kernel's autocorrelation at s: it holds the kernel's extent,
direction and elongation, measured over the whole frame. Camera shake blurs linear light, so the gradients are
taken there (sRGB decoded), brightness-normalised. Sensor noise is independent from pixel to pixel and from
channel to channel: the correlations between *different* colour channels carry none of it, at any lag, however
dark the frame; the same-channel correlations, which only have it at lag 0 and ±1 along the difference, are kept
too with those lags masked.

`StatisticsRefiner` maps these maps (one per lag of the k×k kernel grid) and the estimator's own kernel to a
correction of the kernel's logits with a small convolutional network on the kernel grid: its cost does not grow
with the image. `centre_kernels` then moves the kernels' centroid to the grid centre (a blur cannot say where the
sharp image lies, so a centred kernel is the best guess; an off-centre one shifts the re-blurred image).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .colour import srgb_to_linear

CHANNEL_PAIRS = ((0, 1), (1, 2), (0, 2))


def gradient_correlations(x, radius):
    """Gradient correlations of images in linear light, at every lag within ±radius.

    Args:
        x (Tensor): N×3×H×W sRGB images in [0, 1].
        radius (int): largest lag along each axis.

    Returns:
        Tensor: N×4×(2r+1)×(2r+1) float32: the cross-channel correlations of the horizontal and of the vertical
        gradient, then the same-channel ones (lags 0 and ±1 along the difference masked), each map scaled to an
        RMS of 1 (the blur's shape, not the image's contrast).
    """
    linear = srgb_to_linear(x.float().clamp(0, 1))
    linear = linear / linear.mean((2, 3), keepdim=True).clamp_min(1e-4)
    gradients = (linear[..., :-1, 1:] - linear[..., :-1, :-1], linear[..., 1:, :-1] - linear[..., :-1, :-1])
    size = 2 * radius + 1
    maps = []
    for gradient in gradients:
        gradient = gradient - gradient.mean((2, 3), keepdim=True)
        h, w = gradient.shape[-2:]
        shape = (h + radius + 1, w + radius + 1)  # zero-padded: no lag up to ±radius wraps around
        spectrum = torch.fft.rfft2(gradient, s=shape)
        # The real part of X_i X_j* is the symmetrised correlation (C_ij(s) + C_ji(s)) / 2.
        cross = sum((spectrum[:, i] * spectrum[:, j].conj()).real for i, j in CHANNEL_PAIRS)
        auto = sum(spectrum[:, c].abs().square() for c in range(3))
        for power in (cross, auto):
            correlation = torch.fft.irfft2(power, s=shape)
            maps.append(torch.roll(correlation, (radius, radius), (-2, -1))[..., :size, :size])
    maps = torch.stack([maps[0], maps[2], maps[1], maps[3]], 1)
    # A difference's noise correlates with itself at lag 0 and with its neighbours along the difference.
    mask = torch.ones(4, size, size, dtype=maps.dtype, device=maps.device)
    mask[2, radius, radius - 1:radius + 2] = 0
    mask[3, radius - 1:radius + 2, radius] = 0
    maps = maps * mask
    return maps / maps.square().mean((2, 3), keepdim=True).sqrt().clamp_min(1e-12)


class _Block(nn.Module):
    """Residual block: dilated conv3×3, conv3×3, LeakyReLU before each."""

    def __init__(self, width, dilation):
        super().__init__()
        self.dilated = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv(F.leaky_relu(self.dilated(F.leaky_relu(x, 0.1)), 0.1))


class StatisticsRefiner(nn.Module):
    """A correction of kernel logits from the image's gradient correlations (`gradient_correlations`).

    Args:
        kernel_size (int): side k of the kernels (odd); the correlations are taken at lags within ±k // 2.
        width (int): channels of the network on the kernel grid. Default: 32.
        dilations (tuple[int]): one residual block per entry; their receptive field covers the grid.

    Returns (forward):
        Tensor: N×1×k×k logit corrections, zero at initialisation (the estimator's kernel unchanged).
    """

    def __init__(self, kernel_size, width=32, dilations=(1, 2, 4, 8, 4, 2, 1)):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f'StatisticsRefiner: kernel_size must be odd (lags are centred), got {kernel_size}')
        self.radius = kernel_size // 2
        self.inp = nn.Conv2d(5, width, 3, padding=1)
        self.blocks = nn.Sequential(*(_Block(width, d) for d in dilations))
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, logits):
        """
        Args:
            x (Tensor): N×3×H×W sRGB images the kernels blur.
            logits (Tensor): N×1×k×k the estimator's kernel logits.
        """
        log_kernel = logits.float().flatten(1).log_softmax(1).view_as(logits)
        features = torch.cat([gradient_correlations(x, self.radius),
                              log_kernel - log_kernel.mean((2, 3), keepdim=True)], 1)
        return self.out(F.leaky_relu(self.blocks(self.inp(features)), 0.1))


def centre_kernels(kernels):
    """Shift kernels (bilinear, differentiable) so that each one's centroid lies on the grid centre.

    Args:
        kernels (Tensor): N×B×k×k non-negative kernels summing to 1.

    Returns:
        Tensor: the shifted kernels, renormalised (the little mass shifted past the border is lost).
    """
    n, b, h, w = kernels.shape
    flat = kernels.reshape(n * b, 1, h, w)
    offsets = [torch.arange(size, dtype=flat.dtype, device=flat.device) - size // 2 for size in (h, w)]
    centroid_y = (flat.sum(3)[:, 0] * offsets[0]).sum(1)
    centroid_x = (flat.sum(2)[:, 0] * offsets[1]).sum(1)
    grid_y, grid_x = torch.meshgrid(*(torch.linspace(-1, 1, size, dtype=flat.dtype, device=flat.device)
                                      for size in (h, w)), indexing='ij')
    # grid_sample reads the output pixel p at p + centroid: the centroid moves to the centre.
    grid = torch.stack([grid_x[None] + (centroid_x * 2 / (w - 1))[:, None, None],
                        grid_y[None] + (centroid_y * 2 / (h - 1))[:, None, None]], -1)
    shifted = F.grid_sample(flat, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    shifted = shifted / shifted.sum((2, 3), keepdim=True).clamp_min(1e-12)
    return shifted.view(n, b, h, w)
