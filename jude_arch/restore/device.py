"""Where and at what precision the restorer runs the network.

Precision itself is decided by `jude_arch.precision`, shared with training and the benchmark: 'bf16' and 'fp16'
run the network under autocast on its device (the architecture keeps its FFT data step and the unrolled
variables in float32); 'auto' takes what the device runs natively.
"""
import logging

import torch

from ..precision import auto_precision
from ..precision import autocast
from ..precision import resolve as resolve_precision
from .errors import RestoreError

logger = logging.getLogger(__name__)


def select_device(device):
    """torch.device for 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'; RestoreError otherwise."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except RuntimeError:
        raise RestoreError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RestoreError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def select_precision(precision, device):
    """The precision to run at on `device` ('auto' resolved), logged with the reason for an automatic choice."""
    try:
        resolved = resolve_precision(precision, device, 'precision')
    except ValueError as error:
        raise RestoreError(str(error)) from None
    logger.info(f'{device}, precision {resolved}' + (f' (auto: {auto_precision(device)[1]})' if precision == 'auto'
                                                     else ''))
    return resolved


def run_network(net, x, device, precision, return_intermediates=False):
    """One forward pass for inference: `torch.inference_mode` and the precision's autocast on `device`."""
    with torch.inference_mode(), autocast(device, precision):
        if return_intermediates:
            return net(x, return_intermediates=True)
        return net(x)
