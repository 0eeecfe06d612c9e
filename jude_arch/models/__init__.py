"""JUDE's training model, registered in BasicSR's MODEL_REGISTRY."""
from .jude_model import JUDEModel
from .tiling import tiled_forward

__all__ = ['JUDEModel', 'tiled_forward']
