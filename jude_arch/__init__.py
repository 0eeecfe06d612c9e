"""JUDE for BasicSR: importing this package registers JUDE's classes in BasicSR's registries.

The compatibility shims run first, before basicsr is imported anywhere.
"""
from .compat import apply_import_shims

apply_import_shims()

from . import archs, data, losses, models  # noqa: E402,F401  (importing registers the classes)

__version__ = '0.1.0'
