"""jude-restore (jude_arch.restore.cli): folders, image kinds, EXIF orientation, bad files, checkpoints."""
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import load_photo, png_declaring
from PIL import Image

from jude_arch.restore.cli import main
from jude_arch.restore.photo_io import read_photo
from training_helpers import save_small_checkpoint

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A checkpoint as training writes it: BasicSR's save_network dict plus 'network_g'."""
    return save_small_checkpoint(tmp_path_factory.mktemp('model') / 'net_g_latest.pth', params_ema=True)


@pytest.fixture(scope='module')
def photo_bgr():
    """A dark 40×56 crop of a real photo, BGR uint8."""
    rgb = load_photo('astronaut', 56)[0, :, 8:48].permute(1, 2, 0).numpy()
    return np.round(rgb[..., ::-1] * 0.3 * 255).astype(np.uint8)


def _save_with_orientation(path, image_bgr, orientation):
    pil = Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1]))
    exif = pil.getexif()
    exif[EXIF_ORIENTATION] = orientation
    pil.save(path, exif=exif, quality=95)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_read_photo_turns_pictures_upright_like_opencv(tmp_path, photo_bgr, orientation):
    path = tmp_path / f'o{orientation}.jpg'
    _save_with_orientation(path, photo_bgr, orientation)
    upright = cv2.imread(str(path), cv2.IMREAD_COLOR)  # OpenCV applies the EXIF orientation in this mode
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2] == photo_bgr.shape[:2]
    np.testing.assert_array_equal(read_photo(path), upright)


def test_folder_is_walked_recursively_and_a_corrupt_file_is_skipped(tmp_path, checkpoint, photo_bgr, caplog):
    src, out = tmp_path / 'photos', tmp_path / 'restored'
    (src / 'trip' / 'day2').mkdir(parents=True)
    cv2.imwrite(str(src / 'a.png'), photo_bgr)
    cv2.imwrite(str(src / 'trip' / 'b.jpg'), photo_bgr[:31])
    cv2.imwrite(str(src / 'trip' / 'day2' / 'c.png'), photo_bgr[:, :25])
    (src / 'trip' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    (src / 'trip' / 'notes.txt').write_text('not an image')
    with caplog.at_level(logging.INFO):
        status = main(['-i', str(src), '-o', str(out), '--model-path', str(checkpoint)])
    assert status == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file())
    assert written == ['a.png', 'trip/b.jpg', 'trip/day2/c.png']
    assert cv2.imread(str(out / 'trip' / 'b.jpg')).shape == (31, 56, 3)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(src / 'trip' / 'broken.png') in message for message in errors)
    assert 'Restored 3 of 4 image(s)' in caplog.text and '1 image(s) failed' in caplog.text


def test_image_kinds_round_trip(tmp_path, checkpoint, photo_bgr):
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    gray = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2GRAY)
    deep = photo_bgr.astype(np.uint16) * 257 + 100
    rgba = np.dstack([photo_bgr, np.random.default_rng(0).integers(0, 256, photo_bgr.shape[:2], dtype=np.uint8)])
    cv2.imwrite(str(src / 'deep.png'), deep)
    cv2.imwrite(str(src / 'gray.jpg'), gray)
    cv2.imwrite(str(src / 'gray16.png'), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(src / 'rgba.png'), rgba)
    cv2.imwrite(str(src / 'tiny.png'), photo_bgr[:1, :1])
    cv2.imwrite(str(src / 'thin.png'), photo_bgr[:3, :17])
    _save_with_orientation(src / 'rotated.jpg', photo_bgr, 6)  # stored 40×56, shown 56×40
    assert main(['-i', str(src), '-o', str(out), '--model-path', str(checkpoint), '--tile', '0']) == 0

    def read(name):
        return cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)

    assert read('deep.png').dtype == np.uint16 and read('deep.png').shape == deep.shape
    assert read('gray.jpg').shape == gray.shape
    assert read('gray16.png').dtype == np.uint16 and read('gray16.png').shape == gray.shape
    assert read('rgba.png').shape == rgba.shape
    np.testing.assert_array_equal(read('rgba.png')[..., 3], rgba[..., 3])
    assert read('tiny.png').shape == (1, 1, 3) and read('thin.png').shape == (3, 17, 3)
    assert read('rotated.jpg').shape == (56, 40, 3)
    assert Image.open(out / 'rotated.jpg').getexif().get(EXIF_ORIENTATION, 1) == 1  # no second rotation


def test_output_format_options(tmp_path, checkpoint, photo_bgr):
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    cv2.imwrite(str(src / 'deep.png'), photo_bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([photo_bgr, np.full(photo_bgr.shape[:2], 7, np.uint8)]))
    assert main(['-i', str(src), '-o', str(out), '--model-path', str(checkpoint), '--ext', 'jpg',
                 '--suffix', '_jude', '--tile', '0']) == 0
    assert cv2.imread(str(out / 'deep_jude.jpg'), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert (cv2.imread(str(out / 'rgba_jude.png'), cv2.IMREAD_UNCHANGED)[..., 3] == 7).all()  # alpha kept: PNG
    assert not (out / 'rgba_jude.jpg').exists()


def test_inputs_are_never_overwritten(tmp_path, checkpoint, photo_bgr, caplog):
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'a.png'), photo_bgr)
    before = (src / 'a.png').read_bytes()
    assert main(['-i', str(src), '-o', str(src), '--model-path', str(checkpoint)]) == 2
    assert 'would overwrite the input' in caplog.text
    assert (src / 'a.png').read_bytes() == before and sorted(p.name for p in src.iterdir()) == ['a.png']
    assert main(['-i', str(src), '-o', str(src), '--model-path', str(checkpoint), '--suffix', '_jude', '--tile',
                 '0']) == 0
    assert (src / 'a.png').read_bytes() == before and (src / 'a_jude.png').exists()


def test_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, checkpoint, photo_bgr):
    src = tmp_path / 'in'
    (src / 'restored').mkdir(parents=True)
    cv2.imwrite(str(src / 'a.png'), photo_bgr)
    cv2.imwrite(str(src / 'restored' / 'old.png'), photo_bgr)  # an earlier run's output
    assert main(['-i', str(src), '-o', str(src / 'restored'), '--model-path', str(checkpoint), '--tile', '0']) == 0
    assert sorted(p.name for p in (src / 'restored').iterdir()) == ['a.png', 'old.png']


def test_training_checkpoint_needs_only_model_path_and_bare_weights_need_opt(tmp_path, checkpoint, photo_bgr,
                                                                              caplog):
    image = tmp_path / 'night.png'
    cv2.imwrite(str(image), photo_bgr)
    assert main(['-i', str(image), '-o', str(tmp_path / 'out'), '--model-path', str(checkpoint), '--tile', '0']) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'night.png')).shape == photo_bgr.shape

    bare = tmp_path / 'bare.pth'
    torch.save({'params_ema': torch.load(checkpoint, weights_only=True)['params_ema']}, bare)
    assert main(['-i', str(image), '-o', str(tmp_path / 'out2'), '--model-path', str(bare)]) == 2
    assert '--opt' in caplog.text
    options = tmp_path / 'net.yml'
    options.write_text('network_g:\n  type: JUDE\n  preset: small\n')
    assert main(['-i', str(image), '-o', str(tmp_path / 'out2'), '--model-path', str(bare), '--opt',
                 str(options), '--tile', '0']) == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'out2' / 'night.png')),
                                  cv2.imread(str(tmp_path / 'out' / 'night.png')))


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path, checkpoint, photo_bgr):
    cv2.imwrite(str(tmp_path / 'a.png'), photo_bgr)
    run = subprocess.run([sys.executable, '-m', 'jude_arch.restore', '-i', str(tmp_path / 'a.png'), '-o',
                          str(tmp_path / 'out'), '--model-path', str(checkpoint), '--tile', '0'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / 'out' / 'a.png').exists() and 'Restored 1 of 1 image(s)' in run.stderr


def test_a_diverged_checkpoint_is_refused_at_load(tmp_path, checkpoint, photo_bgr, caplog):
    saved = torch.load(checkpoint, weights_only=True)
    name = next(iter(saved['params_ema']))
    saved['params_ema'][name] = torch.full_like(saved['params_ema'][name], float('nan'))
    torch.save(saved, tmp_path / 'diverged.pth')
    cv2.imwrite(str(tmp_path / 'a.png'), photo_bgr)
    assert main(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '--model-path',
                 str(tmp_path / 'diverged.pth')]) == 2
    assert f'1 weight tensor(s) hold NaN or infinite values (e.g. {name})' in caplog.text
    assert not (tmp_path / 'out').exists()


def test_an_unwritable_output_is_refused_before_restoring(tmp_path, checkpoint, photo_bgr, caplog, monkeypatch):
    cv2.imwrite(str(tmp_path / 'a.png'), photo_bgr)
    (tmp_path / 'file').write_text('not a folder')
    restored = []
    monkeypatch.setattr('jude_arch.restore.cli.restore_one', lambda *args: restored.append(args))
    for output, message in ((tmp_path / 'file', 'exists and is not a folder'),
                            (tmp_path / 'file' / 'out', 'cannot write there')):
        assert main(['-i', str(tmp_path / 'a.png'), '-o', str(output), '--model-path', str(checkpoint)]) == 2
        assert f'{output}: {message}' in caplog.text
    assert not restored


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    # A PNG that declares 13000×13000 in its header (its data would decode to gigabytes).
    header = b'\x89PNG\r\n\x1a\n' + (13).to_bytes(4, 'big') + b'IHDR' + (13000).to_bytes(4, 'big') * 2 + b'\x08\x02'
    path = tmp_path / 'bomb.png'
    path.write_bytes(header + b'\0' * 200)
    with pytest.raises(ValueError, match='bomb.png: 13000×13000 is 169.0 megapixels, more than the limit of 100'):
        read_photo(path, max_pixels=100e6)
    with pytest.raises(ValueError, match='not a readable image'):  # without a limit: decoded (and found broken)
        read_photo(path)


def test_broken_links_and_output_conflicts_are_named(tmp_path, checkpoint, photo_bgr, caplog):
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'a.png'), photo_bgr)
    (src / 'gone.png').symlink_to(tmp_path / 'nowhere.png')
    assert main(['-i', str(src), '-o', str(tmp_path / 'out'), '--model-path', str(checkpoint), '--tile', '0']) == 1
    assert f'{src / "gone.png"}: broken symbolic link (to {tmp_path / "nowhere.png"})' in caplog.text
    assert (tmp_path / 'out' / 'a.png').exists()

    cv2.imwrite(str(src / 'a_jude.png'), photo_bgr)  # a.png + suffix _jude would overwrite this input
    assert main(['-i', str(src), '-o', str(src), '--model-path', str(checkpoint), '--suffix', '_jude']) == 2
    assert (f'the output for {src / "a.png"} would overwrite the input {src / "a_jude.png"}; choose another --output '
            'folder or a different --suffix') in caplog.text


def test_photos_over_the_pixel_limit_are_refused_from_their_header(tmp_path, checkpoint, photo_bgr, caplog):
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    (src / 'huge.png').write_bytes(png_declaring(13000, 13000))  # a few hundred bytes claiming 169 MP
    cv2.imwrite(str(src / 'small.jpg'), photo_bgr)
    assert main(['-i', str(src), '-o', str(out), '--model-path', str(checkpoint), '--tile', '0']) == 1
    assert (f'{src / "huge.png"}: 13000×13000 is 169.0 megapixels, more than the limit of 100; raise it with '
            '--max-megapixels if you mean it') in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ['small.jpg']
    caplog.clear()
    assert main(['-i', str(src / 'small.jpg'), '-o', str(out), '--model-path', str(checkpoint), '--suffix', '_2',
                 '--max-megapixels', '0.002']) == 1  # JPEG: the size from Pillow's header parser
    assert f'{src / "small.jpg"}: 56×40 is 0.0 megapixels, more than the limit of 0.002' in caplog.text
