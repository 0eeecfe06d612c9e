"""Restoring photos with a trained JUDE: the inference stack, apart from training.

Walk it from the top: `cli.py` is `jude-restore` (`python -m jude_arch.restore`), `app.py` the web app
(`jude-app`, its restoring service in `app_service.py`); both read and write photos with `photo_io.py` and
restore them with `JUDERestorer` (`restorer.py`), whose concerns each have a module: `network_loading.py`,
`device.py`, `image_conversion.py`, `tiling.py`, `tile_planning.py` (with the probes of `memory.py`) and
`intermediates.py`; `intermediates_panel.py` draws what JUDE did.

The names below are imported on first use, so that training, which shares `tiling.py`, does not load the rest.
"""
import importlib

_EXPORTS = {'Intermediates': 'intermediates', 'JUDERestorer': 'restorer', 'RestoreError': 'errors',
            'load_network': 'network_loading', 'read_network_options': 'network_loading'}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
