"""JUDE's training losses, registered in BasicSR's LOSS_REGISTRY: the paper's (MAE + FFT) and the kernel
estimator's (re-blur, translation-tolerant kernel error)."""
from .jude_loss import FFTLoss, JUDELoss
from .physics_loss import KernelLoss, ReblurLoss

__all__ = ['FFTLoss', 'JUDELoss', 'KernelLoss', 'ReblurLoss']
