"""LOL-Blur-style synthesis: layout, held-out test photos, reproducibility, the degradation model, errors, CLI."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from jude_arch.archs import blur
from jude_arch.data import synthesis
from jude_arch.data.image_io import ImageDataError, read_image
from jude_arch.data.lolblur_layout import FOLDERS
from jude_arch.data.synthesis import Degradation, degrade, skimage_photo_paths, synthesize_lolblur

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / 'datasets_prep' / 'synthesize_lolblur.py'
SMALL = dict(size=40, frames_per_photo=2, test_photos=2, seed=3)


def tree(root):
    """{relative path: bytes} of every file below root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def synthesized(tmp_path_factory):
    """The bundled photos synthesised twice with the same arguments: one worker and two."""
    base = tmp_path_factory.mktemp('synth')
    one = synthesize_lolblur('skimage', base / 'one', **SMALL)
    two = synthesize_lolblur('skimage', base / 'two', workers=2, **SMALL)
    return base, one, two


def test_same_arguments_give_identical_files_for_any_number_of_workers(synthesized, tmp_path):
    base, _, _ = synthesized
    files = tree(base / 'one')
    assert len(files) == 5 * 2 * 6  # photos × frames × (5 image folders + kernels)
    assert files == tree(base / 'two')
    synthesize_lolblur('skimage', tmp_path / 'other_seed', **{**SMALL, 'seed': 4})
    other = tree(tmp_path / 'other_seed')
    assert sum(other.get(name) != data for name, data in files.items()) > len(files) / 2


def test_lolblur_layout_with_held_out_photos(synthesized):
    base, summary, _ = synthesized
    root = base / 'one'
    assert sorted(p.name for p in root.iterdir()) == ['test', 'train']
    videos = {split: sorted(p.name for p in (root / split / 'high_sharp_scaled').iterdir())
              for split in ('train', 'test')}
    assert len(videos['train']) == 3 and len(videos['test']) == 2 and not set(videos['train']) & set(videos['test'])
    assert sorted(videos['train'] + videos['test']) == ['0000', '0001', '0002', '0003', '0004']
    assert set(summary['train']['photos']).isdisjoint(summary['test']['photos'])
    assert summary['train']['frames'] == 6 and summary['test']['frames'] == 4
    for split in ('train', 'test'):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted([*FOLDERS, 'kernels'])
        for video in videos[split]:
            for frame in ('0000', '0001'):
                for folder in FOLDERS:
                    image = cv2.imread(str(root / split / folder / video / f'{frame}.png'), cv2.IMREAD_UNCHANGED)
                    if folder == 'high_sharp_original':  # the crop at the photo's resolution (≥ 150 px here)
                        assert image.ndim == 3 and image.shape[0] == image.shape[1] >= 100
                    else:
                        assert image.shape == (40, 40, 3) and image.dtype == np.uint8
                kernel = np.load(root / split / 'kernels' / video / f'{frame}.npy')
                assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1 and 7 <= kernel.shape[0] <= 21
                assert kernel.min() >= 0 and abs(kernel.sum() - 1) < 1e-9


def sharpness(image):
    """Mean horizontal gradient relative to the mean level."""
    return np.abs(np.diff(image, axis=1)).mean() / image.mean()


def test_degraded_frames_are_dark_blurred_and_noisy(synthesized):
    root = synthesized[0] / 'one' / 'train'
    for video in sorted(p.name for p in (root / 'high_sharp_scaled').iterdir()):
        folders = ('high_sharp_scaled', 'low_sharp', 'low_blur', 'low_blur_noise')
        gt, low_sharp, low_blur, noisy = (cv2.imread(str(root / f / video / '0000.png')).astype(float) for f in folders)
        assert 0.1 < low_sharp.mean() / gt.mean() < 0.6  # clearly darker, not black
        assert sharpness(low_blur) < 0.8 * sharpness(low_sharp)
        assert 0.5 < np.abs(noisy - low_blur).mean() < 10


def flat_photo(value, side=64):
    photo = np.full((side, side, 3), value, float)
    return photo, np.round(photo[..., ::-1] * 255).astype(np.uint8)


def skimage_rgb(name, side):
    """A scikit-image sample photo as side×side RGB float in [0, 1]."""
    image = getattr(skimage.data, name)()[..., :3]
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) / 255


def test_recorded_kernel_reproduces_the_blur():
    """low_blur = sRGB(clip(exposure · blur(linear(GT), kernel))) with `jude_arch.archs.blur`'s convention."""
    photo = skimage_rgb('astronaut', 96) * 0.8  # no light sources: linear values stay below the threshold
    raw = np.round(photo[..., ::-1] * 255).astype(np.uint8)
    options = Degradation(kernel_size=(15, 15), exposure=(0.2, 0.2), crop_scale=(1, 1))
    images, kernel = degrade(photo, raw, 66, options, np.random.default_rng(0))  # padded side 80: a downscale

    gt = images['high_sharp_scaled'][..., ::-1] / 255
    inner = slice(7, -7)  # away from the border, where the saved GT lacks the blur's margin

    def predicted(k):
        dark = 0.2 * synthesis._srgb_to_linear(gt)
        blurred = blur(torch.from_numpy(dark.copy()).permute(2, 0, 1)[None], torch.from_numpy(k.copy()))
        linear = np.clip(blurred[0].permute(1, 2, 0).numpy(), 0, 1)
        return synthesis._to_uint8(synthesis._linear_to_srgb(linear))[inner, inner].astype(int)

    low_blur = images['low_blur'][inner, inner].astype(int)
    error = np.abs(predicted(kernel) - low_blur)
    assert error.max() <= 2 and error.mean() < 0.3  # 8-bit rounding of the GT and of the output
    assert np.abs(predicted(kernel[::-1, ::-1]) - low_blur).mean() > 4 * error.mean() + 0.5  # the flipped kernel


def test_light_sources_stay_bright_and_smear_into_streaks():
    photo, raw = flat_photo(0.5)
    photo[30:34, 30:34], raw[30:34, 30:34] = 1.0, 255  # a small lamp
    options = Degradation(kernel_size=(15, 15), exposure=(0.05, 0.05), highlight_gain=(3, 3), crop_scale=(1, 1))
    images, _ = degrade(photo, raw, 50, options, np.random.default_rng(1))  # padded side 64: no resizing
    low_sharp, low_blur = images['low_sharp'].astype(int), images['low_blur'].astype(int)
    background = synthesis._to_uint8(synthesis._linear_to_srgb(0.05 * synthesis._srgb_to_linear(np.full(3, 0.5))))
    assert np.abs(low_sharp[:10, :10] - background).max() <= 1  # 4.3 stops under: mid-grey becomes ≈ 26
    assert (low_sharp[23:27, 23:27] == 255).all()  # the lamp stays saturated
    streak = low_blur.max(axis=2) > 128
    assert streak.sum() > 16 and low_blur.max() >= 220  # smeared over more than its own 4×4 pixels, still bright


def test_poisson_gaussian_noise_in_linear_light():
    photo, raw = flat_photo(0.6)
    options = Degradation(exposure=(0.1, 0.1), photons=(500, 500), read_noise=(0.002, 0.002))
    images, _ = degrade(photo, raw, 64, options, np.random.default_rng(2))
    clean = synthesis._srgb_to_linear(images['low_blur'] / 255)
    noise = synthesis._srgb_to_linear(images['low_blur_noise'] / 255) - clean
    expected = clean.mean() / 500 + 0.002**2
    assert abs(noise.var() / expected - 1) < 0.1 and abs(noise.mean()) < 0.1 * noise.std()


def test_skimage_source_is_bundled_colour_photos():
    paths = skimage_photo_paths()
    assert [p.name for p in paths] == list(synthesis.SKIMAGE_PHOTOS)
    for path in paths:  # files inside the installed package: nothing to download
        image = read_image(path)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 256


def test_folder_source_recursive_greyscale_and_16_bit(tmp_path):
    photos = tmp_path / 'photos'
    (photos / 'nested').mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / 'grey.jpg'), rng.integers(0, 256, (70, 90), dtype=np.uint8))
    cv2.imwrite(str(photos / 'nested' / 'deep.png'), rng.integers(0, 65536, (80, 60, 3), dtype=np.uint16))
    (photos / 'notes.txt').write_text('not a photo')
    summary = synthesize_lolblur(photos, tmp_path / 'out', size=32, frames_per_photo=1, test_photos=1, seed=0)
    assert sorted(p.name for p in summary['train']['photos'] + summary['test']['photos']) == ['deep.png', 'grey.jpg']
    # Sorted sources: grey.jpg is video 0000, nested/deep.png video 0001 (its original keeps 16 bits).
    split = 'train' if photos / 'nested' / 'deep.png' in summary['train']['photos'] else 'test'
    original = cv2.imread(str(tmp_path / 'out' / split / 'high_sharp_original/0001/0000.png'), cv2.IMREAD_UNCHANGED)
    assert original.dtype == np.uint16 and original.shape[2] == 3

    for _ in range(2):  # an output inside the source folder is not a source the second time
        again = synthesize_lolblur(photos, photos / 'synth', size=32, frames_per_photo=1, test_photos=1, overwrite=True)
        assert len(again['train']['photos'] + again['test']['photos']) == 2


@pytest.mark.parametrize('case', ['missing folder', 'no images', 'truncated photo', 'too few photos'])
def test_bad_source_is_a_clear_error(tmp_path, case):
    photos = tmp_path / 'photos'
    if case != 'missing folder':
        photos.mkdir()
        (photos / 'readme.txt').write_text('no photos here')
    if case in ('truncated photo', 'too few photos'):
        cv2.imwrite(str(photos / 'a.png'), np.zeros((64, 64, 3), np.uint8))
    if case == 'truncated photo':
        cv2.imwrite(str(photos / 'b.png'), np.full((64, 64, 3), 9, np.uint8))
        data = (photos / 'b.png').read_bytes()
        (photos / 'b.png').write_bytes(data[:len(data) // 2])
    named = {'missing folder': photos, 'no images': photos, 'truncated photo': photos / 'b.png',
             'too few photos': photos}[case]
    with pytest.raises(ImageDataError, match=f'^{named}: '):
        synthesize_lolblur(photos, tmp_path / 'out', size=32, frames_per_photo=1, test_photos=1)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('options, message', [
    (dict(kernel_size=(8, 8)), 'holds no odd size'),
    (dict(exposure=(0.2, 0.1)), 'exposure must be a range'),
    (dict(crop_scale=(0.5, 1.5)), 'crop_scale must lie in'),
    (dict(size=4), 'size must be'),
])
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        synthesize_lolblur('skimage', tmp_path / 'out', **options)


def test_existing_output_is_kept_until_the_replacement_is_complete(tmp_path, monkeypatch):
    out = tmp_path / 'out'
    synthesize_lolblur('skimage', out, **SMALL)
    before = tree(out)
    with pytest.raises(ImageDataError, match=f'{out / "train"}: already exists; pass --overwrite'):
        synthesize_lolblur('skimage', out, **SMALL)

    calls = []

    def degrade_then_ctrl_c(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return degrade(*args)

    monkeypatch.setattr(synthesis, 'degrade', degrade_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        synthesize_lolblur('skimage', out, overwrite=True, **{**SMALL, 'seed': 9})
    assert tree(out) == before and sorted(p.name for p in out.iterdir()) == ['test', 'train']

    monkeypatch.setattr(synthesis, 'degrade', degrade)
    synthesize_lolblur('skimage', out, overwrite=True, **{**SMALL, 'seed': 9, 'test_photos': 0})
    assert sorted(p.name for p in out.iterdir()) == ['train']  # no stale test split from the old run
    assert len(tree(out)) == 5 * 2 * 6


@pytest.mark.slow
def test_cli(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(photos / f'{name}.png'), (skimage_rgb('coffee', 64)[..., ::-1] * 255).astype(np.uint8))
    command = [sys.executable, str(CLI), '--source', str(photos), '--size', '32', '--frames-per-photo', '2',
               '--test-photos', '1', '--kernel-size', '5', '9', '--exposure', '0.1', '0.2']
    runs = [subprocess.Popen(command + ['--out', str(tmp_path / 'out')], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True),
            subprocess.Popen(command + ['--out', str(tmp_path / 'bad'), '--source', str(tmp_path / 'nowhere')],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    (stdout, stderr), (_, bad_stderr) = (run.communicate(timeout=120) for run in runs)
    assert runs[0].returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith('train: 4 pairs from 2 photo(s) (') and lines[1].startswith('test: 2 pairs from 1 ')
    assert lines[2] == f'written to {tmp_path / "out"}'
    assert len(list((tmp_path / 'out').rglob('*.npy'))) == 6
    assert runs[1].returncode == 1 and 'Traceback' not in bad_stderr
    assert bad_stderr.splitlines()[-1] == (f'error: {tmp_path / "nowhere"}: source folder not found '
                                           "(pass a folder of photos or 'skimage')")
