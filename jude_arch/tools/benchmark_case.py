"""One benchmark case in this process: build the network and the measured step, time it, take its peak memory.

`python -m jude_arch.tools.benchmark` runs each case in a fresh process (`--worker`) through `measure`, so that
the peak memory is the case's own (the command's description says how memory is taken on CUDA and CPU).
"""
import os
import resource
import statistics
import time
from contextlib import nullcontext

from ..restore.memory import peak_rss_bytes, rss_bytes

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
}
TRAIN_ONLY = ('checkpoint', 'checkpoint+bf16')
# The variants that run under autocast, and at which precision (`jude_arch.precision`).
VARIANT_PRECISION = {'bf16': 'bf16', 'checkpoint+bf16': 'bf16', 'fp16': 'fp16'}


def limit_address_space(limit_bytes):
    """Cap this process's address space at its current size plus limit_bytes (CPU cases only: CUDA
    reserves vast virtual ranges)."""
    try:
        with open('/proc/self/statm') as f:
            size = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return
    resource.setrlimit(resource.RLIMIT_AS, (size + limit_bytes, resource.RLIM_INFINITY))


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

    from ..archs import JUDE
    from ..precision import autocast

    variant, device = case['variant'], torch.device(case['device'])
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from {list(VARIANTS)}')
    if case['mode'] == 'forward' and variant in TRAIN_ONLY:
        raise ValueError(f'variant {variant!r} only changes training; use it with mode "train"')
    options = {}
    if variant in ('plain', 'nchw'):
        options['channels_last'] = False
    if variant in TRAIN_ONLY:
        options['checkpoint_stages'] = True
    torch.manual_seed(0)
    net = JUDE(case['preset'], **options).to(device).train(case['mode'] == 'train')
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


def measure(case):
    """Run one case in this process; return its result row (time in s, memory in bytes, FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    row = dict(case, threads=torch.get_num_threads(), status='ok')
    cuda = case['device'].startswith('cuda')
    if cuda:
        torch.backends.cudnn.benchmark = True  # as BasicSR's train and test pipelines set it
    try:
        net, step = build_case(case)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = rss_bytes() or peak_rss_bytes()
        # The first call compiles (compile variant) and sets the memory high-water mark.
        start = time.perf_counter()
        step()
        sync()
        row['first_s'] = time.perf_counter() - start
        for _ in range(case['warmup'] - 1):
            step()
        wall, cpu = [], []
        for _ in range(case['repeats']):
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
        row['peak_bytes'] = (torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()) - before
        row['parameters'] = sum(p.numel() for p in net.parameters())
        if case.get('flops') and case['variant'] != 'compile':
            # One more call, after memory and time are taken: FlopCounterMode keeps tensors alive (it
            # defeats checkpointing's savings) and slows the call down.
            with FlopCounterMode(display=False) as counter:
                step()
            row['gflop'] = counter.get_total_flops() / 1e9
    except (torch.cuda.OutOfMemoryError, MemoryError) as error:
        row['status'] = f'out of memory: {_first_line(error)}'
    except RuntimeError as error:
        # CPU allocations beyond the address-space limit surface as RuntimeError("... can't allocate memory").
        out_of_memory = 'allocate' in str(error) or 'out of memory' in str(error).lower()
        row['status'] = f'{"out of memory" if out_of_memory else "failed"}: {_first_line(error)}'
    except Exception as error:  # a failing torch.compile (no compiler, unsupported op) must not end the run
        row['status'] = f'failed: {type(error).__name__}: {_first_line(error)}'
    return row


def _first_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
