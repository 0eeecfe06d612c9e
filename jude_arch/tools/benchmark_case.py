"""One benchmark case in this process: build the network and the measured step, time it, take its peak memory.

`python -m jude_arch.tools.benchmark` runs each case in a fresh process (`--worker`) through `measure`, so that
the peak memory is the case's own (the command's description says how memory is taken on CUDA and CPU).
`measure` reports its row after each stage (FLOP count, first call, warm-up, timed calls) through `report`, so
that a case stopped by its time limit still shows how far it got and what that took.
"""
import os
import resource
import statistics
import time
from contextlib import nullcontext

from ..restore.memory import peak_rss_bytes, rss_bytes
from .device_peaks import case_math, peak_tflops

# What each variant changes, relative to `default` (the network as configured by its preset).
VARIANTS = {
    'plain': 'unoptimised reference: channels_last=False, every update of every stage computed '
             '(return_intermediates=True), torch.no_grad instead of torch.inference_mode',
    'nchw': 'channels_last=False',
    'default': 'the preset as is: channels_last, dead last-stage updates skipped, inference_mode',
    'bf16': 'default under bf16 autocast (FFT step and unrolled variables stay float32)',
    'fp16': 'default under fp16 autocast (for GPUs; FFT step and unrolled variables stay float32)',
    'checkpoint': 'checkpoint_stages=True (training only: recompute operator activations in backward)',
    'checkpoint+bf16': 'checkpoint_stages=True under bf16 autocast (training only)',
    'compile': 'torch.compile(default); "first s" includes the compilation',
    'compile+bf16': 'compile: operators (each convolutional sub-network compiled) under bf16 autocast; "first s" '
                    'includes the compilation',
}
TRAIN_ONLY = ('checkpoint', 'checkpoint+bf16')
# The variants that run under autocast, and at which precision (`jude_arch.precision`).
VARIANT_PRECISION = {'bf16': 'bf16', 'checkpoint+bf16': 'bf16', 'fp16': 'fp16', 'compile+bf16': 'bf16'}


def limit_address_space(limit_bytes):
    """Cap this process's address space at its current size plus limit_bytes (CPU cases only: CUDA
    reserves vast virtual ranges)."""
    try:
        with open('/proc/self/statm') as f:
            size = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return
    resource.setrlimit(resource.RLIMIT_AS, (size + limit_bytes, resource.RLIM_INFINITY))


def network_options(case):
    """The JUDE options a case's variant sets on top of its preset (ValueError for a bad variant or mode)."""
    variant = case['variant']
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from {list(VARIANTS)}')
    if case['mode'] == 'forward' and variant in TRAIN_ONLY:
        raise ValueError(f'variant {variant!r} only changes training; use it with mode "train"')
    options = {}
    if variant in ('plain', 'nchw'):
        options['channels_last'] = False
    if variant in TRAIN_ONLY:
        options['checkpoint_stages'] = True
    return options


def count_gflop(case):
    """GFLOP of one call of the case's step (convolutions, matmuls; multiply-add = 2), counted on fake tensors.

    The network is built and run under `FakeTensorMode`, which propagates shapes without computing or allocating,
    so the count costs about a second whatever the case's size and device, and does not disturb its time or memory.
    A training step counts its backward pass and, with checkpointing, the forward pass recomputed there: the
    arithmetic the device actually does. Precision does not change the count (autocast is left out), and the
    compile variant counts the eager network it compiles.
    """
    import torch
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from ..archs import JUDE

    with FakeTensorMode():
        net = JUDE(case['preset'], **network_options(case)).train(case['mode'] == 'train')
        x = torch.rand(case['batch'], 3, case['height'], case['width'])
        with FlopCounterMode(display=False) as counter:
            if case['mode'] == 'train':
                F.l1_loss(net(x), torch.rand_like(x)).backward()
            else:
                with torch.no_grad():
                    net(x, return_intermediates=case['variant'] == 'plain')
    return counter.get_total_flops() / 1e9


def build_case(case):
    """Build what one benchmark case times: the network and a call of the measured step on a random input.

    Args:
        case (dict): preset, height, width, batch, mode ('forward' | 'train'), variant (see VARIANTS),
            device.

    Returns:
        tuple: (net, step) where step() runs one forward pass or one training step (forward, L1 loss,
        backward, gradients released as `zero_grad` does).
    """
    import torch
    import torch.nn.functional as F

    from ..archs import JUDE, compile_network
    from ..precision import autocast

    variant, device = case['variant'], torch.device(case['device'])
    torch.manual_seed(0)
    net = JUDE(case['preset'], **network_options(case)).to(device).train(case['mode'] == 'train')
    if variant == 'compile+bf16':
        compile_network(net, 'operators')
    model = torch.compile(net) if variant == 'compile' else net
    x = 0.3 * torch.rand(case['batch'], 3, case['height'], case['width'], device=device)
    amp = autocast(device, VARIANT_PRECISION[variant]) if variant in VARIANT_PRECISION else nullcontext()

    def forward():
        with amp:
            if variant == 'plain':
                return model(x, return_intermediates=True)['output']
            return model(x)

    if case['mode'] == 'forward':
        grad_mode = torch.no_grad if variant == 'plain' else torch.inference_mode

        def step():
            with grad_mode():
                forward()
    else:
        target = torch.rand_like(x)

        def step():
            F.l1_loss(forward().float(), target).backward()
            net.zero_grad(set_to_none=True)

    return net, step


def measure(case, report=lambda row: None):
    """Run one case in this process; return its result row (time in s, memory in bytes, FLOPs, TFLOP/s).

    Memory: `warmup_peak_bytes` is the peak of the first (warm-up) calls, `peak_bytes` the peak of the timed calls
    after the warm-up, each above what was allocated before the first call (the network and its input). On CUDA the
    first calls also hold cuDNN's autotuning workspaces (cudnn.benchmark tries algorithms with large scratch
    buffers), which are no part of the step's own memory; CUDA: `max_memory_allocated` reset after the warm-up;
    CPU: the resident set's high-water mark (VmHWM), reset after the warm-up where Linux allows it.

    Args:
        case (dict): see `build_case`; also warmup, repeats, threads.
        report (callable): called with the row as it stands after each stage (FLOP count, first call, warm-up).
    """
    import torch

    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    row = dict(case, threads=torch.get_num_threads(), status='ok')
    cuda = case['device'].startswith('cuda')
    if cuda:
        torch.backends.cudnn.benchmark = True  # as BasicSR's train and test pipelines set it
    try:
        row['math'] = case_math(case['device'], VARIANT_PRECISION.get(case['variant']))
        device_name = torch.cuda.get_device_name(case['device']) if cuda else None
        row['peak_tflop_per_s'] = peak_tflops(device_name, row['math'])
        row['gflop'] = _stage(row, 'counting FLOPs', report, lambda: count_gflop(case))
        net, step = build_case(case)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = rss_bytes() or peak_rss_bytes()
        peak = torch.cuda.max_memory_allocated if cuda else _cpu_peak_bytes

        # The first call compiles (compile variants), autotunes cuDNN and sets the warm-up's memory high-water mark.
        row['stage'] = 'first call'
        report(row)
        start = time.perf_counter()
        step()
        sync()
        row['first_s'] = time.perf_counter() - start
        row['stage'] = 'warm-up'
        report(row)
        for _ in range(case['warmup'] - 1):
            step()
        sync()
        row['warmup_peak_bytes'] = peak() - before
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_cpu_peak()
        wall, cpu = [], []
        for i in range(case['repeats']):
            row['stage'] = f'timed call {i + 1} of {case["repeats"]}'
            report(row)
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            sync()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        row['times_s'] = wall
        row['median_s'] = statistics.median(wall)
        if not cuda:
            row['cpu_median_s'] = statistics.median(cpu)
        row['peak_bytes'] = peak() - before
        row['parameters'] = sum(p.numel() for p in net.parameters())
        row['items_per_s'] = case['batch'] / row['median_s']
        if row.get('gflop') is not None:
            row['tflop_per_s'] = row['gflop'] / row['median_s'] / 1e3
            if row['peak_tflop_per_s']:
                row['peak_fraction'] = row['tflop_per_s'] / row['peak_tflop_per_s']
    except (torch.cuda.OutOfMemoryError, MemoryError) as error:
        row['status'] = f'out of memory: {_first_line(error)}'
    except RuntimeError as error:
        # CPU allocations beyond the address-space limit surface as RuntimeError("... can't allocate memory").
        out_of_memory = 'allocate' in str(error) or 'out of memory' in str(error).lower()
        row['status'] = f'{"out of memory" if out_of_memory else "failed"}: {_first_line(error)}'
    except Exception as error:  # a failing torch.compile (no compiler, unsupported op) must not end the run
        row['status'] = f'failed: {type(error).__name__}: {_first_line(error)}'
    row.pop('stage', None)  # the row is final
    return row


def _stage(row, name, report, work):
    """Run work() as the row's stage `name`; a failure there leaves the value None and a note in the row."""
    row['stage'] = name
    report(row)
    try:
        return work()
    except Exception as error:  # the count is extra information: the timing goes on without it
        row['gflop_note'] = f'FLOPs not counted: {type(error).__name__}: {_first_line(error)}'
        return None


def _cpu_peak_bytes():
    """The resident set's high-water mark (VmHWM, resettable), else the process's peak RSS (not resettable)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration, ValueError):
        return peak_rss_bytes()


def _reset_cpu_peak():
    """Reset VmHWM to the current resident set (Linux ≥ 4.0); elsewhere the peak keeps the warm-up's."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def _first_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
