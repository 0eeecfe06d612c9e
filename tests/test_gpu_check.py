"""`python -m jude_arch.tools.gpu_check` without a GPU: a clear message and exit status 3, the CUDA tests skipped
(not errors), the plan it promises, its budget and time limits with deliberately slow fake items (stacks of a
hung item in the log, the check going on, "not run: budget"), the JSON a killed check leaves, the table."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import test_cuda
from jude_arch.archs import JUDE
from jude_arch.tools import benchmark, benchmark_case, gpu_check, gpu_check_plan
from jude_arch.tools.gpu_check_plan import Item, plan_items
from training_helpers import ROOT

NO_GPU = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='2')
PY = sys.executable


@pytest.mark.slow
def test_without_a_gpu_the_check_says_so_and_exits_3(tmp_path):
    done = subprocess.run([PY, '-m', 'jude_arch.tools.gpu_check', '--json', str(tmp_path / 'gpu.json')],
                          capture_output=True, text=True, env=NO_GPU, cwd=tmp_path)
    assert done.returncode == gpu_check.EXIT_NO_GPU == 3
    assert done.stderr.startswith('No CUDA GPU found: torch ') and 'nothing was checked' in done.stderr
    assert not (tmp_path / 'gpu.json').exists()


@pytest.mark.slow
def test_without_a_gpu_the_cuda_tests_are_skipped_not_errors():
    done = subprocess.run([PY, '-m', 'pytest', '-m', 'cuda', '-q', '-rs', '-p', 'no:cacheprovider',
                           str(ROOT / 'tests' / 'test_cuda.py')], capture_output=True, text=True, env=NO_GPU,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert 'skipped' in summary and 'error' not in summary and 'passed' not in summary and 'failed' not in summary
    assert int(summary.split()[0]) >= 12 and 'needs a CUDA GPU (torch sees none)' in done.stdout


def test_the_items_run_every_cuda_test_once_most_important_first():
    items = plan_items('cuda')
    assert [i.name for i in items][:8] == ['versions', 'forward-backward', 'train-fp32', 'train-bf16', 'train-fp16',
                                           'torchrun-nccl', 'restore-12mp', 'compile']
    assert [i.group for i in items] == ['setup'] + ['tests'] * 7 + ['benchmark'] * 7 + ['cudnn'] * 3
    nodes = [arg.split('::', 1)[1] for i in items if i.group == 'tests' for arg in i.command if '::' in arg]
    assert len(nodes) == len(set(nodes))
    for name in (n for n in dir(test_cuda) if n.startswith('test_')):  # each test, or each of its parameters
        params = [p for mark in getattr(getattr(test_cuda, name), 'pytestmark', []) if mark.name == 'parametrize'
                  for p in mark.args[1]]
        assert name in nodes or (params and all(f'{name}[{p}]' in nodes for p in params)), name
    assert all(i.env == {'JUDE_TEST_DEVICE': 'cuda'} for i in items if i.group == 'tests')


def test_the_benchmark_rows_are_what_the_check_promises():
    cases = gpu_check_plan.benchmark_cases('cuda')
    assert {name: (c['purpose'], c['preset'], c['width'], c['height'], c['batch'], c['mode'], c['variant'],
                   c['cudnn_benchmark']) for name, c in cases.items()} == {
        'inference-fp32': ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'default', False),
        'inference-bf16': ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'bf16', False),
        'inference-fp16': ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'fp16', False),
        'phase1-fp32': ('phase 1 training step', 'full', 256, 256, 12, 'train', 'checkpoint', True),
        'phase1-bf16': ('phase 1 training step', 'full', 256, 256, 12, 'train', 'checkpoint+bf16', True),
        'phase3-checkpoint': ('phase 3 peak memory', 'full', 512, 512, 4, 'train', 'checkpoint', False),
        'phase3-no-checkpoint': ('phase 3 peak memory', 'full', 512, 512, 4, 'train', 'default', False),
        'autotune-inference-fp32': ('inference 1120×640 (cuDNN policy)', 'full', 1120, 640, 1, 'forward',
                                    'default', True),
        'no-autotune-phase1-fp32': ('phase 1 training step (cuDNN policy)', 'full', 256, 256, 12, 'train',
                                    'checkpoint', False),
        'autotune-capped-inference-fp32': ('inference 1120×640 (cuDNN policy)', 'full', 1120, 640, 1, 'forward',
                                           'default', True),
    }
    assert cases['autotune-capped-inference-fp32']['cudnn_workspace_limit_mib'] == gpu_check_plan.WORKSPACE_CAP_MIB
    capped = next(i for i in plan_items('cuda') if i.name == 'autotune-capped-inference-fp32')
    assert capped.env == {'CUDNN_CONV_WSCAP_DBG': str(gpu_check_plan.WORKSPACE_CAP_MIB)}
    assert all(set(c) >= {'device', 'warmup', 'repeats'} and c['device'] == 'cuda' for c in cases.values())


def fake_run_case(status_of=lambda case: 'ok', **extra):
    """benchmark.run_case without the measuring (the benchmark's own tests cover that); it records the
    workspace cap its process would inherit."""
    def run_case(case, timeout=None):
        status = status_of(case)
        row = dict(case, status=status, seen_cap=os.environ.get('CUDNN_CONV_WSCAP_DBG'))
        if status == 'ok':
            row.update(median_s=0.5, first_s=2.0, peak_bytes=3 * 2**30, times_s=[0.5], **extra)
        return row

    return run_case


def run_check(tmp_path, items, budget=60, **kwargs):
    """A Check of `items` from now (not from pytest's start); returns (exit status, record, log, printed)."""
    printed = []
    with open(tmp_path / 'check.log', 'w', buffering=1) as log:
        check = gpu_check.Check(items, budget, tmp_path / 'check.json', log, 'cpu', started=time.monotonic(),
                                out=lambda *a, **k: printed.append(' '.join(map(str, a))), **kwargs)
        status = check.run()
    return status, json.loads((tmp_path / 'check.json').read_text()), (tmp_path / 'check.log').read_text(), printed


def benchmark_items():
    return [i for i in plan_items('cpu', quick=True) if i.case is not None]


def test_benchmark_rows_fill_the_table_and_json(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, 'run_case', fake_run_case(tflop_per_s=12.5, peak_fraction=None,
                                                             warmup_peak_bytes=130 * 2**30))
    status, record, _, printed = run_check(tmp_path, benchmark_items())
    assert status == 0 and record['finished'] and record['table'] in '\n'.join(printed)
    rows = record['results']
    assert [r['purpose'] for r in rows] == [i.case['purpose'] for i in benchmark_items()]
    assert all(r['preset'] == 'small' for r in rows)
    # the workspace cap reaches the capped case's process environment, and only that one
    assert [r['seen_cap'] for r in rows] == [None] * 9 + [str(gpu_check_plan.WORKSPACE_CAP_MIB)]
    assert 'CUDNN_CONV_WSCAP_DBG' not in os.environ
    table = record['table'].splitlines()
    header = next(line for line in table if line.startswith('| item | measures'))
    columns = [c.strip() for c in header.strip('|').split('|')]
    row = next(line for line in table if line.startswith('| phase1-fp32 |'))
    cells = dict(zip(columns, (c.strip() for c in row.strip('|').split('|'))))
    assert cells['GiB after warm-up'] == '3.00' and cells['GiB first calls'] == '130.00'
    assert cells['TFLOP/s'] == '12.5' and cells['of peak'] == '—' and cells['autotune'] == 'on'
    assert cells['median s'] == '0.500' and cells['status'] == 'ok'
    assert ("first calls' peak includes the workspace PyTorch allocates while it picks each convolution's cuDNN plan "
            "(as large as the hungriest candidate, with or without autotuning) and is not the network's memory"
            in record['table'])


def test_rows_without_the_new_figures_show_dashes(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, 'run_case', fake_run_case())
    _, record, _, _ = run_check(tmp_path, benchmark_items()[:1])
    row = next(line for line in record['table'].splitlines() if line.startswith('| inference-fp32 |'))
    assert '| off | 0.500 | 2.00 | — | — | 3.00 | — | ok |' in row


def test_a_failed_case_fails_the_check_and_running_out_of_memory_does_not(tmp_path, monkeypatch):
    oom = fake_run_case(lambda c: 'out of memory: CUDA out of memory' if c['variant'] == 'default' else 'ok')
    monkeypatch.setattr(benchmark, 'run_case', oom)
    assert run_check(tmp_path, benchmark_items())[0] == 0
    broken = fake_run_case(lambda c: 'failed: RuntimeError: cuDNN error' if c['variant'] == 'fp16' else 'ok')
    monkeypatch.setattr(benchmark, 'run_case', broken)
    status, record, _, _ = run_check(tmp_path, benchmark_items())
    assert status == gpu_check.EXIT_FAILED == 1
    assert '| inference-fp16 | failed: RuntimeError: cuDNN error |' in record['table']


HANGS = '''
import subprocess, sys, time

def hang_in_child():
    time.sleep(60)

if sys.argv[1:] == ['child']:
    hang_in_child()
# the tests' way: a child whose output is read, then reported when it fails
done = subprocess.run([sys.executable, __file__, 'child'], capture_output=True, text=True, start_new_session=True)
print(f'child ended with {done.returncode}:', done.stderr, flush=True)

def wait_for_child():
    time.sleep(60)

wait_for_child()
'''


def command(tmp_path, name, code, limit, least=0):
    script = tmp_path / f'{name}.py'
    script.write_text(textwrap.dedent(code))
    return Item(name, 'tests', name, limit, least, command=[PY, script])


def test_a_hung_item_leaves_its_stacks_in_the_log_and_the_check_goes_on(tmp_path):
    items = [command(tmp_path, 'hangs', HANGS, limit=3),
             command(tmp_path, 'quick', 'print("fine")', limit=30),
             command(tmp_path, 'needs_more', 'print("never")', limit=30, least=50),
             command(tmp_path, 'cut', 'import time; time.sleep(60)', limit=60, least=1)]
    start = time.monotonic()
    status, record, log, printed = run_check(tmp_path, items, budget=14)
    elapsed = time.monotonic() - start
    statuses = {entry['name']: entry['status'] for entry in record['items']}
    assert statuses['hangs'] == 'timed out after 3 s (stacks in the log)'
    # the child's stack reaches the log through its parent's report (SIGABRT: -6), then the parent's own
    assert log.index('child ended with -6:') < log.index('in hang_in_child') < log.index('in wait_for_child')
    assert statuses['quick'] == 'passed' and 'fine' in log
    assert statuses['needs_more'] == 'not run: budget' and 'never' not in log
    assert statuses['cut'].startswith('stopped: budget (after ')
    assert elapsed < 14 and record['finished']
    assert status == gpu_check.EXIT_FAILED  # the hang is a failure; the cut alone would give EXIT_INCOMPLETE
    assert [line.split(':')[0] for line in printed if line.startswith('[')] == [
        '[ 1/4] hangs', '[ 2/4] quick', '[ 3/4] needs_more', '[ 4/4] cut']
    assert all(entry.get('seconds') is not None for entry in record['items'] if entry['name'] != 'needs_more')


def test_the_budget_alone_cutting_the_check_short_exits_4(tmp_path):
    items = [command(tmp_path, 'quick', 'print("fine")', limit=30),
             command(tmp_path, 'later', 'print("later")', limit=30, least=100)]
    status, record, _, _ = run_check(tmp_path, items, budget=20)
    assert status == gpu_check.EXIT_INCOMPLETE == 4
    assert [e['status'] for e in record['items']] == ['passed', 'not run: budget']


def test_pytest_items_report_each_test(tmp_path):
    (tmp_path / 'test_fake.py').write_text(textwrap.dedent('''
        import pytest

        def test_fine():
            pass

        def test_no_gpu():
            pytest.skip('needs a CUDA GPU (torch sees none)')
    '''))
    pytest_command = [PY, '-m', 'pytest', '-p', 'no:cacheprovider', '-v', '-rfEs', '--color=no']
    items = [Item('both', 'tests', 'both', 60, 0, command=pytest_command + [tmp_path / 'test_fake.py'], cwd=tmp_path),
             Item('skips', 'tests', 'skips', 60, 0, cwd=tmp_path,
                  command=pytest_command + [f'{tmp_path / "test_fake.py"}::test_no_gpu'])]
    _, record, _, _ = run_check(tmp_path, items)
    both, skips = record['items']
    assert both['status'] == 'passed'
    assert both['tests'] == [{'test': 'test_fine', 'outcome': 'passed'}, {'test': 'test_no_gpu', 'outcome': 'skipped'}]
    assert skips['status'] == 'skipped: needs a CUDA GPU (torch sees none)'


KILLED_MIDWAY = '''
import json, os, signal, sys, time
from jude_arch.tools import gpu_check
from jude_arch.tools.gpu_check_plan import Item

py = sys.executable
items = [Item('first', 'tests', 'first', 30, 0, command=[py, '-c', 'print("first done")']),
         Item('killer', 'tests', 'kills the check', 30, 0,
              command=[py, '-c', 'import os, signal, time; os.kill(os.getppid(), signal.SIGKILL); time.sleep(30)']),
         Item('never', 'tests', 'never reached', 30, 0, command=[py, '-c', 'pass'])]
with open(sys.argv[2], 'w', buffering=1) as log:
    gpu_check.Check(items, 60, sys.argv[1], log, 'cpu', started=time.monotonic()).run()
'''


def test_a_check_killed_midway_leaves_a_readable_json_of_what_finished(tmp_path):
    out, log = tmp_path / 'gpu.json', tmp_path / 'gpu.log'
    done = subprocess.run([PY, '-c', KILLED_MIDWAY, out, log], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert [(e['name'], e['status']) for e in record['items']] == [
        ('first', 'passed'), ('killer', 'running'), ('never', 'pending')]
    assert record['finished'] is False and record['items'][0]['seconds'] >= 0
    assert 'first done' in log.read_text()
    assert not list(tmp_path.glob('.gpu.json.*'))  # no temporary file left beside it


def test_the_versions_worker_reports_what_the_check_runs_on(capsys):
    assert gpu_check.report_versions('cpu') == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(gpu_check.VERSIONS_TAG))
    versions = json.loads(line[len(gpu_check.VERSIONS_TAG):])
    assert versions['torch'] == torch.__version__ and {'cv2', 'lmdb', 'basicsr', 'jude_arch'} <= set(versions)
    assert versions['device'] == versions['machine']['cpu']


def test_only_names_items_or_groups(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        gpu_check.main(['--device', 'cpu', '--only', 'benchmrk', '--json', str(tmp_path / 'gpu.json')])
    assert exit_status.value.code == 2
    assert '--only benchmrk: no such item or group; choose from ' in capsys.readouterr().err
    assert not (tmp_path / 'gpu.json').exists()
    only = ['benchmark', 'train-bf16']
    chosen = [i.name for i in plan_items('cpu') if gpu_check_plan.selected(i, only)]
    assert chosen == ['versions', 'train-bf16'] + [name for name, *_ in gpu_check_plan.BENCHMARK_ROWS]


@pytest.mark.slow
def test_the_cpu_dry_run_keeps_its_budget_and_gives_every_item_a_status(tmp_path):
    start = time.monotonic()
    done = subprocess.run([PY, '-m', 'jude_arch.tools.gpu_check', '--device', 'cpu', '--quick', '--budget', '25',
                           '--json', str(tmp_path / 'gpu.json')], capture_output=True, text=True, cwd=tmp_path,
                          env=NO_GPU)
    assert time.monotonic() - start < 25 + 2, done.stdout  # 2 s: the subprocess module's own start and reap
    record = json.loads((tmp_path / 'gpu.json').read_text())
    assert record['finished'] and done.returncode in (gpu_check.EXIT_INCOMPLETE, 0), done.stdout[-3000:]
    assert record['items'][0]['status'] == 'passed' and record['versions']['torch'] == torch.__version__
    assert all(e['status'] not in ('pending', 'running') for e in record['items'])
    for number, entry in enumerate(record['items'], 1):  # every item printed with its status
        assert f"[{number:2d}/{len(record['items'])}] {entry['name']}: {entry['status']}" in done.stdout
    assert (tmp_path / 'gpu.log').read_text().count('=====') >= 2


def test_the_fp16_variant_runs_under_fp16_autocast(monkeypatch):
    seen = []
    real = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, 'conv2d', lambda x, w, *a, **k: seen.append(
        torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else None) or real(x, w, *a, **k))
    net, step = benchmark_case.build_case(dict(preset='small', height=16, width=16, batch=1, mode='forward',
                                          variant='fp16', device='cpu'))
    step()
    # Every convolution runs in fp16 but the hyper-parameter net's, which keeps float32 on purpose.
    hyper_net_convs = sum(isinstance(m, torch.nn.Conv2d) for m in JUDE(preset='small').hyper_net.modules())
    assert seen.count(None) == hyper_net_convs and set(seen) == {torch.float16, None}
