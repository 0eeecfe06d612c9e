"""Memory probes: free memory of a device, peak tensor memory of a call, the process's resident memory.

The restorer sizes its tiles by the first two (`tile_planning.py`); `jude-restore` and the benchmark report the
process's memory with the others.

`PeakTensorMemory` counts the bytes of every tensor storage created while it is active and keeps the
largest total alive at once: the activation memory of a forward pass, on any device and under any
autocast precision, with no allocator support needed (CPU has none). It does not see library
workspaces (oneDNN, cuDNN) or allocator slack; callers leave room for those.
"""
import ctypes
import ctypes.util
import os
import sys

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorMemory(TorchDispatchMode):
    """Context manager: `peak` is the most tensor bytes created inside it that were alive at one time.

    Tensors that existed before entering (weights, inputs) are not counted.

    Args:
        device (str | torch.device | None): count only tensors on this device (None: all devices).
    """

    def __init__(self, device=None):
        super().__init__()
        self.device = None if device is None else torch.device(device)
        self.peak = 0
        self._live = {}  # storage address → (weak reference, bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._live = {ptr: ref for ptr, ref in self._live.items() if not ref[0].expired()}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and self._counts(tensor.device):
                storage = tensor.untyped_storage()
                if storage.nbytes() and storage.data_ptr() not in self._live:
                    self._live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, sum(nbytes for _, nbytes in self._live.values()))
        return out

    def _counts(self, device):
        if self.device is None:
            return True
        return device.type == self.device.type and (self.device.index is None or device.index == self.device.index)


def _cgroup_headroom():
    """Bytes the process's cgroup (containers) still allows, or None when it sets no limit."""
    for limit_file, usage_file in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                                   ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
                                    '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            with open(limit_file) as f_limit, open(usage_file) as f_usage:
                limit, usage = f_limit.read().strip(), f_usage.read().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:  # 'max' or a huge number: no limit
            return int(limit) - int(usage)
    return None


def meminfo(key):
    """A /proc/meminfo field in bytes, 0 where there is no /proc (macOS, Windows) or no such field."""
    try:
        with open('/proc/meminfo') as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ':'))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


def _available_ram():
    available = meminfo('MemAvailable')
    if not available:
        try:
            available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            return None
    headroom = _cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def available_memory(device):
    """Bytes that new tensors on `device` can use now, or None when the system does not say.

    CUDA: free device memory plus what PyTorch's caching allocator holds unused. CPU: the kernel's
    MemAvailable, capped by the cgroup limit when there is one.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == 'cpu':
        return _available_ram()
    return None


def rss_bytes():
    """Current resident set size of this process (Linux); None where it cannot be read."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        return None


def peak_rss_bytes():
    """Peak resident set size of this process so far, in bytes (None where the OS does not report it)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # macOS reports bytes, Linux KiB


def hold_freed_memory():
    """Let glibc's malloc keep freed large blocks for reuse instead of handing them back to the kernel.

    PyTorch's CPU allocator caches nothing and glibc returns every block over its mmap threshold (at
    most 32 MiB) to the kernel on free, so each large activation of every stage and tile is a fresh
    mapping that the kernel zero-fills page by page: page faults and system time take a large share of a
    forward's CPU time (docs/restoring.md has the measurement); with this, none. The price: the
    process keeps its peak memory until it exits, which suits a batch run (`jude-restore` and the web app call
    it at start-up). Does nothing without glibc.

    Returns:
        bool: whether malloc accepted the settings.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 2**30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
