"""Profile JUDE: where the time of a forward pass and of a phase-1 training step goes, by category.

    python -m jude_arch.tools.profile --device cuda                 # full preset: 1120×640 forward, phase-1 step
    python -m jude_arch.tools.profile --device cuda --precision fp32 --what train --checkpoint false
    python -m jude_arch.tools.profile --quick                       # small preset at tiny sizes (any machine)
    python -m jude_arch.tools.profile --device cuda --json profile.json --markdown profile.md

The forward pass is the restorer's (inference mode, autocast at `--precision`). The training step is phase 1's as
training runs it: `JUDEModel.optimize_parameters` (JUDELoss, Adam, EMA, the non-finite-step guard) on batches
from BasicSR's data loader over synthetic LOL-Blur-sized LMDBs (`benchmark_data`), built from
`options/train_jude_p1.yml` with crop 256, batch 12, its workers and its gradient checkpointing unless told
otherwise. `--warmup` steps run first (cuDNN autotuning, compilation, the loader's start), then `--steps` steps are
timed without the profiler and the same number again under torch.profiler; the table sorts the profiled steps'
time into categories (`profile_categories`): convolutions, FFT data step, element-wise work in the operators and
in the stage updates, their backward, checkpoint recompute, optimizer and EMA, data loading, other, and what is
left of the wall time (CUDA: the GPU idle between kernels; CPU: Python between operators), with the number of
kernel launches (CUDA) or operator calls (CPU) per step. The profiler adds overhead per launch, so its wall time
is above the unprofiled time printed beside it; the shares are what to read.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .benchmark import machine_info, parse_size
from .profile_categories import annotate_jude, categorize, format_profile

PHASE1_OPTIONS = Path(__file__).resolve().parents[2] / 'options' / 'train_jude_p1.yml'
QUICK = dict(preset='small', size=(48, 64), crop=32, batch=2, workers=1)


def forward_step(preset, height, width, device, precision, compile_parts=None):
    """A restorer's forward pass of a random dark image: returns (step, description)."""
    import torch

    from ..archs import JUDE, compile_network
    from ..precision import autocast

    torch.manual_seed(0)
    net = compile_network(JUDE(preset).to(device).eval(), compile_parts)
    x = 0.3 * torch.rand(1, 3, height, width, device=device)

    def step():
        with torch.inference_mode(), autocast(device, precision):
            net(x)

    return step, f'forward, {preset} preset, {width}×{height}, {precision}'


def training_step(work, preset, crop, batch, workers, device, precision, checkpoint, compile_parts=None):
    """Phase 1's training iteration (data loading included): returns (step, description)."""
    import yaml
    from basicsr.models import build_model
    from torch.profiler import record_function

    from ..data.lolblur_lmdb import prepare_lolblur
    from .benchmark_data import build_loader, write_synthetic_lolblur

    if not PHASE1_OPTIONS.is_file():
        raise SystemExit(f'error: {PHASE1_OPTIONS} not found: run the profile from a clone of the repository')
    opt = yaml.safe_load(PHASE1_OPTIONS.read_text())
    write_synthetic_lolblur(work / 'lolblur', 24)
    prepare_lolblur(work / 'lolblur', work / 'lmdb', splits=['train'])
    loader = build_loader(work / 'lmdb', crop, batch, workers)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False,
               num_gpu=1 if device.startswith('cuda') else 0)
    opt['network_g'].update(preset=preset, checkpoint_stages=checkpoint)
    if preset != 'full':
        opt['network_g'].pop('num_stages', None)
    opt['train'].update(precision=precision, compile=compile_parts or False)
    opt['datasets'] = {}
    opt['path'].update(experiments_root=str(work), models=str(work / 'models'), log=str(work),
                       training_states=str(work / 'training_states'), visualization=str(work / 'visualization'))
    model = build_model(opt)
    iteration = [0]

    def batches():
        while True:
            yield from loader

    source = batches()

    def step():
        iteration[0] += 1
        with record_function('jude.data_loading'):
            model.feed_data(next(source))
        model.optimize_parameters(iteration[0])

    return step, (f'phase-1 training step, {preset} preset, {crop}² crops, batch {batch}, {precision}, '
                  f'checkpoint_stages {checkpoint}, {workers} loader workers')


def profile_step(step, device, warmup, steps):
    """Warm up, time `steps` unprofiled steps, then profile `steps` more; returns the result dict."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with annotate_jude():
        for _ in range(warmup):
            step()
        sync()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                with record_function('jude.step'):
                    step()
            sync()
            wall_us = (time.perf_counter() - start) * 1e6
    top = _top_operators(prof, cuda)
    result = categorize(prof.events(), wall_us, steps, cuda)
    result.update(unprofiled_ms=statistics.median(times) * 1e3, top_operators=top)
    return result


def _top_operators(prof, cuda, count=25):
    """The operators with the most self time (device time on CUDA): [(name, calls, self ms)], for the record."""
    def self_time(avg):
        if cuda:
            return getattr(avg, 'self_device_time_total', None) or getattr(avg, 'self_cuda_time_total', 0)
        return avg.self_cpu_time_total

    averages = sorted(prof.key_averages(), key=self_time, reverse=True)[:count]
    return [(avg.key, avg.count, self_time(avg) / 1e3) for avg in averages]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m jude_arch.tools.profile', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', help='cuda, cuda:N or cpu (default: cuda when available)')
    parser.add_argument('--what', nargs='+', choices=('forward', 'train'), default=['forward', 'train'])
    parser.add_argument('--quick', action='store_true', help='small preset, 64×48 forward, 32² crops, batch 2')
    parser.add_argument('--preset', choices=('small', 'full'), help='default: full (--quick: small)')
    parser.add_argument('--precision', choices=('fp32', 'bf16', 'fp16', 'auto'), default='auto')
    parser.add_argument('--size', type=parse_size, metavar='WxH', help='forward input (default 1120x640)')
    parser.add_argument('--crop', type=int, help='training crop (default 256, as phase 1)')
    parser.add_argument('--batch', type=int, help='training batch (default 12, as phase 1)')
    parser.add_argument('--workers', type=int, help='data-loader workers (default 6, as phase 1)')
    parser.add_argument('--checkpoint', choices=('true', 'false', 'auto'), default='true',
                        help='checkpoint_stages of the training step (default true, as the phase files had it)')
    parser.add_argument('--compile', choices=('false', 'operators', 'network'), default='false')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    parser.add_argument('--markdown', metavar='PATH', help='also write the tables as Markdown')
    args = parser.parse_args(argv)

    import torch

    from ..precision import resolve
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {device}: torch sees no CUDA device')
    if device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True  # as BasicSR's training sets it
    defaults = dict(QUICK) if args.quick else dict(preset='full', size=(640, 1120), crop=256, batch=12, workers=6)
    for key in defaults:
        if getattr(args, key) is not None:
            defaults[key] = getattr(args, key)
    precision = resolve(args.precision, device)
    checkpoint = {'true': True, 'false': False}.get(args.checkpoint, 'auto')
    parts = None if args.compile == 'false' else args.compile
    machine = machine_info()
    where = torch.cuda.get_device_name(device) if device.startswith('cuda') else machine['cpu']
    print(f'profiling on {where} (torch {torch.__version__}, {torch.get_num_threads()} threads)', flush=True)

    results, tables = [], []
    with tempfile.TemporaryDirectory(prefix='jude-profile-') as work:
        for what in args.what:
            if what == 'forward':
                step, title = forward_step(defaults['preset'], *defaults['size'], device, precision, parts)
            else:
                step, title = training_step(Path(work), defaults['preset'], defaults['crop'], defaults['batch'],
                                            defaults['workers'], device, precision, checkpoint, parts)
            result = profile_step(step, device, args.warmup, args.steps)
            title = f'{title} on {where}'
            table = format_profile(title, result) + f"\n\nUnprofiled: {result['unprofiled_ms']:.1f} ms per step."
            print('\n' + table, flush=True)
            results.append(dict(what=what, title=title, **result))
            tables.append(table)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=machine, device=where, results=results), indent=1))
    if args.markdown:
        Path(args.markdown).write_text('\n\n'.join(tables) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
