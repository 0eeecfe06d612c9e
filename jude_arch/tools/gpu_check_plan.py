"""What `gpu_check` runs, in order of importance, and how it shows the results.

Time limits and minimums are for one H100/H200-class GPU and include each process's interpreter and CUDA
start-up (`--limit-scale` stretches them for slower machines). `min_s` is the least budget an item needs left
to be started at all: what cannot fit is marked "not run: budget" instead of being cut short. The minimums are
the durations measured on one H200 (torch 2.11, fresh machine, 2026-12-04), rounded up: the check's first full
run there needed about 560 s for all 18 items, so the default 450 s budget covers items 1-13 and marks the
rest "not run: budget" (`--only cudnn benchmark` runs them in a second call).
"""
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / 'tests'
CUDA_TESTS = 'test_cuda.py'
TRAIN = 'test_training_20_iterations_saves_and_resumes'
# (name, what, time limit s, min s, node ids in test_cuda.py)
TEST_ITEMS = (
    ('forward-backward', 'forward + backward in fp32, bf16, fp16 against the CPU; FFT step float32 under autocast',
     120, 25, ('test_forward_and_backward_match_the_cpu_in_fp32',
               'test_the_fft_data_step_stays_float32_under_autocast')),
    ('train-fp32', 'JUDEModel: 20 iterations, save, --auto_resume; fp32, autotuned', 150, 45, (f'{TRAIN}[fp32]',)),
    ('train-bf16', 'JUDEModel: 20 iterations, save, --auto_resume; bf16', 150, 28, (f'{TRAIN}[bf16]',)),
    ('train-fp16', 'JUDEModel: 20 iterations, save, --auto_resume; fp16 with the gradient scaler', 150, 26,
     (f'{TRAIN}[fp16]',)),
    ('torchrun-nccl', 'torchrun --nproc_per_node=1 --launcher pytorch: NCCL, 4 iterations, validation', 150, 26,
     ('test_torchrun_trains_over_nccl_and_validates',)),
    ('restore-12mp', 'jude-restore --device cuda --tile auto, 12 MP photo, full preset; one tile = untiled', 180, 26,
     ('test_restore_a_12_megapixel_photo_with_automatic_tiles',
      'test_a_tile_as_large_as_the_image_gives_the_untiled_output')),
    ('compile', 'torch.compile of the small preset against eager', 240, 52, ('test_torch_compile_matches_eager',)),
)
# Benchmark rows: (name, what it measures, preset, (width, height), batch, mode, variant, repeats, cuDNN autotuning,
# time limit s, min s). Autotuning as JUDE's policy has it (docs/gpu.md): on for training steps, off for
# inference. Phase 3's rows are about memory: without autotuning their first call has no search to pay (with
# it, on the first H200 run, the 512² case had not finished after a minute) and the figure is the network's.
BENCHMARK_ROWS = (
    ('inference-fp32', 'inference 1120×640', 'full', (1120, 640), 1, 'forward', 'default', 3, False, 60, 22),
    ('inference-bf16', 'inference 1120×640', 'full', (1120, 640), 1, 'forward', 'bf16', 3, False, 60, 23),
    ('inference-fp16', 'inference 1120×640', 'full', (1120, 640), 1, 'forward', 'fp16', 3, False, 60, 26),
    ('phase1-fp32', 'phase 1 training step', 'full', (256, 256), 12, 'train', 'checkpoint', 3, True, 120, 51),
    ('phase1-bf16', 'phase 1 training step', 'full', (256, 256), 12, 'train', 'checkpoint+bf16', 3, True, 120, 44),
    ('phase3-checkpoint', 'phase 3 peak memory', 'full', (512, 512), 4, 'train', 'checkpoint', 1, False, 90, 41),
    ('phase3-no-checkpoint', 'phase 3 peak memory', 'full', (512, 512), 4, 'train', 'default', 1, False, 90, 20),
)
# The cuDNN policy's effect, to confirm or change its defaults: rows above with autotuning flipped, and with
# cuDNN's workspace capped (CUDNN_CONV_WSCAP_DBG, MiB, in the case's environment). Measured on the H200:
# inference fp32 0.122 s with and without autotuning, phase 1 bf16 0.299 s with, 0.284 s without; the phase
# files train in fp32, so the row that can change `benchmark_train`'s default is phase 1 in fp32.
WORKSPACE_CAP_MIB = 1024
CUDNN_ROWS = (
    ('autotune-inference-fp32', 'inference-fp32', True, None, 90, 22),
    ('no-autotune-phase1-fp32', 'phase1-fp32', False, None, 120, 51),
    ('autotune-capped-inference-fp32', 'inference-fp32', True, WORKSPACE_CAP_MIB, 90, 22),
)
# --quick: the same rows with the small preset at tiny sizes.
QUICK_SIZES = {(1120, 640): (56, 32), (256, 256): (32, 32), (512, 512): (48, 48)}
GROUPS = ('tests', 'benchmark', 'cudnn')


@dataclass
class Item:
    """One step of the check: a command (`command`) or a benchmark case (`case`), under its own time limit."""
    name: str
    group: str  # 'setup' (always runs), or one of GROUPS
    what: str
    limit_s: float
    min_s: float
    command: list = None
    case: dict = None
    env: dict = field(default_factory=dict)
    cwd: str = None


def selected(item, only):
    """Whether `--only` (names of items or groups; empty: everything) runs this item."""
    return item.group == 'setup' or not only or bool({item.name, item.group} & set(only))


def benchmark_cases(device, quick=False):
    """The benchmark cases, in table order: {item name: case dict for `benchmark.run_case`} (the cuDNN rows
    included, with `cudnn_benchmark` and, for the capped one, `cudnn_workspace_limit_mib`)."""
    cases = {}
    for name, purpose, preset, (width, height), batch, mode, variant, repeats, autotune, *_ in BENCHMARK_ROWS:
        if quick:
            preset, (width, height), batch, repeats = 'small', QUICK_SIZES[width, height], min(batch, 2), 1
        cases[name] = dict(purpose=purpose, preset=preset, height=height, width=width, batch=batch, mode=mode,
                           variant=variant, device=device, warmup=1, repeats=repeats, threads=None, flops=False,
                           cudnn_benchmark=autotune)
    for name, base, autotune, cap_mib, *_ in CUDNN_ROWS:
        cases[name] = dict(cases[base], purpose=f"{cases[base]['purpose']} (cuDNN policy)", cudnn_benchmark=autotune)
        if cap_mib:
            cases[name]['cudnn_workspace_limit_mib'] = cap_mib
    return cases


def plan_items(device, tests=TESTS, quick=False, python='python'):
    """Every item of the check, most important first."""
    root = str(Path(tests).resolve().parent)  # the clone: its jude_arch is what its tests test
    items = [Item('versions', 'setup', 'imports and versions; one cuDNN convolution and one matmul', 60, 5, cwd=root,
                  command=[python, '-m', 'jude_arch.tools.gpu_check', '--versions', '--device', device])]
    for name, what, limit, least, nodes in TEST_ITEMS:
        items.append(Item(name, 'tests', what, limit, least, env={'JUDE_TEST_DEVICE': device}, cwd=root, command=[
            python, '-m', 'pytest', '-p', 'no:cacheprovider', '-v', '-rfEs', '--color=no',
            *(f'{Path(tests) / CUDA_TESTS}::{node}' for node in nodes)]))
    cases = benchmark_cases(device, quick)
    limits = {row[0]: row[-2:] for row in BENCHMARK_ROWS + CUDNN_ROWS}
    for name, case in cases.items():
        group = 'cudnn' if 'cuDNN policy' in case['purpose'] else 'benchmark'
        cap = case.get('cudnn_workspace_limit_mib')
        what = (f"{case['purpose']}: {case['preset']} {case['width']}×{case['height']} batch {case['batch']} "
                f"{case['mode']} {case['variant']}, autotuning {'on' if case['cudnn_benchmark'] else 'off'}"
                + (f', workspace cap {cap} MiB' if cap else ''))
        items.append(Item(name, group, what, *limits[name], case=case,
                          env={'CUDNN_CONV_WSCAP_DBG': str(cap)} if cap else {}))
    return items


def _cell(value, format_spec, scale=1):
    return '—' if value is None else format(value / scale, format_spec)


def format_tables(header, entries):
    """The items table (status and seconds of every item), then the benchmark rows."""
    lines = [header, '', '| # | item | status | s |', '|---|---|---|---|']
    for i, entry in enumerate(entries, 1):
        lines.append(f"| {i} | {entry['name']} | {entry['status']} | {_cell(entry.get('seconds'), '.1f')} |")
    rows = [(entry['name'], entry['row']) for entry in entries if entry.get('row')]
    if rows:
        lines += ['', 'Benchmark: median of the timed calls after warm-up. Memory is torch.cuda.max_memory_allocated '
                  'after warm-up (the network and its algorithms); the first calls\' peak includes the workspace PyTorch '
                  'allocates while it picks each convolution\'s cuDNN plan (as large as the hungriest candidate, '
                  'with or without autotuning) and is not the network\'s memory.', '',
                  '| item | measures | preset | input (W×H) | batch | mode | variant | autotune | median s | first s '
                  '| TFLOP/s | of peak | GiB after warm-up | GiB first calls | status |', '|' + '---|' * 15]
        for name, r in rows:
            fraction = r.get('peak_fraction')
            cap = r.get('cudnn_workspace_limit_mib')
            autotune = {True: 'on', False: 'off'}.get(r.get('cudnn_benchmark'), '—')
            autotune += f', cap {cap} MiB' if cap else ''
            cells = [name, r['purpose'], r['preset'], f"{r['width']}×{r['height']}", r['batch'], r['mode'],
                     r['variant'], autotune, _cell(r.get('median_s'), '.3f'), _cell(r.get('first_s'), '.2f'),
                     _cell(r.get('tflop_per_s'), '.1f'), '—' if fraction is None else f'{100 * fraction:.0f}%',
                     _cell(r.get('peak_bytes'), '.2f', 2**30), _cell(r.get('warmup_peak_bytes'), '.2f', 2**30),
                     r['status']]
            lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return '\n'.join(lines)
