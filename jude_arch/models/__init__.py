"""JUDE's training model, registered in BasicSR's MODEL_REGISTRY."""
from .jude_model import JUDEModel

__all__ = ['JUDEModel']
