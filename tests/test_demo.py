"""The README's first command, shortened: python -m jude_arch.demo learns, not only runs."""
import re
from pathlib import Path

import pytest

from jude_arch.tools.demo_physics import physics_report
from training_helpers import PYTHON, run

# The default (physics) recipe shortened: phase 0 for 100 iterations (the demo: 350), then 150 of JUDE (the
# demo: 450) on 128×128 frames (4 per photo). MIN_GAIN_DB and the kernel bound were set from one run here.
PHASE0_ITERS, ITERS = 100, 150
MIN_GAIN_DB = 3.0
MAX_KERNEL_ENTROPY = 0.9  # the panel's warning threshold: above it the estimator has learned no blur


@pytest.mark.slow
def test_short_demo_gains_psnr_on_held_out_pairs_and_its_kernel_is_a_blur(tmp_path):
    out = run([PYTHON, '-m', 'jude_arch.demo', '--work', tmp_path / 'demo', '--iters', ITERS, '--phase0-iters',
               PHASE0_ITERS, '--size', 128, '--frames-per-photo', 4], cwd=tmp_path, timeout=600,
              env={'OMP_NUM_THREADS': '1'})  # two threads on a busy 2-core machine ran 10-30x slower
    rows = {name: (float(psnr), float(ssim))
            for name, psnr, ssim in re.findall(r'^(input|JUDE output|gain)\s+([-+\d.]+)\s+([-+\d.]+)$', out, re.M)}
    assert set(rows) == {'input', 'JUDE output', 'gain'}, out[-2000:]
    assert rows['gain'][0] >= MIN_GAIN_DB, out[-2000:]
    assert rows['JUDE output'][1] > rows['input'][1]
    kernels = {name: [float(v) for v in values.split()]
               for name, values in re.findall(r"^(uniform kernel|JUDE's kernel)\s+([\d.\s]+?)$", out, re.M)}
    assert kernels['uniform kernel'][1] == pytest.approx(1.0), out[-2000:]
    assert kernels["JUDE's kernel"][1] < MAX_KERNEL_ENTROPY, out[-2000:]  # phase 0 made it a blur
    images = tmp_path / 'demo' / 'results' / 'JUDE_demo_test' / 'visualization' / 'synthetic-LOL-Blur-test'
    assert len(list(images.glob('*_JUDE.png'))) == 8  # 2 held-out photos × 4 frames, named <video>_<frame>
    assert f'Restored images: {images}' in out
    panel = re.search(r'^Panel \(kernel, I by stage, L, R\): (.+)$', out, re.M).group(1)
    assert (tmp_path / 'demo' / 'panels').resolve() in Path(panel).resolve().parents and Path(panel).is_file()


def test_the_demos_table_sets_the_kernel_beside_the_uniform_and_the_best_gaussian(tmp_path):
    scores = {'frames': 16, 'panel': tmp_path / 'panels' / '0004_0000_panel.png',
              'kernels': {'uniform': {'reblur_psnr': 23.85, 'entropy': 1.0, 'similarity': 0.13},
                          'best Gaussian': {'reblur_psnr': 38.34, 'entropy': 0.49, 'similarity': 0.74},
                          'JUDE': {'reblur_psnr': 37.1, 'entropy': 0.5, 'similarity': 0.75}},
              'illumination': {'chroma': 0.0123, 'gradient_ratio': 0.25}}
    lines = physics_report(scores)
    rows = {name.strip(): [float(value) for value in values.split()]
            for name, values in (re.match(r'^(\D+?)\s+([\d.\s]+)$', line).groups() for line in lines[2:5])}
    assert rows == {'uniform kernel': [23.85, 1.0, 0.13], 'best isotropic Gaussian (oracle)': [38.34, 0.49, 0.74],
                    "JUDE's kernel": [37.1, 0.5, 0.75]}
    assert 'chroma 0.0123 (0 = grey light)' in lines[5] and 'structure 0.250 of I' in lines[5]
    assert lines[-1].endswith(str(scores['panel']))
