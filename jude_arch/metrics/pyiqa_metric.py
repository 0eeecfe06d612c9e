"""Any metric of pyiqa (MUSIQ, NIQE, LIQE, CLIP-IQA, ... or full-reference ones) as a BasicSR metric.

`type: calculate_pyiqa` with `metric: <pyiqa name>` in `val.metrics`. pyiqa is optional (`pip install
'jude-basicsr[iqa]'`): its license allows non-commercial use only, so nothing else in this package imports it,
and it downloads each metric's weights into its own cache the first time that metric is used.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_input import default_device, metric_tensors

INSTALL_MESSAGE = ("calculate_pyiqa needs pyiqa, which is not installed: pip install 'jude-basicsr[iqa]' "
                   "(or pip install pyiqa; its license allows non-commercial use only)")
_MODELS = {}  # created metrics, by (name, options, device)


def _import_pyiqa():
    try:
        import pyiqa
    except ImportError:
        raise ImportError(INSTALL_MESSAGE) from None
    return pyiqa


def build_pyiqa(metric, options=None, device=None):
    """pyiqa's metric `metric`, created once per (name, options, device).

    Args:
        metric (str): a name from `pyiqa.list_models()`, e.g. 'musiq', 'niqe', 'liqe'.
        options (dict | None): keyword arguments of `pyiqa.create_metric`.
        device (torch.device | None): None: CUDA when available, else the CPU.
    """
    pyiqa = _import_pyiqa()
    device = device or default_device()
    key = (metric, repr(sorted((options or {}).items())), str(device))
    if key not in _MODELS:
        names = pyiqa.list_models()
        if metric not in names:
            raise ValueError(f'calculate_pyiqa: pyiqa has no metric {metric!r}; choose one of pyiqa.list_models(), '
                             f'e.g. {", ".join(n for n in ("musiq", "niqe", "liqe", "clipiqa") if n in names)}')
        _MODELS[key] = pyiqa.create_metric(metric, device=device, as_loss=False, **(options or {}))
    return _MODELS[key]


@METRIC_REGISTRY.register()
def calculate_pyiqa(img, img2=None, metric='musiq', options=None, float_input=False, **kwargs):
    """Score the output with pyiqa's `metric` (no-reference), or against the ground truth (full-reference).

    Set `better: lower` next to it for metrics where lower is better (NIQE, BRISQUE, LPIPS, ...), so that
    BasicSR tracks the best value the right way.

    Args:
        img (ndarray): 8-bit output image, H×W×3 BGR (as BasicSR's models pass it).
        img2 (ndarray | None): 8-bit ground truth, for full-reference metrics; None without ground truth.
        metric (str): the pyiqa metric name.
        options (dict | None): keyword arguments of `pyiqa.create_metric`.
        float_input (bool): score the float tensors JUDEModel passes instead of the 8-bit images.
        **kwargs: the other keys BasicSR passes (`better`, the float tensors).

    Returns:
        float: the metric's score.
    """
    model = build_pyiqa(metric, options)
    x, y = metric_tensors('calculate_pyiqa', img, img2, float_input, kwargs, device=default_device())
    if getattr(model, 'metric_mode', 'NR') == 'FR':
        if y is None:
            raise ValueError(f'calculate_pyiqa: {metric} is a full-reference metric but the dataset has no ground '
                             'truth; use a no-reference metric (musiq, niqe, liqe, ...)')
        with torch.no_grad():
            return model(x, y).mean().item()
    with torch.no_grad():
        return model(x).mean().item()


def _prepare(metric='musiq', options=None, **kwargs):
    """Checked by JUDEModel before the first image is restored: pyiqa is installed and knows the metric."""
    build_pyiqa(metric, options)


calculate_pyiqa.prepare = _prepare
