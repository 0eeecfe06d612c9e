"""Precision: 'fp32', 'bf16', 'fp16', or 'auto' (the fastest the device runs natively).

One place decides precision for the restorer, the `jude-restore` CLI, training and the benchmark:

- 'auto' → bf16 where the device computes bf16 natively: a CUDA GPU with bf16 (Ampere and newer), a CPU with
  AMX or AVX512-BF16 (detected at run time, `cpu_bf16_feature`); fp16 on a CUDA GPU without bf16; fp32
  otherwise.
- bf16 on a CPU without native bf16 still runs, but PyTorch then emulates it and it is much slower than
  fp32; fp16 on a CPU has few fast kernels anywhere. Both warn once per process with the measured reason.
- bf16 on a CUDA GPU without bf16 is an error: use fp16 or fp32.

Under 'bf16' and 'fp16' the network runs under `torch.autocast`; JUDE keeps its FFT data step and unrolled
variables in float32 whatever the precision.
"""
import logging
from contextlib import nullcontext

import torch

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
CHOICES = ('auto', *PRECISIONS)

# What a CPU without native bf16 pays, measured on an AMD EPYC (Zen 3, AVX2 only), torch 2.14.1.
SLOW_CPU_BF16 = ('PyTorch emulates bf16 on a CPU without AMX or AVX512-BF16: measured on an AMD EPYC (Zen 3), '
                 'a 3×3 convolution 64→64 at 256² ran at 11 GFLOP/s in bf16 against 143 in fp32, and JUDE about '
                 '12× slower than in fp32')
SLOW_CPU_FP16 = ('few PyTorch CPU kernels are fast in fp16: on a Xeon with AMX the small preset ran a 512×512 '
                 'forward in 1.41 s in fp16, 1.17 s in fp32 and 0.45 s in bf16')
CPUINFO = '/proc/cpuinfo'
_CPUINFO_FLAGS = (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX512-BF16'))
_warned = set()

logger = logging.getLogger(__name__)


def cpu_bf16_feature():
    """The CPU feature that runs bf16 natively: 'AMX', 'AVX512-BF16', or None.

    Asks torch (`torch.cpu._is_amx_tile_supported` / `_is_avx512_bf16_supported`, private helpers of recent
    releases) and falls back to the flags of /proc/cpuinfo where torch has no such helper.
    """
    amx = getattr(torch.cpu, '_is_amx_tile_supported', None)
    avx512_bf16 = getattr(torch.cpu, '_is_avx512_bf16_supported', None)
    if amx is not None and avx512_bf16 is not None:
        return 'AMX' if amx() else 'AVX512-BF16' if avx512_bf16() else None
    try:
        with open(CPUINFO) as f:
            flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
    except OSError:
        return None
    return next((feature for flag, feature in _CPUINFO_FLAGS if flag in flags), None)


def auto_precision(device):
    """What 'auto' picks on a device, and why.

    Args:
        device (torch.device | str): the device the network runs on.

    Returns:
        tuple[str, str]: the precision and the reason, e.g. ('bf16', 'CPU with AMX').
    """
    device = torch.device(device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        return ('bf16', f'{name} runs bf16') if torch.cuda.is_bf16_supported() else \
            ('fp16', f'{name} has no bf16')
    if device.type == 'cpu':
        feature = cpu_bf16_feature()
        return ('bf16', f'CPU with {feature}') if feature else ('fp32', 'CPU without native bf16 (no AMX, '
                                                                'no AVX512-BF16)')
    return 'fp32', f'{device.type} device'


def resolve(precision, device, where='precision'):
    """The precision to run at: 'auto' resolved for the device, an explicit choice checked against it.

    Args:
        precision (str): 'auto', 'fp32', 'bf16' or 'fp16'.
        device (torch.device | str): the device the network runs on.
        where (str): the setting's name for messages ('--precision', 'train.precision').

    Returns:
        str: 'fp32', 'bf16' or 'fp16'.

    Raises:
        ValueError: an unknown precision, or bf16 on a GPU without it.
    """
    if precision not in CHOICES:
        raise ValueError(f'{where}: precision must be one of {", ".join(CHOICES)}, got {precision!r}')
    device = torch.device(device)
    if precision == 'auto':
        return auto_precision(device)[0]
    if device.type == 'cuda' and precision == 'bf16' and not torch.cuda.is_bf16_supported():
        raise ValueError(f'{where}: this GPU has no bf16 support; use fp16, fp32 or auto')
    if device.type == 'cpu' and precision == 'bf16' and cpu_bf16_feature() is None:
        warn_once('bf16', f'{where} bf16 on a CPU without native bf16 (no AMX, no AVX512-BF16): {SLOW_CPU_BF16}. '
                  'Use fp32 (or auto) on this CPU.')
    elif device.type == 'cpu' and precision == 'fp16':
        warn_once('fp16', f'{where} fp16 on a CPU: {SLOW_CPU_FP16}. Use auto on CPUs.')
    return precision


def warn_once(key, message):
    """Log a warning once per process for each key (logging: the CLI shows it as one line, and without any
    logging set up Python still prints warnings to stderr)."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def autocast(device, precision):
    """torch.autocast for a resolved precision on a device; a no-op context for fp32."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)
