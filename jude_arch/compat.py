"""Shims that let BasicSR 1.4.2 run on today's torch and on machines without CUDA (BASICSR_NOTES).

`apply_import_shims` must run before anything imports basicsr; `jude_arch/__init__.py` calls it first.
"""
import sys


def apply_import_shims():
    """Make `import basicsr` work with torchvision ≥ 0.17.

    basicsr/data/degradations.py imports `torchvision.transforms.functional_tensor`, a module torchvision
    removed; its function lives on in `torchvision.transforms.functional` under the same name.
    """
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        __import__(name)
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules[name] = functional
