"""`python -m jude_arch.tools.benchmark`: quick mode prints every row it promises,
measures memory honestly, and reports failures (torch.compile, out of memory) instead of dying."""
import argparse
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from jude_arch import precision
from jude_arch.tools import benchmark, benchmark_case


@pytest.mark.slow
def test_quick_mode_prints_every_promised_row(tmp_path):
    """The quick plan for the small preset at a tiny size: every row in the table and in the JSON."""
    out = tmp_path / 'bench.json'
    done = subprocess.run([
        sys.executable, '-m', 'jude_arch.tools.benchmark', '--quick', '--presets', 'small', '--sizes', '32x24',
        '--threads', '2', '--flops', '--json', str(out)
    ], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = benchmark.skipped_variants(argparse.Namespace(quick=True, variants=None), 'cpu')
    promised = [(mode, variant) for mode, variants in benchmark.QUICK['small'].items() for variant in variants
                if variant not in skipped]
    assert ('skipped on cpu: bf16, checkpoint+bf16: this CPU has no native bf16' in done.stdout) == ('bf16' in skipped)
    assert 'precision auto on cpu: ' in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith('| cpu | small | 32×24 |')]
    assert [tuple(cell.strip() for cell in line.split('|')[5:7]) for line in table] == promised

    report = json.loads(out.read_text())
    assert {'cpu', 'cpu_cores', 'torch', 'torch_threads'} <= report['machine'].keys()
    assert report['machine']['torch'] == torch.__version__
    rows = report['results']
    assert [(r['mode'], r['variant']) for r in rows] == promised
    for row in rows:
        assert (row['height'], row['width'], row['threads']) == (24, 32, 2)
        if row['variant'] == 'compile' and row['status'] != 'ok':
            continue  # no C++ compiler on this machine: reported, not fatal
        assert row['status'] == 'ok', row
        assert len(row['times_s']) == row['repeats'] and row['median_s'] > 0 and row['peak_bytes'] > 0
    flops = {(r['mode'], r['variant']): r['gflop'] for r in rows if 'gflop' in r}
    # The plain path runs the last stage's dead D_Z call that the others skip.
    assert flops['forward', 'plain'] > flops['forward', 'default'] == flops.get(('forward', 'bf16'), flops[
        'forward', 'default'])
    plain_line = next(line for line in table if '| forward | plain |' in line)
    assert '| 1.00× |' in plain_line


@pytest.mark.slow
def test_cpu_peak_memory_counts_what_a_step_touches():
    """The CPU measurement (peak RSS minus RSS before the step) sees a 256 MiB allocation."""
    script = textwrap.dedent('''
        import torch
        from jude_arch.restore.memory import peak_rss_bytes, rss_bytes
        before = rss_bytes()
        x = torch.ones(64 * 2**20)  # 256 MiB, touched
        del x
        print(peak_rss_bytes() - before)
    ''')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True)
    assert 250 * 2**20 <= int(done.stdout.split()[-1]) <= 400 * 2**20


def case(**changes):
    return dict(dict(preset='small', height=16, width=16, batch=1, mode='forward', variant='default', device='cpu',
                     warmup=1, repeats=2, threads=2), **changes)


def test_a_failing_compile_is_reported(monkeypatch):
    def broken_compile(model, *args, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError('InvalidCxxCompiler: No working C++ compiler found')

        return compiled

    monkeypatch.setattr(torch, 'compile', broken_compile)
    row = benchmark_case.measure(case(variant='compile'))
    assert row['status'].startswith('failed') and 'C++ compiler' in row['status']
    assert 'median_s' not in row


@pytest.mark.slow
def test_out_of_memory_is_reported_not_fatal():
    row = benchmark.run_case(case(height=256, width=256, mode='train', repeats=1, memory_limit=64 * 2**20))
    assert row['status'].startswith('out of memory'), row['status']
    table = benchmark.format_table([row])
    assert table.splitlines()[-1].endswith(f"| {row['status']} |") and '| — |' in table


@pytest.mark.parametrize('feature', [None, 'AMX'])
def test_plan(monkeypatch, feature):
    """Quick mode measures bf16 only on a CPU that runs it natively (detection patched both ways), fp16 only
    on request; the full plan has every variant."""
    monkeypatch.setattr(precision, 'cpu_bf16_feature', lambda: feature)
    settings = dict(devices=['cpu'], presets=['small', 'full'], sizes=[(256, 256)], modes=['forward', 'train'],
                    variants=None, batch=1, warmup=1, repeats=3, threads=None, flops=False)
    quick = benchmark.plan(argparse.Namespace(quick=True, **settings))
    assert [(c['preset'], c['mode'], c['variant']) for c in quick] == [
        (preset, mode, variant) for preset, modes in benchmark.QUICK.items() for mode, variants in modes.items()
        for variant in variants if feature or variant != 'bf16'
    ]
    assert any(c['variant'] == 'bf16' for c in quick) == (feature is not None)
    every = benchmark.plan(argparse.Namespace(quick=False, **settings))
    forward = {c['variant'] for c in every if c['mode'] == 'forward'}
    train = {c['variant'] for c in every if c['mode'] == 'train'}
    assert train == set(benchmark.VARIANTS) - {'fp16'} and forward == train - set(benchmark.TRAIN_ONLY)
    named = benchmark.plan(argparse.Namespace(quick=True, **dict(settings, variants=['bf16', 'fp16'])))
    assert {c['variant'] for c in named} == {'bf16', 'fp16'}  # asked for by name: measured anyway
    on_gpu = benchmark.plan(argparse.Namespace(quick=False, **dict(settings, devices=['cuda'])))
    assert {c['variant'] for c in on_gpu} == set(benchmark.VARIANTS)


def test_speed_up_is_relative_to_plain_of_the_same_setting():
    rows = [
        dict(case(variant='plain'), status='ok', median_s=2.0),
        dict(case(variant='default'), status='ok', median_s=0.5),
        dict(case(variant='default', preset='full'), status='ok', median_s=1.0),  # no plain row to compare
    ]
    lines = benchmark.format_table(rows).splitlines()
    assert '| 1.00× |' in lines[2] and '| 4.00× |' in lines[3] and '| — |' in lines[4]


@pytest.mark.parametrize('text,size', [('1120x640', (640, 1120)), ('256X256', (256, 256))])
def test_sizes_are_width_by_height(text, size):
    assert benchmark.parse_size(text) == size


@pytest.mark.slow
def test_bad_arguments_name_the_value():
    done = subprocess.run([sys.executable, '-m', 'jude_arch.tools.benchmark', '--sizes', '640by1120'],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "'640by1120' is not WIDTHxHEIGHT" in done.stderr
    done = subprocess.run([sys.executable, '-m', 'jude_arch.tools.benchmark', '--devices', 'mps'],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "'mps' is not cpu, cuda or cuda:N" in done.stderr
    with pytest.raises(ValueError, match="'checkpoint' only changes training"):
        benchmark_case.build_case(case(variant='checkpoint'))


@pytest.mark.slow
def test_every_row_has_its_flops_rate_and_both_peaks(monkeypatch):
    """GFLOP (counted on fake tensors: the same count as a real call), TFLOP/s = GFLOP / median, the warm-up's and
    the timed calls' peaks; the fraction of the peak only where the device's peak is known."""
    from torch.utils.flop_counter import FlopCounterMode
    row = benchmark_case.measure(case(mode='train', height=32, width=32))
    assert row['status'] == 'ok', row
    _, step = benchmark_case.build_case(case(mode='train', height=32, width=32))
    with FlopCounterMode(display=False) as counter:
        step()
    assert row['gflop'] == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
    assert row['tflop_per_s'] == pytest.approx(row['gflop'] / row['median_s'] / 1e3)
    assert row['warmup_peak_bytes'] > 0 and row['peak_bytes'] > 0 and 'peak_fraction' not in row
    assert row['items_per_s'] == pytest.approx(1 / row['median_s'])
    monkeypatch.setattr(benchmark_case, 'peak_tflops', lambda name, math: 0.5)
    row = benchmark_case.measure(case())
    assert row['peak_fraction'] == pytest.approx(row['tflop_per_s'] / 0.5)
    # checkpointing recomputes the operators' forward pass: counted, it is arithmetic the device does
    assert benchmark_case.count_gflop(case(mode='train', variant='checkpoint')) > benchmark_case.count_gflop(
        case(mode='train'))


@pytest.mark.parametrize('name,math,peak', [('NVIDIA H200', 'bf16', 989.5), ('NVIDIA H100 80GB HBM3', 'tf32', 494.5),
                                            ('NVIDIA H100 PCIe', 'bf16', 756.0), ('NVIDIA H200 NVL', 'fp32', 60.0),
                                            ('NVIDIA A100-SXM4-80GB', 'fp16', 312.0), ('NVIDIA V100', 'bf16', None),
                                            ('Some Future GPU', 'bf16', None), (None, 'fp32', None)])
def test_known_peaks(name, math, peak):
    from jude_arch.tools.device_peaks import peak_tflops
    assert peak_tflops(name, math) == peak


@pytest.mark.slow
def test_a_timed_out_case_says_where_and_keeps_what_it_measured():
    row = benchmark.run_case(case(height=96, width=96, mode='train', repeats=500), timeout=25)
    assert row['status'] == 'timed out after 25 s in the timed call 1 of 500' or \
        row['status'].startswith('timed out after 25 s in the timed call'), row['status']
    assert row['gflop'] > 0 and row['first_s'] > 0 and 'stage' not in row


def test_data_loader_case_reports_samples_per_second():
    from jude_arch.tools.benchmark_data import measure_loader
    loader_case = dict(preset='loader', height=32, width=32, batch=2, mode='data', variant='0 workers', workers=0,
                       device='cpu', repeats=3, pairs=4)
    row = measure_loader(loader_case)
    assert row['status'] == 'ok', row
    assert len(row['times_s']) == 3 and row['items_per_s'] == pytest.approx(2 * 3 / sum(row['times_s']))
    step = dict(case(mode='train', height=32, width=32, batch=2), status='ok', median_s=4 * row['median_s'])
    [line] = benchmark.loader_ratios([row, step])
    assert '= 4.0× the rate of the small default training step' in line


def test_data_loader_case_reads_raw_frames_too():
    from jude_arch.tools.benchmark_data import measure_loader
    rows = [measure_loader(dict(preset='loader', height=32, width=32, batch=2, mode='data', workers=0, device='cpu',
                                repeats=2, pairs=2, frame_format=frame_format)) for frame_format in ('png', 'raw')]
    assert [row['status'] for row in rows] == ['ok', 'ok'], rows
    settings = dict(devices=['cpu'], presets=['small'], sizes=[(256, 256)], modes=['data'], variants=None, batch=12,
                    warmup=1, repeats=3, threads=None, quick=False, workers=6, frame_formats=['png', 'raw'])
    cases = benchmark.plan(argparse.Namespace(**settings))
    assert [(c['frame_format'], c['variant']) for c in cases] == [('png', 'png frames, 6 workers'),
                                                                  ('raw', 'raw frames, 6 workers')]
