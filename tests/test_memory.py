"""Memory probes (jude_arch/restore/memory.py): peak tensor memory, free memory, the process's resident memory."""
import subprocess
import sys

import pytest
import torch

from jude_arch.restore.memory import PeakTensorMemory


def test_peak_tensor_memory_counts_the_most_bytes_alive_at_once():
    with PeakTensorMemory() as tracker:
        a = torch.zeros(256, 1024)  # 1 MiB
        b = torch.zeros(512, 1024)  # 2 MiB
        del a
        c = torch.zeros(256, 1024)  # 1 MiB, while b is alive: 3 MiB at most
        del b, c
    assert tracker.peak == 3 * 2**20


def _python(code):
    """Run code in a fresh interpreter (its memory is the process's own) and return what it printed."""
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.slow
def test_hold_freed_memory_lets_malloc_reuse_large_blocks():
    """Without it every freed 64 MiB tensor goes back to the kernel and the next one page-faults anew."""
    code = ('import resource, torch\n'
            'from jude_arch.restore.memory import hold_freed_memory\n'
            'def faults():\n'
            '    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n'
            '    for _ in range(10):\n'
            '        torch.empty(2**24).fill_(1)\n'
            '    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n'
            'default = faults()\n'
            'held = hold_freed_memory()\n'
            'faults()  # the first blocks kept are new memory\n'
            'print(held, default, faults())\n')
    held, default, holding = _python(code).split()
    if held != 'True':
        pytest.skip('malloc tuning needs glibc')
    pages = 2**24 * 4 // 4096  # of one tensor
    assert int(default) > 10 * pages * 0.9  # every tensor faults in each of its pages
    assert int(holding) < pages // 2  # the kept blocks are reused: (almost) no new pages


@pytest.mark.slow
def test_process_memory_probes_see_a_large_allocation():
    """The probes `jude-restore`'s summary and the benchmark report: resident and peak resident bytes."""
    code = ('import torch\n'
            'from jude_arch.restore.memory import meminfo, peak_rss_bytes, rss_bytes\n'
            'before = rss_bytes()\n'
            'x = torch.ones(2**25)  # 128 MiB, every page touched\n'
            "print(rss_bytes() - before, peak_rss_bytes(), rss_bytes(), meminfo('MemTotal'), meminfo('NoSuchField'))\n")
    grown, peak, now, total, missing = (int(v) for v in _python(code).split())
    assert 120 * 2**20 < grown < 150 * 2**20
    assert peak > 0.98 * now  # the peak holds the allocation (two counters of the kernel: a page or two apart)
    assert total > 2**30 and missing == 0
