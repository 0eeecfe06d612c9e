"""JUDE's training loss (MAE + FFT), registered in BasicSR's LOSS_REGISTRY."""
from .jude_loss import FFTLoss, JUDELoss

__all__ = ['FFTLoss', 'JUDELoss']
