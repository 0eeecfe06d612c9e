"""Make BasicSR's own entry points see JUDE: import `jude_arch` right after `basicsr` is imported.

`pip install` (regular or editable) also puts `jude_basicsr_hook.pth` in site-packages (see setup.py). Its one
line, run at interpreter start-up, loads this file by path (as the module `_jude_basicsr_hook`, without
importing the `jude_arch` package, which would import torch) and calls `install()`. That only puts a finder
on `sys.meta_path`, so programs that never import basicsr pay one string comparison per new top-level
import. When `basicsr` is imported, the finder steps aside, finds basicsr's real module spec and wraps its
loader:

1. before basicsr's code runs: the torchvision shim (`apply_import_shims`, the one shim of docs/basicsr_plugin.md that
   must precede `import basicsr`);
2. basicsr's own import, unchanged;
3. after it: `import jude_arch`, which registers JUDE's archs, models, losses and datasets and applies the
   run-time shims, so `python -m basicsr.train -opt <a JUDE config>` finds `type: JUDE`.

This module imports nothing but `os` and `sys`. Off switch: the environment variable JUDE_BASICSR_HOOK=0
(read when basicsr is imported).
"""
import os
import sys

ENV_SWITCH = 'JUDE_BASICSR_HOOK'
HOST = 'basicsr'


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


def enabled():
    """False when the user switched the hook off with JUDE_BASICSR_HOOK=0 (or false/no/off)."""
    return os.environ.get(ENV_SWITCH, '1').strip().lower() not in ('0', 'false', 'no', 'off')


class _HookedLoader:
    """Runs basicsr's real loader between the torchvision shim and `import jude_arch`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        apply_import_shims()
        self._loader.exec_module(module)
        if 'jude_arch' in sys.modules:  # jude_arch imported basicsr itself: it finishes on its own
            return
        try:
            __import__('jude_arch')
        except Exception as error:  # basicsr works without JUDE; say why JUDE is missing and how to silence it
            import warnings

            warnings.warn(f'JUDE could not register with BasicSR ({type(error).__name__}: {error}); '
                          f'set {ENV_SWITCH}=0 to skip this hook', RuntimeWarning, stacklevel=2)

    def __getattr__(self, name):  # resources, get_code, is_package, ... stay basicsr's loader's own
        return getattr(self._loader, name)


class BasicSRHook:
    """Meta-path finder that intercepts the first `import basicsr` and then removes itself."""

    # Finders are recognised by this mark, not by identity: this file can be loaded more than once (site
    # runs a venv's .pth files twice when lib64 links to lib; `jude_arch.basicsr_glue.import_hook` is another copy).
    is_jude_basicsr_hook = True

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != HOST or not enabled():
            return None
        uninstall()
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _HookedLoader(spec.loader)
                return spec
        return None


def _is_hook(finder):
    return getattr(finder, 'is_jude_basicsr_hook', False) is True


def installed():
    """True while a JUDE hook (from any copy of this file) is on sys.meta_path."""
    return any(_is_hook(finder) for finder in sys.meta_path)


def install():
    """Put the hook first on sys.meta_path (once) unless basicsr is already imported."""
    if HOST not in sys.modules and not installed():
        sys.meta_path.insert(0, BasicSRHook)


def uninstall():
    """Remove every JUDE hook from sys.meta_path."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not _is_hook(finder)]
