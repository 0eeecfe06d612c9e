"""JUDE's training models, registered in BasicSR's MODEL_REGISTRY: JUDE itself, and its kernel estimator alone."""
from .jude_model import JUDEModel
from .kernel_estimator_model import KernelEstimatorModel

__all__ = ['JUDEModel', 'KernelEstimatorModel']
