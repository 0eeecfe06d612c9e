"""Metrics for BasicSR's METRIC_REGISTRY (`val.metrics.<name>.type` in the options).

BasicSR scans only its own folders for metrics, so importing `jude_arch` imports these modules to register them:
- `calculate_lpips`: LPIPS (VGG or AlexNet), weights read from local files only;
- `calculate_ssim_pooled`: the SSIM of the JUDE paper's evaluation (average pooling first);
- `calculate_pyiqa`: any metric of pyiqa (MUSIQ, NIQE, LIQE, ...), when the optional pyiqa is installed.

They take BasicSR's 8-bit images (`img`, `img2`) or, with `float_input: true`, the float tensors JUDEModel also
passes (`img_float`, `img2_float`: the network's output before clamping and rounding, and the ground truth).
"""
from .lpips_metric import calculate_lpips
from .pooled_ssim import calculate_ssim_pooled
from .pyiqa_metric import calculate_pyiqa

__all__ = ['calculate_lpips', 'calculate_ssim_pooled', 'calculate_pyiqa']
