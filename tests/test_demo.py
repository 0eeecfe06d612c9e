"""The README's first command, shortened: python -m jude_arch.demo learns, not only runs."""
import re

import pytest

from training_helpers import PYTHON, run

# 150 iterations on 128×128 frames (4 per photo): measured +4.15 dB here (input 11.51 dB → 15.67 dB); the full
# demo (600 iterations, 256×256) gains more.
ITERS = 150
MIN_GAIN_DB = 3.0


@pytest.mark.slow
def test_short_demo_gains_psnr_on_held_out_pairs(tmp_path):
    out = run([PYTHON, '-m', 'jude_arch.demo', '--work', tmp_path / 'demo', '--iters', ITERS, '--size', 128,
               '--frames-per-photo', 4], cwd=tmp_path, timeout=600)
    rows = {name: (float(psnr), float(ssim))
            for name, psnr, ssim in re.findall(r'^(input|JUDE output|gain)\s+([-+\d.]+)\s+([-+\d.]+)$', out, re.M)}
    assert set(rows) == {'input', 'JUDE output', 'gain'}, out[-2000:]
    assert rows['gain'][0] >= MIN_GAIN_DB, out[-2000:]
    assert rows['JUDE output'][1] > rows['input'][1]
    images = tmp_path / 'demo' / 'results' / 'JUDE_demo_test' / 'visualization' / 'synthetic-LOL-Blur-test'
    assert len(list(images.glob('*_JUDE.png'))) == 8  # 2 held-out photos × 4 frames, named <video>_<frame>
    assert f'Restored images: {images}' in out
