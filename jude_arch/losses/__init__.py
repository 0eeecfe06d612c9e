"""JUDE's training losses, registered in BasicSR's LOSS_REGISTRY: the paper's (MAE + FFT), the kernel
estimator's (re-blur, translation-tolerant kernel error), the illumination target (the scene's light, grey) and
prior (grey, smooth light)."""
from .illumination_prior import IlluminationChromaLoss, IlluminationSmoothnessLoss, IlluminationTargetLoss
from .jude_loss import FFTLoss, JUDELoss
from .physics_loss import KernelLoss, ReblurLoss

__all__ = ['FFTLoss', 'IlluminationChromaLoss', 'IlluminationSmoothnessLoss', 'IlluminationTargetLoss', 'JUDELoss',
           'KernelLoss', 'ReblurLoss']
