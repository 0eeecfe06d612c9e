"""LOL-Blur → BasicSR LMDB packing: contents, keys, validation, atomic writes, the CLI."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
from basicsr.data import build_dataset

from jude_arch.data import lolblur_lmdb
from jude_arch.data.image_io import ImageDataError
from jude_arch.data.lolblur_lmdb import prepare_lolblur

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / 'datasets_prep' / 'prepare_lolblur.py'
FOLDERS = ('low_blur_noise', 'low_blur', 'high_sharp_scaled')


def make_lolblur(root, videos=('0000', '0001'), frames=('0000', '0001'), size=(24, 32), seed=0):
    """A tiny LOL-Blur tree: random frames in every split and folder (frame names repeat across videos)."""
    rng = np.random.default_rng(seed)
    for split in ('train', 'test'):
        for folder in FOLDERS:
            for video in videos:
                (root / split / folder / video).mkdir(parents=True, exist_ok=True)
                for frame in frames:
                    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                    cv2.imwrite(str(root / split / folder / video / f'{frame}.png'), image)
    return root


def read_lmdb(path):
    """{key: decoded image} of an LMDB."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {key.decode(): cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
                 for key, value in txn.cursor()}
    env.close()
    return items


def lmdb_outputs(out):
    """Everything prepare_lolblur may have left in `out`: LMDBs and staging folders."""
    return sorted(p.name for p in Path(out).glob('*')) if Path(out).exists() else []


def test_packs_every_split_with_video_keys(tmp_path):
    root = make_lolblur(tmp_path / 'LOL-Blur')
    result = prepare_lolblur(root, tmp_path / 'lmdb')
    assert lmdb_outputs(tmp_path / 'lmdb') == ['test_gt.lmdb', 'test_lq.lmdb', 'train_gt.lmdb', 'train_lq.lmdb']
    assert result['train']['frames'] == 4
    for split in ('train', 'test'):
        for kind, folder in (('lq', 'low_blur_noise'), ('gt', 'high_sharp_scaled')):
            stored = read_lmdb(result[split][kind])
            assert sorted(stored) == ['0000_0000', '0000_0001', '0001_0000', '0001_0001']
            for key, image in stored.items():  # lossless: the exact pixels of the source frame
                video, frame = key.split('_')
                np.testing.assert_array_equal(image, cv2.imread(str(root / split / folder / video / f'{frame}.png')))
            meta = (result[split][kind] / 'meta_info.txt').read_text().splitlines()
            assert sorted(meta) == [f'{key}.png (24,32,3) 1' for key in sorted(stored)]


def test_lq_folder_is_selectable(tmp_path):
    root = make_lolblur(tmp_path / 'LOL-Blur')
    result = prepare_lolblur(root, tmp_path / 'lmdb', lq='low_blur', splits=['test'])
    assert lmdb_outputs(tmp_path / 'lmdb') == ['test_gt.lmdb', 'test_lq.lmdb']
    stored = read_lmdb(result['test']['lq'])
    np.testing.assert_array_equal(stored['0001_0000'], cv2.imread(str(root / 'test/low_blur/0001/0000.png')))
    with pytest.raises(ImageDataError, match='lq must be one of'):
        prepare_lolblur(root, tmp_path / 'other', lq='high_sharp_original')


def test_loads_in_basicsr_paired_dataset_and_lolblur_dataset(tmp_path):
    root = make_lolblur(tmp_path / 'LOL-Blur')
    result = prepare_lolblur(root, tmp_path / 'lmdb', splits=['train'])
    for dataset_type in ('PairedImageDataset', 'LOLBlurDataset'):
        dataset = build_dataset({
            'name': 'lolblur', 'type': dataset_type, 'phase': 'train', 'scale': 1, 'gt_size': 16,
            'use_hflip': True, 'use_rot': True, 'io_backend': {'type': 'lmdb'},
            'dataroot_lq': str(result['train']['lq']), 'dataroot_gt': str(result['train']['gt'])})
        item = dataset[3]
        assert len(dataset) == 4
        assert item['lq'].shape == item['gt'].shape == (3, 16, 16)
        assert item['lq_path'] == '0001_0001'


def test_workers_give_the_same_lmdb(tmp_path):
    root = make_lolblur(tmp_path / 'LOL-Blur', videos=('0000', '0001', '0002'))
    one = prepare_lolblur(root, tmp_path / 'one', splits=['train'])
    two = prepare_lolblur(root, tmp_path / 'two', splits=['train'], workers=2)
    for kind in ('lq', 'gt'):
        a, b = read_lmdb(one['train'][kind]), read_lmdb(two['train'][kind])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert (one['train'][kind] / 'meta_info.txt').read_text() == (two['train'][kind] / 'meta_info.txt').read_text()


def test_map_size_covers_frames_of_varied_sizes(tmp_path):
    # BasicSR's make_lmdb_from_imgs sizes the map from the first image (MDB_MAP_FULL here); ours sums them.
    root = make_lolblur(tmp_path / 'LOL-Blur', videos=('0000', ), size=(4, 4))
    make_lolblur(root, videos=('0001', '0002'), frames=('0000', '0001', '0002'), size=(200, 300), seed=1)
    result = prepare_lolblur(root, tmp_path / 'lmdb', splits=['train'])
    assert len(read_lmdb(result['train']['lq'])) == 8


@pytest.mark.parametrize('dtype, channels', [(np.uint8, 3), (np.uint16, 4), (np.uint8, 1)])
def test_lmdb_space_bound_holds_for_incompressible_frames(dtype, channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, np.iinfo(dtype).max + 1, (97, 131, channels)[:3 if channels > 1 else 2], dtype=dtype)
    ok, encoded = cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, lolblur_lmdb.COMPRESS_LEVEL])
    assert ok
    assert lolblur_lmdb._lmdb_bytes(131, 97, np.dtype(dtype).itemsize) >= encoded.nbytes + 4096


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def resize(path):
    cv2.imwrite(str(path), np.zeros((24, 30, 3), np.uint8))


# Each case: how to break a good tree, and the path the error must name (relative to the tree's root).
BAD_INPUTS = {
    'missing split': (lambda root: os.rename(root / 'test', root / 'tests'), 'test'),
    'missing LQ folder': (lambda root: os.rename(root / 'train/low_blur_noise', root / 'train/lbn'),
                          'train/low_blur_noise'),
    'missing GT folder': (lambda root: os.rename(root / 'test/high_sharp_scaled', root / 'test/gt'),
                          'test/high_sharp_scaled'),
    'LQ without GT': (lambda root: os.remove(root / 'test/high_sharp_scaled/0001/0001.png'),
                      'test/low_blur_noise/0001/0001.png'),
    'GT without LQ': (lambda root: os.remove(root / 'train/low_blur_noise/0000/0001.png'),
                      'train/high_sharp_scaled/0000/0001.png'),
    'truncated PNG': (lambda root: truncate(root / 'test/high_sharp_scaled/0001/0000.png'),
                      'test/high_sharp_scaled/0001/0000.png'),
    'corrupted PNG': (lambda root: corrupt(root / 'test/low_blur_noise/0000/0001.png'),
                      'test/low_blur_noise/0000/0001.png'),
    'mismatched sizes': (lambda root: resize(root / 'train/high_sharp_scaled/0001/0000.png'),
                         'train/low_blur_noise/0001/0000.png'),
    'key with a dot': (lambda root: [os.rename(root / f'train/{f}/0001', root / f'train/{f}/v.1') for f in FOLDERS],
                       'train/low_blur_noise/v.1/0000.png'),
}


@pytest.fixture
def good_tree(tmp_path):
    return make_lolblur(tmp_path / 'LOL-Blur')


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_names_the_path_and_writes_nothing(good_tree, tmp_path, case):
    breaker, culprit = BAD_INPUTS[case]
    breaker(good_tree)
    with pytest.raises(ImageDataError) as error:
        prepare_lolblur(good_tree, tmp_path / 'lmdb')
    message = str(error.value)
    assert str(good_tree / culprit) in message and '\n' not in message
    assert not (tmp_path / 'lmdb').exists()


def test_existing_output_is_refused_and_kept(good_tree, tmp_path):
    result = prepare_lolblur(good_tree, tmp_path / 'lmdb', splits=['test'])
    before = read_lmdb(result['test']['lq'])
    with pytest.raises(ImageDataError, match=f'{tmp_path / "lmdb" / "test_lq.lmdb"}: already exists.*--overwrite'):
        prepare_lolblur(good_tree, tmp_path / 'lmdb')
    assert lmdb_outputs(tmp_path / 'lmdb') == ['test_gt.lmdb', 'test_lq.lmdb']
    assert read_lmdb(result['test']['lq']).keys() == before.keys()


def test_overwrite_replaces_only_when_the_new_lmdb_is_complete(good_tree, tmp_path):
    out = tmp_path / 'lmdb'
    prepare_lolblur(good_tree, out, splits=['test'])
    old = read_lmdb(out / 'test_lq.lmdb')
    truncate(good_tree / 'test/low_blur_noise/0001/0001.png')  # found while writing, after other frames
    with pytest.raises(ImageDataError, match='0001/0001.png'):
        prepare_lolblur(good_tree, out, splits=['test'], overwrite=True)
    assert lmdb_outputs(out) == ['test_gt.lmdb', 'test_lq.lmdb']
    assert all(np.array_equal(image, old[key]) for key, image in read_lmdb(out / 'test_lq.lmdb').items())

    make_lolblur(good_tree, videos=('0001', ), seed=7)  # repairs the frame, with new content
    prepare_lolblur(good_tree, out, splits=['test'], overwrite=True)
    assert lmdb_outputs(out) == ['test_gt.lmdb', 'test_lq.lmdb']
    new = read_lmdb(out / 'test_lq.lmdb')
    np.testing.assert_array_equal(new['0001_0001'], cv2.imread(str(good_tree / 'test/low_blur_noise/0001/0001.png')))
    assert not np.array_equal(new['0001_0001'], old['0001_0001'])


def test_interrupted_run_leaves_the_output_as_it_was(good_tree, tmp_path, monkeypatch):
    out = tmp_path / 'lmdb'
    prepare_lolblur(good_tree, out, splits=['train'])
    old = read_lmdb(out / 'train_gt.lmdb')
    encode, calls = lolblur_lmdb._encode, []

    def encode_then_ctrl_c(path, frame_format):
        calls.append(path)
        if len(calls) == 11:  # in test_lq.lmdb, after train_lq and train_gt are complete in the staging folder
            raise KeyboardInterrupt
        return encode(path, frame_format)

    monkeypatch.setattr(lolblur_lmdb, '_encode', encode_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        prepare_lolblur(good_tree, out, overwrite=True)
    assert lmdb_outputs(out) == ['train_gt.lmdb', 'train_lq.lmdb']
    assert all(np.array_equal(image, old[key]) for key, image in read_lmdb(out / 'train_gt.lmdb').items())


def run_cli(*args):
    return subprocess.Popen([sys.executable, str(CLI), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def cli_main():
    """The script's `main`, called in this process (the script's imports are this process's own)."""
    spec = importlib.util.spec_from_file_location('prepare_lolblur_cli', CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sigterm = signal.getsignal(signal.SIGTERM)
    yield module.main
    signal.signal(signal.SIGTERM, sigterm)  # main() routes SIGTERM to its clean-up


@pytest.mark.parametrize('case', ['missing split', 'missing LQ folder', 'LQ without GT', 'truncated PNG',
                                  'mismatched sizes', 'existing output'])
def test_cli_bad_input_gives_a_one_line_error(good_tree, tmp_path, cli_main, case):
    """One-line errors through the script's argument layer; `test_cli_in_subprocesses` runs the script itself."""
    out = tmp_path / 'lmdb'
    if case == 'existing output':
        prepare_lolblur(good_tree, out, splits=['train'])
        culprit = out / 'train_lq.lmdb'
    else:
        breaker, culprit = BAD_INPUTS[case]
        breaker(good_tree)
        culprit = good_tree / culprit
    with pytest.raises(SystemExit) as exit_:
        cli_main(['--root', str(good_tree), '--out', str(out), '--workers', '2'])
    message = exit_.value.code  # a string: Python prints it to stderr and exits with status 1
    assert message.startswith('error: ') and str(culprit) in message and '\n' not in message
    assert lmdb_outputs(out) == (['train_gt.lmdb', 'train_lq.lmdb'] if case == 'existing output' else [])


@pytest.mark.slow
def test_cli_in_subprocesses(tmp_path):
    """The script as users run it, three runs at once: a success, a truncated PNG found while writing, and a
    run interrupted by Ctrl-C while writing."""
    root = make_lolblur(tmp_path / 'small')
    done = run_cli('--root', root, '--out', tmp_path / 'small_lmdb', '--lq', 'low_blur', '--workers', '2')
    broken = make_lolblur(tmp_path / 'broken')
    truncate(broken / 'train/high_sharp_scaled/0001/0000.png')
    failed = run_cli('--root', broken, '--out', tmp_path / 'broken_lmdb', '--workers', '2')

    # Enough frames that packing takes many seconds even when the test process itself is starved of CPU (the
    # interrupt must land while writing): one noisy 256×256 PNG, hard-linked many times.
    big = tmp_path / 'big'
    make_lolblur(big, videos=('0000', ), frames=('0000', ), size=(256, 256))
    for split in ('train', 'test'):
        for folder in FOLDERS:
            for video in range(3):
                for frame in range(300):
                    target = big / split / folder / f'{video:04d}' / f'{frame:04d}.png'
                    if not target.exists():
                        target.parent.mkdir(exist_ok=True)
                        os.link(big / split / folder / '0000' / '0000.png', target)
    out = tmp_path / 'big_lmdb'
    interrupted = run_cli('--root', big, '--out', out, '--workers', '2')
    deadline = time.monotonic() + 120
    while not list(out.glob('.prepare_lolblur-*/*.lmdb')) and time.monotonic() < deadline:
        time.sleep(0.005)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, stderr
    assert 'Traceback' not in stderr and stderr.splitlines()[-1] == f'interrupted: {out} was left as it was'
    assert not out.exists()  # it did not exist before: not even the folder is left

    _, stderr = failed.communicate(timeout=120)
    assert failed.returncode == 1 and 'Traceback' not in stderr
    culprit = broken / 'train/high_sharp_scaled/0001/0000.png'
    assert stderr.splitlines()[-1].startswith(f'error: {culprit}: not a readable image'), stderr
    assert not (tmp_path / 'broken_lmdb').exists()

    stdout, stderr = done.communicate(timeout=120)
    assert done.returncode == 0, stderr
    small = tmp_path / 'small_lmdb'
    assert stdout.splitlines() == [f'train: 4 pairs -> {small}/train_lq.lmdb, {small}/train_gt.lmdb',
                                   f'test: 4 pairs -> {small}/test_lq.lmdb, {small}/test_gt.lmdb']
    np.testing.assert_array_equal(read_lmdb(small / 'test_lq.lmdb')['0000_0001'],
                                  cv2.imread(str(root / 'test/low_blur/0000/0001.png')))


def test_cli_packs_raw_frames_holding_the_same_pixels(tmp_path, cli_main):
    """`--format raw`: every frame stored as its pixels behind a checked header (8- and 16-bit, grey and
    colour), equal to the PNG-packed frame once decoded."""
    from jude_arch.data.image_io import decode_frame

    root = make_lolblur(tmp_path / 'lolblur')
    frame = root / 'train' / 'high_sharp_scaled' / '0001' / '0001.png'
    cv2.imwrite(str(frame), np.random.default_rng(1).integers(0, 65536, (24, 32, 3), dtype=np.uint16))
    grey = root / 'train' / 'low_blur_noise' / '0001' / '0001.png'
    cv2.imwrite(str(grey), np.random.default_rng(2).integers(0, 256, (24, 32), dtype=np.uint8))
    cli_main(['--root', str(root), '--out', str(tmp_path / 'png'), '--splits', 'train'])
    cli_main(['--root', str(root), '--out', str(tmp_path / 'raw'), '--splits', 'train', '--format', 'raw'])
    for name in ('train_lq.lmdb', 'train_gt.lmdb'):
        png = read_lmdb(tmp_path / 'png' / name)
        env = lmdb.open(str(tmp_path / 'raw' / name), readonly=True, lock=False)
        with env.begin() as txn:
            raw = {key.decode(): decode_frame(bytes(value), key) for key, value in txn.cursor()}
        env.close()
        assert raw.keys() == png.keys()
        assert all(raw[key].dtype == png[key].dtype and np.array_equal(raw[key], png[key]) for key in png)
    assert read_lmdb(tmp_path / 'png' / 'train_gt.lmdb')['0001_0001'].dtype == np.uint16
    assert (tmp_path / 'raw' / 'train_gt.lmdb' / 'meta_info.txt').read_text().splitlines()[0].endswith('(24,32,3) 1')
