"""Check a CUDA machine in one command: the CUDA tests, then the GPU benchmark, one table, one JSON file.

    python -m jude_arch.tools.gpu_check                      # from a clone of the repository (the tests live there)
    python -m jude_arch.tools.gpu_check --json gpu.json --skip-tests

1. `pytest -m cuda tests/`: forward/backward in fp32/bf16/fp16 against the CPU, the FFT step in float32 under
   autocast, JUDEModel training and --auto_resume in every precision, torchrun over NCCL, jude-restore of a
   12 MP photo with automatic tiles, torch.compile against eager.
2. The benchmark (each case in a fresh process, `jude_arch.tools.benchmark`): the full preset's inference at 1120×640
   in fp32, bf16 and fp16; phase 1's training step (crop 256, batch 12, with the phase files' gradient
   checkpointing, in fp32 and bf16); phase 3's peak memory (crop 512, batch 4) with and without checkpointing.

Planned to finish within 8 minutes on one H100/H200-class GPU. Exit status: 0 everything passed, 1 a test or a
benchmark case failed (a case that runs out of memory is a result, not a failure), 3 no CUDA GPU was found.
`--device cpu --quick` runs the benchmark part on the CPU with the small preset at tiny sizes: a dry run of the
plan, table and JSON on any machine.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..restore.memory import meminfo
from . import benchmark

EXIT_NO_GPU = 3
TESTS = Path(__file__).resolve().parents[2] / 'tests'
# (what it measures, preset, width×height, batch, mode, variants, repeats)
PLAN = (
    ('inference 1120×640', 'full', (1120, 640), 1, 'forward', ('default', 'bf16', 'fp16'), 3),
    ('phase 1 training step', 'full', (256, 256), 12, 'train', ('checkpoint', 'checkpoint+bf16'), 3),
    ('phase 3 peak memory', 'full', (512, 512), 4, 'train', ('checkpoint', 'default'), 1),
)
# --quick: the same plan with the small preset at tiny sizes.
QUICK_SIZES = {(1120, 640): (56, 32), (256, 256): (32, 32), (512, 512): (48, 48)}


def plan(device, quick=False):
    """The benchmark cases of the check, in table order (dicts for `benchmark.run_case`)."""
    cases = []
    for purpose, preset, (width, height), batch, mode, variants, repeats in PLAN:
        if quick:
            preset, (width, height), batch, repeats = 'small', QUICK_SIZES[width, height], min(batch, 2), 1
        for variant in variants:
            cases.append(dict(purpose=purpose, preset=preset, height=height, width=width, batch=batch, mode=mode,
                              variant=variant, device=device, warmup=1, repeats=repeats, threads=None, flops=False))
    return cases


def run_tests(tests, device, log=print):
    """`pytest -m cuda` on the tests folder, output shown as it comes; returns (exit status, summary line)."""
    command = [sys.executable, '-m', 'pytest', '-m', 'cuda', '-q', '-rs', '-p', 'no:cacheprovider', str(tests)]
    log(f"$ {' '.join(command[1:])}", flush=True)
    env = dict(os.environ, JUDE_TEST_DEVICE=device)
    last = ''
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=tests.parent) as proc:
        for line in proc.stdout:
            log(line, end='', flush=True)
            if line.strip():
                last = line.strip()
    return proc.returncode, last.strip('= ')


def format_table(device_name, tests, rows):
    """The check's table: one line on the tests, then the benchmark rows (peak memory in GiB)."""
    lines = [f'GPU check on {device_name}', '', f"CUDA tests: {tests['summary']} (exit status {tests['status']})",
             '', '| measures | preset | input (W×H) | batch | mode | variant | median s | first s | peak GiB '
             '| status |',
             '|' + '---|' * 10]
    for r in rows:
        peak = f"{r['peak_bytes'] / 2**30:.2f}" if 'peak_bytes' in r else '—'
        median = f"{r['median_s']:.3f}" if 'median_s' in r else '—'
        first = f"{r['first_s']:.2f}" if 'first_s' in r else '—'
        lines.append(f"| {r['purpose']} | {r['preset']} | {r['width']}×{r['height']} | {r['batch']} | {r['mode']} | "
                     f"{r['variant']} | {median} | {first} | {peak} | {r['status']} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m jude_arch.tools.gpu_check', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', help='cuda (default), cuda:N, or cpu for a dry run')
    parser.add_argument('--json', default='gpu_check.json', metavar='PATH', help='where to write the results')
    parser.add_argument('--tests', type=Path, default=TESTS, help=f'the tests folder (default: {TESTS})')
    parser.add_argument('--skip-tests', action='store_true', help='only the benchmark')
    parser.add_argument('--skip-benchmark', action='store_true', help='only the tests')
    parser.add_argument('--quick', action='store_true', help='small preset at tiny sizes (a dry run of the plan)')
    parser.add_argument('--timeout', type=float, default=240, help='seconds allowed per benchmark case')
    args = parser.parse_args(argv)

    import torch
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'No CUDA GPU found: torch {torch.__version__} (CUDA build: {torch.version.cuda or "none"}) sees no '
              'CUDA device, so nothing was checked. Run this on a machine with an NVIDIA GPU and its driver '
              '(nvidia-smi lists it), or pass --device cpu --quick for a dry run.', file=sys.stderr)
        return EXIT_NO_GPU
    if not args.skip_tests and not args.tests.is_dir():
        parser.error(f'--tests: {args.tests} is not a folder; run from a clone of the repository or pass --tests')
    json_dir = Path(args.json).resolve().parent
    if not json_dir.is_dir():
        parser.error(f'--json: folder {json_dir} does not exist')

    start = time.perf_counter()
    machine = benchmark.machine_info()
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith('cuda') else machine['cpu']
    print(f'GPU check on {device_name}: ' + ', '.join(f'{k}={v}' for k, v in machine.items()), flush=True)

    tests = {'status': None, 'summary': 'skipped (--skip-tests)'}
    if not args.skip_tests:
        tests['status'], tests['summary'] = run_tests(args.tests, args.device)

    rows = []
    cases = [] if args.skip_benchmark else plan(args.device, args.quick)
    memory_limit = int(0.9 * meminfo('MemAvailable')) or None
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case['purpose']}: {case['preset']} {case['width']}x{case['height']} batch "
              f"{case['batch']} {case['mode']} {case['variant']} ...", end=' ', flush=True)
        row = dict(benchmark.run_case(dict(case, memory_limit=memory_limit), timeout=args.timeout),
                   purpose=case['purpose'])
        rows.append(row)
        print(f"{row['median_s']:.3f} s" if row['status'] == 'ok' else row['status'], flush=True)

    table = format_table(device_name, tests, rows)
    print('\n' + table)
    minutes = (time.perf_counter() - start) / 60
    with open(args.json, 'w') as f:
        json.dump(dict(device=device_name, machine=machine, minutes=minutes, tests=tests, results=rows,
                       table=table), f, indent=1)
    print(f'\n{minutes:.1f} minutes; wrote {args.json}')
    failed = (tests['status'] not in (None, 0)) or any(r['status'].startswith(('failed', 'timed out')) for r in rows)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
