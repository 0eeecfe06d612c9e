"""Check a CUDA machine in one command, within a time budget: imports, the CUDA tests, the GPU benchmark.

    python -m jude_arch.tools.gpu_check                             # from a clone (the tests live there)
    python -m jude_arch.tools.gpu_check --only benchmark cudnn      # the benchmark and cuDNN rows only
    python -m jude_arch.tools.gpu_check --device cpu --quick --budget 60    # a dry run on any machine

Items run one at a time, most important first (`gpu_check_plan.py`): imports and versions; forward/backward in
each precision; training + --auto_resume in each precision; torchrun over NCCL with validation; jude-restore of
a 12 MP photo; torch.compile; the benchmark rows; the rows that measure the cuDNN autotuning policy. Each runs
in processes of its own under its own time limit; one past its limit gets the Python stacks of its processes
written to the log (faulthandler, `time_limit.py`) and is killed, and the check goes on. The budget (default
DEFAULT_BUDGET_S, counted from this process's start) bounds the whole check: an item starts only with its
minimum left and is stopped when the budget ends; what it did not reach is marked "not run: budget".
Each item's status and duration is printed the moment it ends; the JSON (`--json`) is rewritten atomically
when an item starts and when it ends, so a check killed at any moment (SIGKILL too) leaves a readable record
of what finished ("pending": not reached yet). Every item's full output goes to the log (`--log`).

Exit status: 0 every item passed; 1 an item failed or passed its time limit (a benchmark case that runs out of
memory is a result, not a failure); 3 no CUDA GPU; 4 nothing failed, but the budget cut the check short.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..checkpoint_io import atomic_write
from ..restore.memory import meminfo
from . import benchmark
from .gpu_check_plan import GROUPS, TESTS, format_tables, plan_items, selected
from .time_limit import no_core_files, process_age_s, run_with_limit

EXIT_FAILED, EXIT_NO_GPU, EXIT_INCOMPLETE = 1, 3, 4
# 7.5 minutes: the plan's items take about 6.5 minutes on one H200 (estimated from its first run, docs/gpu.md);
# start-up, stopping an item and the table are counted inside it, so the check ends 30 s under 8 minutes.
DEFAULT_BUDGET_S = 450
RESERVE_S = 6  # kept back from the budget for stopping an item (time_limit.GRACE_S twice, then SIGKILL) and the table
VERSIONS_TAG = 'JUDE_GPU_CHECK_VERSIONS '
TEST_OUTCOME = re.compile(r'^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b', re.M)


def is_failure(status):
    return status.startswith(('failed', 'timed out'))


def is_incomplete(status):
    return status.startswith(('not run: budget', 'stopped: budget'))


def run_tests_item(item, limit_s, cut_by_budget, log):
    """A command item (pytest, or the versions worker): status from its exit status and pytest's -v lines."""
    code, output, timed_out = run_with_limit(item.command, limit_s, log, env=item.env, cwd=item.cwd)
    result = {'tests': [{'test': node.split('::', 1)[1], 'outcome': outcome.lower()}
                        for node, outcome in TEST_OUTCOME.findall(output)]}
    outcomes = {test['outcome'] for test in result['tests']}
    if timed_out:
        result['status'] = (f'stopped: budget (after {limit_s:.0f} s)' if cut_by_budget else
                            f'timed out after {limit_s:.0f} s (stacks in the log)')
    elif code == 0 and outcomes == {'skipped'}:
        result['status'] = 'skipped: ' + ' '.join(re.findall(r'SKIPPED \[\d+\] \S+: (.+)', output)[:1])
    elif code == 0:
        result['status'] = 'passed'
    else:
        last = [line for line in output.splitlines() if line.strip()][-1:] or ['no output']
        result['status'] = f'failed (exit status {code}): {last[0].strip("= ")[:200]}'
    if item.name == 'versions':
        found = [line[len(VERSIONS_TAG):] for line in output.splitlines() if line.startswith(VERSIONS_TAG)]
        result['versions'] = json.loads(found[-1]) if found else None
    if result['status'] != 'passed':
        result['output_tail'] = output[-3000:]
    return result


def run_benchmark_item(item, limit_s, cut_by_budget, log, memory_limit):
    """A benchmark row through `benchmark.run_case` (a fresh process, killed at the limit); the case's
    environment (the workspace cap) is set around the call, which the case's process inherits."""
    log.write(f"$ benchmark case {json.dumps(item.case)}\n")
    saved = {key: os.environ.get(key) for key in item.env}
    os.environ.update(item.env)
    try:
        row = dict(benchmark.run_case(dict(item.case, memory_limit=memory_limit), timeout=limit_s),
                   purpose=item.case['purpose'])
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
    log.write(json.dumps(row) + '\n')
    status = row['status']
    if status.startswith('timed out') and cut_by_budget:
        status = row['status'] = f'stopped: budget (after {limit_s:.0f} s)'
    return {'status': status, 'row': row}


class Check:
    """The running check: its record (written as JSON after every change), its log and its clock."""

    def __init__(self, items, budget_s, json_path, log, device, only=None, limit_scale=1.0, out=print, started=None):
        self.items, self.log, self.json_path, self.out = items, log, Path(json_path), out
        self.limit_scale, self.only = limit_scale, set(only or ())
        # The budget counts from this process's start (interpreter and imports included) unless told otherwise.
        self.started = time.monotonic() - process_age_s() if started is None else started
        self.deadline = self.started + budget_s - RESERVE_S
        self.record = dict(device=device, device_name=None, commit=_commit(), budget_s=budget_s,
                           started=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                           log=str(getattr(log, 'name', '')), finished=False, elapsed_s=0, versions=None,
                           items=[dict(name=i.name, group=i.group, what=i.what, limit_s=i.limit_s * limit_scale,
                                       status='pending') for i in items], results=[], table=None)
        self.memory_limit = int(0.9 * meminfo('MemAvailable')) or None

    def elapsed(self):
        return time.monotonic() - self.started

    def save(self):
        self.record['elapsed_s'] = round(self.elapsed(), 1)
        atomic_write(self.json_path, lambda tmp: tmp.write_text(json.dumps(self.record, indent=1)))

    def run(self):
        self.save()
        for number, (item, entry) in enumerate(zip(self.items, self.record['items']), 1):
            label = f'[{number:2d}/{len(self.items)}] {item.name}'
            left = self.deadline - time.monotonic()
            if not selected(item, self.only):
                entry['status'] = 'not selected'
            elif left < item.min_s * self.limit_scale:
                entry['status'] = 'not run: budget'
                self.out(f'{label}: not run: budget ({max(left, 0):.0f} s left, needs '
                         f'{item.min_s * self.limit_scale:.0f})', flush=True)
            else:
                self.run_item(item, entry, label, left)
            self.save()
        self.record['finished'] = True
        self.record['table'] = format_tables(self.header(), self.record['items'])
        self.save()
        self.out('\n' + self.record['table'], flush=True)
        statuses = [entry['status'] for entry in self.record['items']]
        return EXIT_FAILED if any(map(is_failure, statuses)) else EXIT_INCOMPLETE if any(
            map(is_incomplete, statuses)) else 0

    def run_item(self, item, entry, label, left):
        limit = item.limit_s * self.limit_scale
        cut_by_budget = left < limit
        limit = min(limit, left)
        entry.update(status='running', started_s=round(self.elapsed(), 1))
        self.save()
        self.log.write(f'\n===== {label}: {item.what} (limit {limit:.0f} s) =====\n')
        if item.command:
            self.log.write('$ ' + ' '.join(str(c) for c in item.command) + '\n')
        start = time.monotonic()
        if item.case is not None:
            result = run_benchmark_item(item, limit, cut_by_budget, self.log, self.memory_limit)
            self.record['results'].append(result['row'])
        else:
            result = run_tests_item(item, limit, cut_by_budget, self.log)
        entry.update(result, seconds=round(time.monotonic() - start, 1))
        if result.get('versions'):
            self.record['versions'] = result['versions']
            self.record['device_name'] = result['versions'].get('device')
        self.log.write(f"===== {item.name}: {entry['status']} in {entry['seconds']:.1f} s =====\n")
        self.out(f"{label}: {entry['status']} in {entry['seconds']:.1f} s", flush=True)
        if result.get('versions'):
            shown = (f'{k}={v}' for k, v in result['versions'].items() if k != 'machine')
            self.out('    ' + ', '.join(shown), flush=True)
        if is_failure(entry['status']) and entry.get('output_tail'):
            self.out(''.join(f'    {line}\n' for line in entry['output_tail'].splitlines()[-15:]), end='', flush=True)

    def header(self):
        r = self.record
        name = r['device_name'] or r['device']
        return (f"GPU check on {name} ({r['device']}), commit {r['commit'] or 'unknown'}, {r['started']}: "
                f"{self.elapsed():.0f} s of a {r['budget_s']:.0f} s budget")


def _commit():
    """The checkout's commit (what a result table is for), or None outside a git clone."""
    try:
        done = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], capture_output=True, text=True, timeout=5,
                              cwd=TESTS.parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def report_versions(device):
    """The versions worker (`--versions`): import what the check needs, run one cuDNN convolution and one
    matmul on the device, print the versions as one tagged JSON line; exit status 1 if an import fails."""
    import importlib

    info, failed = {}, []
    for module in ('torch', 'torchvision', 'numpy', 'cv2', 'lmdb', 'basicsr', 'jude_arch', 'skimage', 'scipy',
                   'pytest'):
        try:
            info[module] = str(getattr(importlib.import_module(module), '__version__', 'unknown'))
        except Exception as error:  # a missing or broken package is this item's finding
            failed.append(f'import {module}: {type(error).__name__}: {error}')
    if 'torch' in info:
        import torch

        info['python'] = sys.version.split()[0]
        info['machine'] = benchmark.machine_info()
        if device.startswith('cuda'):
            props = torch.cuda.get_device_properties(device)
            info.update(device=props.name, capability=f'{props.major}.{props.minor}',
                        memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
        else:
            info['device'] = info['machine']['cpu']
        x = torch.rand(1, 8, 32, 32, device=device)
        for dtype in (torch.float32, torch.bfloat16):
            torch.nn.functional.conv2d(x.to(dtype), torch.rand(8, 8, 3, 3, device=device, dtype=dtype), padding=1)
            x.flatten(1)[:, :64].to(dtype) @ torch.rand(64, 64, device=device, dtype=dtype)
        if device.startswith('cuda'):
            torch.cuda.synchronize(device)
    print(VERSIONS_TAG + json.dumps(info), flush=True)
    for line in failed:
        print(line, flush=True)
    return EXIT_FAILED if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m jude_arch.tools.gpu_check', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', help='cuda (default), cuda:N, or cpu for a dry run')
    parser.add_argument('--budget', type=float, default=DEFAULT_BUDGET_S, metavar='SECONDS',
                        help=f'the whole check, start-up included (default {DEFAULT_BUDGET_S}: 7.5 minutes)')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help=f'items or groups to run ({", ".join(GROUPS)}); the versions item always runs')
    parser.add_argument('--limit-scale', type=float, default=1.0, metavar='FACTOR',
                        help='multiply every item\'s time limit and minimum (e.g. 3 on a GPU slower than an H100)')
    parser.add_argument('--json', default='gpu_check.json', metavar='PATH',
                        help='the record, rewritten as each item starts and ends')
    parser.add_argument('--log', metavar='PATH', help='every item\'s output (default: the JSON path with .log)')
    parser.add_argument('--tests', type=Path, default=TESTS, help=f'the tests folder (default: {TESTS})')
    parser.add_argument('--quick', action='store_true', help='benchmark rows with the small preset at tiny sizes')
    parser.add_argument('--versions', action='store_true', help=argparse.SUPPRESS)  # the versions worker
    args = parser.parse_args(argv)
    if args.versions:
        return report_versions(args.device)

    import torch
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'No CUDA GPU found: torch {torch.__version__} (CUDA build: {torch.version.cuda or "none"}) sees no '
              'CUDA device, so nothing was checked. Run this on a machine with an NVIDIA GPU and its driver '
              '(nvidia-smi lists it), or pass --device cpu --quick for a dry run.', file=sys.stderr)
        return EXIT_NO_GPU
    items = plan_items(args.device, args.tests, args.quick, sys.executable)
    names = {item.name for item in items} | set(GROUPS)
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f'--only {" ".join(unknown)}: no such item or group; choose from {", ".join(sorted(names))}')
    if args.budget <= RESERVE_S or args.limit_scale <= 0:
        parser.error(f'--budget must be more than {RESERVE_S} s and --limit-scale more than 0')
    if any(item.group == 'tests' and selected(item, args.only) for item in items) \
            and not (args.tests / 'test_cuda.py').is_file():
        parser.error(f'--tests: {args.tests} has no test_cuda.py; run from a clone of the repository or pass --tests')
    json_path = Path(args.json).resolve()
    if not json_path.parent.is_dir():
        parser.error(f'--json: folder {json_path.parent} does not exist')
    log_path = Path(args.log).resolve() if args.log else json_path.with_suffix('.log')
    if not log_path.parent.is_dir():
        parser.error(f'--log: folder {log_path.parent} does not exist')

    no_core_files()  # the stacks of a hung item are taken with SIGABRT
    with open(log_path, 'w', buffering=1) as log:
        check = Check(items, args.budget, json_path, log, args.device, args.only, args.limit_scale)
        print(f'GPU check ({args.device}): {len(items)} items, budget {args.budget:.0f} s; output of each item in '
              f'{log_path}, results in {json_path}', flush=True)
        log.write(f'GPU check ({args.device}), budget {args.budget:.0f} s, commit {check.record["commit"]}\n')
        return check.run()


if __name__ == '__main__':
    sys.exit(main())
