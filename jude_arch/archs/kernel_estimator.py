"""Blur-kernel estimator of JUDE: a shared encoder with a kernel head and a weight-map head (docs/algorithm.md).

The layout follows the "two heads" kernel-prediction network of Carbajal et al. (2021) at a quarter
of its width, as in the released JUDE model: the kernel head decodes the globally pooled deepest
feature into k×k kernels, independent of the image size; the weight-map head is a U-Net decoder that
says, per pixel, how much each basis kernel contributes.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blur_statistics import StatisticsRefiner, centre_kernels


def _conv(in_ch, out_ch, kernel_size=3, padding=1):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding), nn.LeakyReLU(0.01, inplace=True))


class _Down(nn.Module):
    """Two conv3×3 + LeakyReLU; returns the features and their 2×2 max-pool."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.body = nn.Sequential(_conv(in_ch, out_ch), _conv(out_ch, out_ch))

    def forward(self, x):
        feat = self.body(x)
        return feat, F.max_pool2d(feat, 2)


class _Up(nn.Module):
    """2× transposed-conv upsampling, two convs, then a conv over [skip, features] (no skip: features only)."""

    def __init__(self, in_ch, skip_ch, out_ch):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch, 2, stride=2)
        self.body = nn.Sequential(_conv(in_ch, out_ch), _conv(out_ch, out_ch))
        self.fuse = _conv(skip_ch + out_ch, out_ch)

    def forward(self, x, skip=None):
        x = self.body(self.up(x))
        return self.fuse(x if skip is None else torch.cat([skip, x], 1))


class KernelEstimator(nn.Module):
    """Predict B basis blur kernels (each non-negative, summing to 1) and, when B > 1, a weight map.

    Args:
        kernel_size (int): side k of the predicted kernels. Default: 31.
        num_kernels (int): number of basis kernels B. Default: 1 (uniform blur).
        width (int): base width w; the encoder widths are w, w, 2w, 4w, 8w, 16w. Default: 16.
        pad_input (bool): replicate-pad the input to a multiple of 32, so every pixel reaches the pooled
            statistics the kernel head sees (True), or feed it as it is and let the max-pools drop odd
            rows and columns, as the authors' released network does (False; inputs smaller than 32 px,
            which it cannot take, are still padded up to 32). Default: True.
        statistics (bool): refine the kernel with the image's gradient correlations and centre it
            (`blur_statistics`; one kernel only). Default: False (the paper's estimator).

    Returns (forward):
        tuple: kernels N×B×k×k (float32) and the weight map N×B×H×W (softmax over B) or None when B = 1.
    """

    def __init__(self, kernel_size=31, num_kernels=1, width=16, pad_input=True, statistics=False):
        super().__init__()
        if num_kernels > 1 and not pad_input:
            raise ValueError('KernelEstimator: the weight-map head of several kernels needs pad_input=True')
        if statistics and num_kernels != 1:
            raise ValueError('KernelEstimator: the blur statistics refine one kernel per image (num_kernels 1)')
        self.kernel_size = kernel_size
        self.num_kernels = num_kernels
        self.pad_input = pad_input
        w = [width, width, 2 * width, 4 * width, 8 * width, 16 * width]
        self.head = _conv(3, w[0])
        self.down = nn.ModuleList(_Down(w[i], w[i + 1]) for i in range(5))
        self.bottleneck = _conv(w[5], w[5])

        # Kernel head: 1 → 2 → 4 → 8 → 16 → 32 px, each step fed the pooled encoder skip of its level.
        self.kernel_up = nn.ModuleList([
            _Up(w[5], w[5], w[4]), _Up(w[4], w[4], w[3]), _Up(w[3], w[3], w[3]), _Up(w[3], w[2], w[2]),
            _Up(w[2], w[1], w[1])
        ])
        # Kernels larger than 33 need more doublings (without skips) before the final conv stack.
        extra = max(0, math.ceil(math.log2((kernel_size - 1) / 32))) if kernel_size > 33 else 0
        self.kernel_up.extend(_Up(w[1], 0, w[1]) for _ in range(extra))
        grid = 32 * 2**extra
        # First tail conv maps the grid to k×k: kernel 2 with padding 1 for k = grid + 1 (the released
        # 33×33), otherwise a valid conv of size grid + 1 − k.
        first = (2, 1) if kernel_size == grid + 1 else (grid + 1 - kernel_size, 0)
        self.kernel_tail = nn.Sequential(
            _conv(w[1], w[1], *first), _conv(w[1], w[1]), nn.Conv2d(w[1], num_kernels, 3, padding=1))

        # Weight-map head: only meaningful with several kernels (with B = 1 it is identically 1).
        # Only with statistics: the default estimator keeps the paper's (and the released weights') keys.
        if statistics:
            self.statistics = StatisticsRefiner(kernel_size)
        if num_kernels > 1:
            self.mask_up = nn.ModuleList([
                _Up(w[5], w[5], w[4]), _Up(w[4], w[4], w[3]), _Up(w[3], w[3], w[2]), _Up(w[2], w[2], w[1]),
                _Up(w[1], w[1], w[1])
            ])
            self.mask_tail = nn.Sequential(
                _conv(w[1], w[1]), _conv(w[1], w[1]), nn.Conv2d(w[1], num_kernels, 3, padding=1))

    def forward(self, x):
        image = x
        h, w = x.shape[-2:]
        if self.pad_input:
            x = F.pad(x, (0, -w % 32, 0, -h % 32), mode='replicate')
        elif h < 32 or w < 32:
            x = F.pad(x, (0, max(0, 32 - w), 0, max(0, 32 - h)), mode='replicate')
        skips, y = [], self.head(x)
        for down in self.down:
            feat, y = down(y)
            skips.append(feat)
        y = self.bottleneck(y)

        k = y.mean((2, 3), keepdim=True)
        for i, up in enumerate(self.kernel_up):
            if i < len(skips):
                skip = skips[-1 - i]
                size = 2 * k.shape[-1]
                k = up(k, skip.mean((2, 3), keepdim=True).expand(-1, -1, size, size))
            else:
                k = up(k)
        k = self.kernel_tail(k).float()
        if hasattr(self, 'statistics'):
            k = k + self.statistics(image, k)
        n, b = k.shape[:2]
        kernels = k.flatten(2).softmax(-1).view(n, b, self.kernel_size, self.kernel_size)
        if hasattr(self, 'statistics'):
            kernels = centre_kernels(kernels)

        weight_map = None
        if self.num_kernels > 1:
            m = y
            for up, skip in zip(self.mask_up, reversed(skips)):
                m = up(m, skip)
            weight_map = self.mask_tail(m).float().softmax(1)[..., :h, :w].contiguous()
        return kernels, weight_map
