"""`python -m jude_arch.tools.gpu_check` and the CUDA tests on a machine without a GPU: a clear message and exit
status 3, the CUDA tests skipped (not errors), and a dry run of the benchmark plan on the CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from jude_arch.archs import JUDE
from jude_arch.tools import benchmark, benchmark_case, gpu_check
from training_helpers import ROOT

NO_GPU = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='2')


@pytest.mark.slow
def test_without_a_gpu_the_check_says_so_and_exits_3(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'jude_arch.tools.gpu_check', '--json', str(tmp_path / 'gpu.json')],
                          capture_output=True, text=True, env=NO_GPU, cwd=tmp_path)
    assert done.returncode == gpu_check.EXIT_NO_GPU == 3
    assert done.stderr.startswith('No CUDA GPU found: torch ') and 'nothing was checked' in done.stderr
    assert not (tmp_path / 'gpu.json').exists()


@pytest.mark.slow
def test_without_a_gpu_the_cuda_tests_are_skipped_not_errors():
    done = subprocess.run([sys.executable, '-m', 'pytest', '-m', 'cuda', '-q', '-rs', '-p', 'no:cacheprovider',
                           str(ROOT / 'tests' / 'test_cuda.py')], capture_output=True, text=True, env=NO_GPU,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert 'skipped' in summary and 'error' not in summary and 'passed' not in summary and 'failed' not in summary
    assert int(summary.split()[0]) >= 12 and 'needs a CUDA GPU (torch sees none)' in done.stdout


def test_the_gpu_plan_is_what_the_check_promises():
    cases = {(c['purpose'], c['preset'], c['width'], c['height'], c['batch'], c['mode'], c['variant'])
             for c in gpu_check.plan('cuda')}
    assert cases == {
        ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'default'),
        ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'bf16'),
        ('inference 1120×640', 'full', 1120, 640, 1, 'forward', 'fp16'),
        ('phase 1 training step', 'full', 256, 256, 12, 'train', 'checkpoint'),
        ('phase 1 training step', 'full', 256, 256, 12, 'train', 'checkpoint+bf16'),
        ('phase 3 peak memory', 'full', 512, 512, 4, 'train', 'checkpoint'),
        ('phase 3 peak memory', 'full', 512, 512, 4, 'train', 'default'),
    }
    assert all(set(c) >= {'device', 'warmup', 'repeats'} and c['device'] == 'cuda' for c in gpu_check.plan('cuda'))


def fake_run_case(status_of=lambda case: 'ok'):
    """benchmark.run_case without the measuring (the benchmark's own tests cover that): the plan, the table, the
    JSON and the exit status are under test here."""
    def run_case(case, timeout=None):
        status = status_of(case)
        row = dict(case, status=status)
        if status == 'ok':
            row.update(median_s=0.5, first_s=2.0, peak_bytes=3 * 2**30, times_s=[0.5])
        return row

    return run_case


def test_dry_run_prints_one_table_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, 'run_case', fake_run_case())
    out = tmp_path / 'gpu.json'
    assert gpu_check.main(['--device', 'cpu', '--quick', '--skip-tests', '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report['table'] in printed and report['table'].startswith(f"GPU check on {report['machine']['cpu']}")
    assert report['tests'] == {'status': None, 'summary': 'skipped (--skip-tests)'}
    rows = report['results']
    assert [(r['purpose'], r['variant'], r['device']) for r in rows] == [
        (c['purpose'], c['variant'], 'cpu') for c in gpu_check.plan('cpu', quick=True)]
    assert all(r['preset'] == 'small' for r in rows)
    for row in rows:
        assert (f"| {row['purpose']} | small | {row['width']}×{row['height']} | {row['batch']} | {row['mode']} | "
                f"{row['variant']} | 0.500 | 2.00 | 3.00 | ok |") in report['table']


def test_a_failed_case_fails_the_check_and_running_out_of_memory_does_not(tmp_path, monkeypatch):
    out = str(tmp_path / 'gpu.json')
    oom = fake_run_case(lambda c: 'out of memory: CUDA out of memory' if c['variant'] == 'default' else 'ok')
    monkeypatch.setattr(benchmark, 'run_case', oom)
    assert gpu_check.main(['--device', 'cpu', '--quick', '--skip-tests', '--json', out]) == 0
    broken = fake_run_case(lambda c: 'failed: RuntimeError: cuDNN error' if c['variant'] == 'fp16' else 'ok')
    monkeypatch.setattr(benchmark, 'run_case', broken)
    assert gpu_check.main(['--device', 'cpu', '--quick', '--skip-tests', '--json', out]) == 1
    assert '| failed: RuntimeError: cuDNN error |' in json.loads((tmp_path / 'gpu.json').read_text())['table']


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
