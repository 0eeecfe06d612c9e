"""Benchmark JUDE: time, arithmetic rate and peak memory of a forward pass (inference) and of a training step.

    python -m jude_arch.tools.benchmark --quick                   # the CPU subset, planned for 5 minutes on 2 cores
    python -m jude_arch.tools.benchmark                           # every preset × size × mode × variant
    python -m jude_arch.tools.benchmark --presets full --sizes 1120x640 --modes forward --variants default bf16
    python -m jude_arch.tools.benchmark --presets full --sizes 256x256 --batch 12 --modes train data  # phase 1
    python -m jude_arch.tools.benchmark --quick --json bench.json    # + a JSON record of every row

Sizes are width×height (LOL-Blur frames are 1120x640). Every case runs in a fresh subprocess, so that its
peak memory is its own and a case that runs out of memory or crashes is reported without ending the run.
Each case's FLOPs (convolutions, matmuls; a multiply-add is 2) are counted once on fake tensors (no computation,
about a second), so every row has its GFLOP per call, its achieved TFLOP/s and, on a GPU of `device_peaks`'
table, the fraction of the device's dense peak for the math it runs (bf16, fp16, TF32 or fp32).
Memory is taken twice (`benchmark_case.measure`): over the warm-up (`warmup_peak_bytes`: on CUDA with cuDNN's
autotuning workspaces) and over the timed calls after it (`peak_bytes`, the step's own memory), each above
what was allocated before the first call (model, input):
- CUDA: torch.cuda.max_memory_allocated(), reset after the warm-up.
- CPU: the resident set's high-water mark (VmHWM, reset after the warm-up where Linux allows it). This counts
  everything the step touches (activations, gradients, oneDNN buffers, allocator slack). CPU cases run under an
  address-space limit of the memory available when the benchmark started, so an oversized case fails
  with "out of memory" instead of swapping or drawing the kernel's OOM killer onto other processes.
Times are the median of `--repeats` calls after `--warmup` calls (synchronised on CUDA); on CPU the
process's CPU time per call (all threads) is reported too: with `--threads 1` on a shared machine it
moves much less than the wall time (with more threads, OpenMP spin-waiting inflates it under contention).
`--timeout` bounds each case; a case stopped by it still reports the stage it reached and what it measured.
`--modes data` times the data loader alone (`benchmark_data`) and prints how many times faster than each
measured training step of the same crop and batch it delivers batches.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

from ..data.lolblur_lmdb import FRAME_FORMATS
from ..restore.memory import meminfo
from .benchmark_case import TRAIN_ONLY, VARIANT_PRECISION, VARIANTS, limit_address_space, measure
from .benchmark_data import measure_loader

# 'data': the data loader alone (`benchmark_data`), one case per device and size, only when asked for.
MODES = ('forward', 'train', 'data')
DEFAULT_MODES = ('forward', 'train')
PRESETS = ('small', 'full')
SIZES = ('256x256', '512x512', '1120x640')
# --quick: what fits in about five minutes on a 2-core CPU, without torch.compile of the full preset
# (its compilation alone takes minutes there); bf16 rows only where the CPU runs bf16 natively.
QUICK = {
    'small': {'forward': ('plain', 'nchw', 'default', 'bf16', 'compile'),
              'train': ('plain', 'default', 'bf16', 'checkpoint')},
    'full': {'forward': ('plain', 'default', 'bf16'), 'train': ()},
}
RESULT_TAG = 'JUDE_BENCHMARK_RESULT '


def parse_size(text):
    """'1120x640' (width×height) → (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r} is not WIDTHxHEIGHT, e.g. 1120x640') from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f'size {text!r} must be positive')
    return height, width


def machine_info():
    """CPU model, cores, RAM, torch version and threads, CUDA device: what a reader needs to compare."""
    import torch

    from ..precision import cpu_bf16_feature
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cpu_native_bf16=cpu_bf16_feature() or 'none', cpu_cores=os.cpu_count(),
                memory_gib=round(meminfo('MemTotal') / 2**30, 1),
                python=platform.python_version(), torch=torch.__version__, torch_threads=torch.get_num_threads(),
                platform=platform.platform())
    if torch.cuda.is_available():
        info['cuda_device'] = torch.cuda.get_device_name()
        info['cuda'] = torch.version.cuda
    return info


def run_case(case, timeout=None):
    """Run one case in a fresh Python process (see the module docstring for why); return its row.

    The worker prints its row after every stage, so a case stopped by `timeout` still reports how far it got
    (e.g. "timed out after 240 s in the first call", with its FLOP count and, past the first call, its time).
    """
    command = [sys.executable, '-m', 'jude_arch.tools.benchmark', '--worker', json.dumps(case)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        row = _last_row(expired.stdout) or dict(case)
        stage = row.pop('stage', None)
        return dict(row, status=f'timed out after {timeout:g} s' + (f' in the {stage}' if stage else ''))
    row = _last_row(done.stdout)
    if row is not None and 'stage' not in row:
        return row
    stderr = done.stderr.strip().splitlines()
    reason = 'killed (out of memory?)' if done.returncode in (-9, 137) else f'exit code {done.returncode}'
    partial = {k: v for k, v in (row or case).items() if k != 'stage'}
    where = f" in the {row['stage']}" if row and row.get('stage') else ''
    return dict(partial, status=f'failed{where}: {reason}: {stderr[-1][:200] if stderr else "no output"}')


def _last_row(stdout):
    """The last row a worker printed (complete, or partial with its 'stage'), or None."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode(errors='replace')
    for line in reversed((stdout or '').splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return None


def skipped_variants(args, device):
    """Variants the plan leaves out on a device unless --variants names them: {variant: reason}."""
    if device != 'cpu' or args.variants:
        return {}
    from ..precision import cpu_bf16_feature

    skipped = {'fp16': 'fp16 is for GPUs (few fast fp16 CPU kernels)'}
    if args.quick and cpu_bf16_feature() is None:
        reason = ('this CPU has no native bf16 (no AMX, no AVX512-BF16): PyTorch emulates it, about 12× slower '
                  'than fp32')
        skipped.update({variant: reason for variant, precision in VARIANT_PRECISION.items() if precision == 'bf16'})
    return skipped


def plan(args):
    """The cases to run, in table order."""
    cases = []
    for device in args.devices:
        skipped = skipped_variants(args, device)
        for preset in args.presets:
            for height, width in args.sizes:
                for mode in args.modes:
                    if mode == 'data':
                        continue
                    variants = QUICK[preset][mode] if args.quick and not args.variants else args.variants or VARIANTS
                    for variant in variants:
                        if (mode == 'forward' and variant in TRAIN_ONLY) or variant in skipped:
                            continue
                        cases.append(dict(preset=preset, height=height, width=width, batch=args.batch, mode=mode,
                                          variant=variant, device=device, warmup=args.warmup,
                                          repeats=args.repeats, threads=args.threads))
        if 'data' in args.modes:
            workers = getattr(args, 'workers', 6)
            cases += [dict(preset='loader', height=height, width=width, batch=args.batch, mode='data',
                           variant=f'{frame_format} frames, {workers} workers', workers=workers,
                           frame_format=frame_format, device=device, repeats=max(args.repeats, 10),
                           threads=args.threads)
                      for height, width in args.sizes for frame_format in getattr(args, 'frame_formats', ['png'])]
    return cases


def _print_row(row):
    print(RESULT_TAG + json.dumps(row), flush=True)


def format_table(rows):
    """A Markdown table of the rows; 'vs plain' is the plain variant's median time over this row's.

    'items/s': images (forward, train) or samples (data) per second; 'TFLOP/s' counts the FLOPs of one call
    (with checkpointing, the recomputed forward too) over its median time; '% peak' is that over the device's
    dense peak for the case's math (`device_peaks`; — where the device is not in the table); 'peak MiB' is the
    memory of the timed calls after the warm-up, 'warm-up MiB' that of the warm-up (cuDNN autotuning included).
    """
    plain = {_group(r): r['median_s'] for r in rows if r['variant'] == 'plain' and 'median_s' in r}
    lines = [
        '| device | preset | input (W×H) | batch | mode | variant | median s | items/s | CPU s | first s | GFLOP '
        '| TFLOP/s | % peak | peak MiB | warm-up MiB | vs plain | status |', '|' + '---|' * 17
    ]
    for r in rows:
        ratio = plain.get(_group(r))
        fraction = r.get('peak_fraction')
        cells = [
            r['device'], r['preset'], f"{r['width']}×{r['height']}", r['batch'], r['mode'], r['variant'],
            _number(r.get('median_s'), 3), _number(r.get('items_per_s'), 1), _number(r.get('cpu_median_s'), 3),
            _number(r.get('first_s'), 2), _number(r.get('gflop'), 1), _number(r.get('tflop_per_s'), 3),
            '—' if fraction is None else f'{100 * fraction:.1f}%', _mib(r.get('peak_bytes')),
            _mib(r.get('warmup_peak_bytes')), f"{ratio / r['median_s']:.2f}×" if ratio and 'median_s' in r else '—',
            r['status']
        ]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return '\n'.join(lines)


def loader_ratios(rows):
    """Lines saying how fast each data-loader row feeds the training steps measured at its crop and batch."""
    lines = []
    for data in (r for r in rows if r['mode'] == 'data' and 'median_s' in r):
        for step in (r for r in rows if r['mode'] == 'train' and 'median_s' in r
                     and (r['device'], r['height'], r['width'], r['batch']) == (data['device'], data['height'],
                                                                                 data['width'], data['batch'])):
            lines.append(f"data loader ({data['variant']}, {data['width']}×{data['height']} crops, batch "
                         f"{data['batch']}): {data['median_s']:.3f} s per batch = {step['median_s'] / data['median_s']:.1f}× "
                         f"the rate of the {step['preset']} {step['variant']} training step ({step['median_s']:.3f} s)")
    return lines


def _mib(value):
    return '—' if value is None else f'{value / 2**20:,.0f}'


def _group(row):
    return row['device'], row['preset'], row['height'], row['width'], row['batch'], row['mode']


def _number(value, digits):
    return '—' if value is None else f'{value:,.{digits}f}'


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m jude_arch.tools.benchmark', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Variants:\n' + '\n'.join(f'  {name:16s}{text}' for name, text in VARIANTS.items()))
    parser.add_argument('--quick', action='store_true',
                        help='the CPU subset: 256x256 only; small: every forward variant, train plain/default/'
                        'bf16/checkpoint; full: forward plain/default/bf16; bf16 only on CPUs with native bf16')
    parser.add_argument('--presets', nargs='+', choices=PRESETS, default=list(PRESETS))
    parser.add_argument('--sizes', nargs='+', type=parse_size, metavar='WxH',
                        help=f'input sizes, width×height (default: {" ".join(SIZES)}; --quick: 256x256)')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(DEFAULT_MODES),
                        help='forward, train (default: both) and data: the data loader alone, one row per size '
                        '(the crop) with --batch and --workers')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), help='default: all (--quick: see above)')
    parser.add_argument('--devices', nargs='+', help='default: cpu, and cuda when available')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls before timing (at least 1)')
    parser.add_argument('--repeats', type=int, default=3, help='timed calls; the median is reported')
    parser.add_argument('--threads', type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument('--workers', type=int, default=6, help='data-loader workers of the data mode (default: 6, '
                        'as the phase files)')
    parser.add_argument('--frame-formats', nargs='+', choices=FRAME_FORMATS, default=['png'],
                        help="the data mode's LMDB frames: png (default), raw, or both (one row each; "
                        'datasets_prep/prepare_lolblur.py --format)')
    parser.add_argument('--flops', action='store_true', help=argparse.SUPPRESS)  # FLOPs are always counted now
    parser.add_argument('--timeout', type=float, help='seconds allowed per case (default: no limit)')
    parser.add_argument('--json', metavar='PATH', help='also write machine, settings and rows as JSON')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # internal: run one case, print its row
    args = parser.parse_args(argv)

    if args.worker:
        case = json.loads(args.worker)
        if case['device'] == 'cpu' and case.get('memory_limit'):
            limit_address_space(case['memory_limit'])
        measure_case = measure_loader if case['mode'] == 'data' else measure
        print(RESULT_TAG + json.dumps(measure_case(case, report=_print_row)), flush=True)
        return

    import torch

    from ..precision import auto_precision
    if args.batch < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error('--batch, --warmup and --repeats must be at least 1')
    if args.sizes is None:
        args.sizes = [parse_size('256x256')] if args.quick else [parse_size(s) for s in SIZES]
    if args.devices is None:
        args.devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in args.devices:
        if device != 'cpu' and device.split(':')[0] != 'cuda':
            parser.error(f'--devices: {device!r} is not cpu, cuda or cuda:N')
        if device != 'cpu' and not torch.cuda.is_available():
            parser.error(f'--devices: {device!r} asked for, but torch sees no CUDA device')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        json_dir = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(json_dir):
            parser.error(f'--json: folder {json_dir} does not exist')

    machine = machine_info()
    print('machine: ' + ', '.join(f'{k}={v}' for k, v in machine.items()), flush=True)
    for device in args.devices:
        chosen, reason = auto_precision(device)
        print(f'precision auto on {device}: {chosen} ({reason})', flush=True)
        skipped = skipped_variants(args, device)
        for reason in dict.fromkeys(skipped.values()):
            names = ', '.join(v for v, r in skipped.items() if r == reason)
            print(f'skipped on {device}: {names}: {reason}', flush=True)
    memory_limit = int(0.9 * meminfo('MemAvailable')) or None
    cases = plan(args)
    rows = []
    for i, case in enumerate(cases, 1):
        label = (f"[{i}/{len(cases)}] {case['device']} {case['preset']} {case['width']}x{case['height']} "
                 f"batch {case['batch']} {case['mode']} {case['variant']}")
        print(label, '...', end=' ', flush=True)
        row = run_case(dict(case, memory_limit=memory_limit), timeout=args.timeout)
        rows.append(row)
        print(f"{row['median_s']:.3f} s" if row['status'] == 'ok' else row['status'], flush=True)
    print()
    print(format_table(rows))
    for line in loader_ratios(rows):
        print(line)
    print('\nvariants: ' + '; '.join(f'{name}: {text}' for name, text in VARIANTS.items()))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ('worker', 'json')}
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine, settings=settings, variants=VARIANTS, results=rows), f, indent=1)
        print(f'\nwrote {args.json}')


if __name__ == '__main__':
    main()
