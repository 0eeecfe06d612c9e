"""JUDE for BasicSR: importing this package registers JUDE's classes in BasicSR's registries.

The compatibility shims run first, before basicsr is imported anywhere; the run-time shims (CPU distributed
training, CPU resume) are applied once basicsr is loaded.
"""
from .basicsr_glue import apply_import_shims, apply_runtime_shims

apply_import_shims()

from . import archs, data, losses, metrics, models  # noqa: E402,F401  (importing registers the classes)

apply_runtime_shims()

__version__ = '0.1.0'
