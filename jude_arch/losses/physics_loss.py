"""Losses that teach JUDE's kernel estimator the physics of the blur, registered in LOSS_REGISTRY.

- `ReblurLoss`: L1 (or the negative PSNR) between the sharp image blurred with the estimated kernel and the
  observed blurred image, blurred in the light space the data was (`jude_arch.physics.reblur`). It needs only
  blurred/sharp pairs.
- `KernelLoss`: `jude_arch.physics.kernel_error` against the true kernel, tolerant to a translation (a
  shifted kernel with a shifted sharp image explains the blurred image equally well, so penalising the
  shift would teach the estimator a convention, not the blur). It needs the true kernels (synthetic data).
"""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from ..physics import kernel_error, reblur

METRICS = ('l1', 'psnr')


@LOSS_REGISTRY.register()
class ReblurLoss(nn.Module):
    """‖reblur(sharp, k̂) − blurred‖₁, compared sRGB encoded (where the data lives), or its negative PSNR.

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        light (str): the space the data was blurred in: 'linear' (synthetic data, real camera shake) or
            'srgb'. Default: 'linear'.
        boundary (str): `jude_arch.archs.blur`'s boundary handling. Default: 'reflect'.
        metric (str): 'l1': the mean absolute difference over the batch's pixels; 'psnr': the mean over images of
            10·log10(MSE + 1e-7), the negative of the re-blur PSNR that scores an estimate (each image counts
            in decibels: a dark frame's small errors as much as a bright frame's large ones). Default: 'l1'.
        crop_border (int): pixels left out at every side, where the observation depends on scene content outside
            the frame (the kernel radius leaves them all out). Default: 0.
    """

    def __init__(self, loss_weight=1.0, light='linear', boundary='reflect', metric='l1', crop_border=0):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f'ReblurLoss: metric must be one of {METRICS}, got {metric!r}')
        if not isinstance(crop_border, int) or crop_border < 0:
            raise ValueError(f'ReblurLoss: crop_border must be a non-negative integer, got {crop_border!r}')
        self.loss_weight = loss_weight
        self.light = light
        self.boundary = boundary
        self.metric = metric
        self.crop_border = crop_border

    def forward(self, kernel, sharp, blurred):
        """
        Args:
            kernel (Tensor): N×1×k×k estimated kernels.
            sharp (Tensor): N×C×H×W sharp images (sRGB, [0, 1]).
            blurred (Tensor): N×C×H×W observed blurred images (sRGB, [0, 1]).
        """
        difference = reblur(sharp.float(), kernel.float(), self.light, self.boundary) - blurred.float()
        if self.crop_border:
            c = self.crop_border
            difference = difference[..., c:-c, c:-c]
        if self.metric == 'psnr':
            return self.loss_weight * (10 * torch.log10(difference.square().flatten(1).mean(1) + 1e-7)).mean()
        return self.loss_weight * difference.abs().mean()


@LOSS_REGISTRY.register()
class KernelLoss(nn.Module):
    """Relative squared kernel error at the best integer shift within ±max_shift (`physics.kernel_error`).

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        max_shift (int): largest tolerated translation in pixels along each axis. Default: 4.
    """

    def __init__(self, loss_weight=1.0, max_shift=4):
        super().__init__()
        if not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f'KernelLoss: max_shift must be a non-negative integer, got {max_shift!r}')
        self.loss_weight = loss_weight
        self.max_shift = max_shift

    def forward(self, kernel, target):
        """
        Args:
            kernel (Tensor): N×1×k×k estimated kernels.
            target (Tensor): N×1×k'×k' (or N×k'×k') true kernels, k' ≤ k.
        """
        return self.loss_weight * kernel_error(kernel, target, self.max_shift).mean()
