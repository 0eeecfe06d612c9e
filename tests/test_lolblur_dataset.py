"""LOLBlurDataset: BasicSR's paired dataset on LOL-Blur folders and LMDBs, video keys, phase-3 noise."""
import random
import shutil

import cv2
import lmdb
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.registry import DATASET_REGISTRY

from jude_arch.data import lq_noise
from jude_arch.data.lolblur_dataset import LOLBlurDataset
from jude_arch.data.lolblur_lmdb import prepare_lolblur

VIDEOS, FRAMES = ('0000', '0003'), ('0000', '0001', '0002')


@pytest.fixture(scope='module')
def lolblur(tmp_path_factory):
    """A tiny LOL-Blur train split (textured 32×40 frames, LQ = GT / 2 exactly) and its LMDBs."""
    root = tmp_path_factory.mktemp('lolblur')
    rng = np.random.default_rng(0)
    for video in VIDEOS:
        for frame in FRAMES:
            gt = 2 * rng.integers(26, 102, (32, 40, 3), dtype=np.uint8)  # 0.2–0.8: no clipping of the noise
            for folder, image in (('high_sharp_scaled', gt), ('low_blur_noise', gt // 2)):
                (root / 'train' / folder / video).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / 'train' / folder / video / f'{frame}.png'), image)
    prepare_lolblur(root, root / 'lmdb', splits=['train'])
    return root


def dataset_opt(lolblur, backend='disk', **options):
    if backend == 'lmdb':
        roots = {'dataroot_lq': str(lolblur / 'lmdb/train_lq.lmdb'), 'dataroot_gt': str(lolblur / 'lmdb/train_gt.lmdb')}
    else:
        roots = {'dataroot_lq': str(lolblur / 'train/low_blur_noise'),
                 'dataroot_gt': str(lolblur / 'train/high_sharp_scaled')}
    return {'name': 'lolblur', 'type': 'LOLBlurDataset', 'phase': 'val', 'scale': 1, 'io_backend': {'type': backend},
            **roots, **options}


def test_registered_and_built_from_options(lolblur):
    assert DATASET_REGISTRY.get('LOLBlurDataset') is LOLBlurDataset
    assert isinstance(build_dataset(dataset_opt(lolblur)), LOLBlurDataset)


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_keys_name_the_video(lolblur, backend):
    dataset = build_dataset(dataset_opt(lolblur, backend))
    keys = [dataset[i]['key'] for i in range(len(dataset))]
    assert keys == [f'{video}_{frame}' for video in VIDEOS for frame in FRAMES]  # frame names repeat
    item = dataset[4]
    if backend == 'disk':
        assert item['lq_path'] == str(lolblur / 'train/low_blur_noise/0003/0001.png')
        assert item['gt_path'] == str(lolblur / 'train/high_sharp_scaled/0003/0001.png')
    else:
        assert item['lq_path'] == item['gt_path'] == '0003_0001'


def test_lmdb_and_folders_give_the_same_pairs(lolblur):
    disk, lmdb = build_dataset(dataset_opt(lolblur)), build_dataset(dataset_opt(lolblur, 'lmdb'))
    for i in range(len(disk)):
        assert torch.equal(disk[i]['lq'], lmdb[i]['lq']) and torch.equal(disk[i]['gt'], lmdb[i]['gt'])
    expected = cv2.imread(str(lolblur / 'train/high_sharp_scaled/0000/0002.png'))[..., ::-1] / 255
    np.testing.assert_allclose(disk[2]['gt'].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_same_items_as_basicsr_paired_dataset(lolblur, tmp_path):
    options = dict(phase='train', gt_size=16, use_hflip=True, use_rot=True, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    ours = build_dataset(dataset_opt(lolblur, 'lmdb', **options))
    shutil.copytree(lolblur / 'lmdb', tmp_path / 'lmdb')  # py-lmdb opens an environment once per process
    basicsr = build_dataset({**dataset_opt(tmp_path, 'lmdb', **options), 'type': 'PairedImageDataset'})
    for i in range(len(ours)):
        random.seed(i)  # BasicSR's crop and flips draw from `random`: seeded alike for both
        a = ours[i]
        random.seed(i)
        b = basicsr[i]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt']) and a['lq_path'] == b['lq_path']


def test_train_mode_crops_aligned_pairs(lolblur):
    dataset = build_dataset(dataset_opt(lolblur, 'lmdb', phase='train', gt_size=16, use_hflip=True, use_rot=True))
    for i in range(len(dataset)):
        item = dataset[i]
        assert item['lq'].shape == item['gt'].shape == (3, 16, 16)
        torch.testing.assert_close(2 * item['lq'], item['gt'], atol=1e-6, rtol=0)  # the same crop and flips


def test_noise_is_off_by_default(lolblur):
    item = build_dataset(dataset_opt(lolblur))[0]
    torch.testing.assert_close(2 * item['lq'], item['gt'], atol=1e-6, rtol=0)


def noise_draws(lolblur, n=240, **noise):
    """(clean LQ, noisy LQ, GT with noise, GT without) for n draws (cycling over the frames)."""
    clean = build_dataset(dataset_opt(lolblur))
    noisy = build_dataset(dataset_opt(lolblur, lq_noise=noise))
    torch.manual_seed(0)
    draws = []
    for i in range(n):
        a, b = clean[i % len(clean)], noisy[i % len(noisy)]
        draws.append((a['lq'], b['lq'], b['gt'], a['gt']))
    return draws


def test_gaussian_noise_sigma_in_range(lolblur):
    draws = noise_draws(lolblur, poisson_prob=0, gray_prob=0)
    sigmas = np.array([(noisy - clean).std().item() * 255 for clean, noisy, _, _ in draws])
    assert sigmas.max() <= 8 * 1.05 and sigmas.min() >= 0
    assert sigmas.min() < 0.5 and sigmas.max() > 7.5  # spread over the whole range U[0, 8]
    assert abs(sigmas.mean() - 4) < 0.5
    noise = draws[0][1] - draws[0][0]
    assert torch.corrcoef(noise.reshape(3, -1)).fill_diagonal_(0).abs().max() < 0.2  # colour noise


def test_poisson_noise_scale_in_range(lolblur):
    # BasicSR's Poisson noise: (Poisson(x·v)/v − x) · scale, v = the number of grey levels rounded up to a
    # power of 2; its variance is scale² · x / v.
    draws = noise_draws(lolblur, n=120, poisson_prob=1, gray_prob=0)
    scales = []
    for clean, noisy, _, _ in draws:
        levels = 2**np.ceil(np.log2(len(torch.unique((clean * 255).round()))))
        scales.append(((noisy - clean).pow(2).sum() / (clean / levels).sum()).sqrt().item())
    scales = np.array(scales)
    assert scales.min() > 0.1 * 0.85 and scales.max() < 1.2 * 1.1
    assert scales.min() < 0.2 and scales.max() > 1.05


@pytest.mark.parametrize('poisson_prob', [0, 1])
def test_grey_noise_is_identical_across_channels(lolblur, poisson_prob):
    for clean, noisy, _, _ in noise_draws(lolblur, n=6, poisson_prob=poisson_prob, gray_prob=1):
        unclipped = ((noisy > 0) & (noisy < 1)).all(0)
        noise = (noisy - clean)[:, unclipped]
        assert unclipped.float().mean() > 0.95 and noise.abs().max() > 0
        torch.testing.assert_close(noise[0], noise[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(noise[0], noise[2], atol=1e-6, rtol=0)


def test_noise_mix_follows_the_probabilities(lolblur, monkeypatch):
    calls = []

    def counted(name):
        original = getattr(lq_noise, name)

        def add_noise(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return add_noise

    for name in ('random_add_poisson_noise_pt', 'random_add_gaussian_noise_pt'):
        monkeypatch.setattr(lq_noise, name, counted(name))
    draws = noise_draws(lolblur, n=300)  # the released code's defaults
    assert 0.4 < calls.count('random_add_poisson_noise_pt') / len(calls) < 0.6  # poisson_prob 0.5
    grey = [torch.allclose((n - c)[0], (n - c)[1], atol=1e-6) for c, n, _, _ in draws]  # clipping aside
    assert 0.2 < np.mean(grey) < 0.4  # gray_prob 0.3


def test_noise_only_touches_lq_and_stays_in_range(lolblur):
    for clean, noisy, gt_noisy_run, gt_clean_run in noise_draws(lolblur, n=24):
        assert torch.equal(gt_noisy_run, gt_clean_run)
        assert not torch.equal(noisy, clean)
        assert noisy.min() >= 0 and noisy.max() <= 1


def test_noise_on_train_crops(lolblur):
    dataset = build_dataset(dataset_opt(lolblur, 'lmdb', phase='train', gt_size=16, use_hflip=True, use_rot=True,
                                        lq_noise={'gaussian_sigma': [8, 8], 'poisson_prob': 0}))
    item = dataset[0]
    assert item['lq'].shape == (3, 16, 16)
    assert 6 < (item['lq'] - item['gt'] / 2).std() * 255 < 10


@pytest.mark.parametrize('lq_noise, message', [
    ({'sigma': [0, 8]}, 'unknown option'),
    ({'gaussian_sigma': [8, 0]}, 'gaussian_sigma must be a range'),
    ({'gray_prob': 1.5}, 'gray_prob must lie in'),
])
def test_bad_noise_options(lolblur, lq_noise, message):
    with pytest.raises(ValueError, match=message):
        build_dataset(dataset_opt(lolblur, lq_noise=lq_noise))


def test_missing_or_wrong_dataroot_says_what_to_do(lolblur, tmp_path):
    missing = tmp_path / 'nowhere' / 'train_lq.lmdb'
    with pytest.raises(FileNotFoundError, match=f'{missing}/data.mdb: not found.*prepare_lolblur.py'):
        build_dataset({**dataset_opt(lolblur, 'lmdb'), 'dataroot_lq': str(missing)})
    with pytest.raises(ValueError, match=f'{lolblur / "train/low_blur_noise"}: io_backend is lmdb.*prepare_lolblur.py'):
        build_dataset({**dataset_opt(lolblur), 'io_backend': {'type': 'lmdb'}})
    with pytest.raises(FileNotFoundError, match=f'{tmp_path / "LOL-Blur"}: LOL-Blur folder not found.*prepare_lolblur'):
        build_dataset({**dataset_opt(lolblur), 'dataroot_gt': str(tmp_path / 'LOL-Blur')})
    with pytest.raises(ValueError, match="an LMDB, but io_backend is 'disk'"):
        build_dataset(dataset_opt(lolblur, 'lmdb') | {'io_backend': {'type': 'disk'}})


def corrupted_copy(lolblur, tmp_path):
    shutil.copytree(lolblur, tmp_path / 'copy')  # py-lmdb opens an environment once per process
    return tmp_path / 'copy'


@pytest.mark.parametrize('phase, preflight', [('val', None), ('train', None), ('train', 'off')])
def test_garbage_lmdb_value_names_the_lmdb_and_key(lolblur, tmp_path, phase, preflight):
    """Found when the set is built (a validation set is decoded whole, a training set's headers are read), or,
    with `preflight: off`, when the frame is read."""
    root = corrupted_copy(lolblur, tmp_path)
    with lmdb.open(str(root / 'lmdb/train_gt.lmdb'), map_size=2**24) as env, env.begin(write=True) as txn:
        txn.put(b'0003_0001', b'\x89PNG\r\n\x1a\n garbage')
    message = f'{root / "lmdb/train_gt.lmdb"}, key 0003_0001: not a readable image'
    opt = dataset_opt(root, 'lmdb', phase=phase, gt_size=16, **({'preflight': preflight} if preflight else {}))
    if preflight is None:
        with pytest.raises(ValueError, match=message):
            build_dataset(opt)
        return
    dataset = build_dataset(opt)
    with pytest.raises(ValueError, match=message):
        dataset[4]


def test_truncated_frame_stops_a_validation_set_when_built_and_a_training_set_when_read(lolblur, tmp_path):
    root = corrupted_copy(lolblur, tmp_path)
    frame = root / 'train/low_blur_noise/0000/0002.png'
    frame.write_bytes(frame.read_bytes()[:-200])  # the header still reads
    with pytest.raises(ValueError, match=f'{frame}: not a readable image'):
        build_dataset(dataset_opt(root))
    dataset = build_dataset(dataset_opt(root, phase='train', gt_size=16))
    with pytest.raises(ValueError, match=f'{frame}: not a readable image'):
        dataset[2]


def test_an_lmdb_frame_of_the_wrong_size_is_named_with_its_lmdb(lolblur, tmp_path):
    """A frame replaced by hand in an LMDB: its header against meta_info.txt when the set is built, its size
    against its pair's when read (`preflight: off`); both name the LMDB and the key."""
    root = corrupted_copy(lolblur, tmp_path)
    lq = root / 'lmdb/train_lq.lmdb'
    with lmdb.open(str(lq), map_size=2**24) as env, env.begin(write=True) as txn:
        txn.put(b'0003_0001', cv2.imencode('.png', np.zeros((24, 40, 3), np.uint8))[1].tobytes())
    opt = dataset_opt(root, 'lmdb', phase='train', gt_size=16)
    with pytest.raises(ValueError, match=f'{lq}, key 0003_0001: the frame is 40×24 but meta_info.txt records 40×32'):
        build_dataset(opt)
    dataset = build_dataset({**opt, 'preflight': 'off'})
    with pytest.raises(ValueError, match=f'{lq}, key 0003_0001: size 40×24 differs from its gt '
                                         f'{root / "lmdb/train_gt.lmdb"}, key 0003_0001 \\(40×32\\)'):
        dataset[4]


def test_preflight_must_be_a_known_level(lolblur):
    with pytest.raises(ValueError, match="preflight must be one of \\('decode', 'headers', 'off'\\), got 'full'"):
        build_dataset(dataset_opt(lolblur, preflight='full'))


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_size_mismatch_is_refused_when_the_dataset_is_built(lolblur, tmp_path, backend):
    root = corrupted_copy(lolblur, tmp_path)
    gt = root / 'train/high_sharp_scaled/0003/0000.png'
    cv2.imwrite(str(gt), np.zeros((30, 40, 3), np.uint8))
    if backend == 'lmdb':
        # An LMDB pair from a tool that does not compare sizes: the GT LMDB written again on its own.
        shutil.rmtree(root / 'lmdb/train_gt.lmdb')
        names = sorted(p.relative_to(root / 'train/high_sharp_scaled') for p in root.glob('train/high_sharp_scaled/*/*'))
        make_lmdb_from_imgs(str(root / 'train/high_sharp_scaled'), str(root / 'lmdb/train_gt.lmdb'),
                            [str(n) for n in names], ['_'.join(n.with_suffix('').parts) for n in names])
        message = f'{root / "lmdb/train_lq.lmdb"}: key 0003_0000 is 40×32 but .* holds it as 40×30'
    else:
        message = f'{root / "train/low_blur_noise/0003/0000.png"}: size 40×32 differs from its ground truth {gt} \\(40×30\\)'
    with pytest.raises(ValueError, match=message):
        build_dataset(dataset_opt(root, backend))


@pytest.mark.parametrize('missing', ['dataroot_lq', 'dataroot_gt', 'gt_size'])
def test_missing_option_is_named(lolblur, missing):
    opt = dataset_opt(lolblur, phase='train', gt_size=16)
    del opt[missing]
    with pytest.raises(ValueError, match=f'datasets.train: {missing} .*is missing'):
        build_dataset(opt)


@pytest.fixture(scope='module')
def raw_lmdb(lolblur):
    """The same frames packed raw (`prepare_lolblur --format raw`)."""
    prepare_lolblur(lolblur, lolblur / 'lmdb_raw', splits=['train'], frame_format='raw')
    return lolblur / 'lmdb_raw'


def raw_opt(lolblur, raw_lmdb, **options):
    return {**dataset_opt(lolblur, 'lmdb', **options), 'dataroot_lq': str(raw_lmdb / 'train_lq.lmdb'),
            'dataroot_gt': str(raw_lmdb / 'train_gt.lmdb')}


@pytest.mark.parametrize('phase', ['val', 'train'])
def test_raw_frames_give_the_items_of_png_frames(lolblur, raw_lmdb, phase):
    """Raw frames are read without decoding and cropped before they become float: the same items, bit for bit
    (training crops, flips and noise included, drawn alike)."""
    options = dict(phase=phase, gt_size=16, use_hflip=True, use_rot=True,
                   lq_noise={'poisson_prob': 0.5}) if phase == 'train' else {}
    png, raw = build_dataset(dataset_opt(lolblur, 'lmdb', **options)), build_dataset(raw_opt(lolblur, raw_lmdb,
                                                                                               **options))
    env = lmdb.open(str(raw_lmdb / 'train_lq.lmdb'), readonly=True, lock=False)
    with env.begin() as txn:
        assert all(value.startswith(b'JUDERAW1') for _, value in txn.cursor())
    env.close()
    for i in range(len(png)):
        random.seed(i), np.random.seed(i), torch.manual_seed(i)
        a = png[i]
        random.seed(i), np.random.seed(i), torch.manual_seed(i)
        b = raw[i]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt']) and a['key'] == b['key']


def test_a_damaged_raw_frame_is_named(lolblur, raw_lmdb, tmp_path):
    """A flipped pixel byte fails the frame's CRC-32, a cut frame its size; both found by the pre-flight scan."""
    for damage, message in ((lambda v: v[:-1] + bytes([v[-1] ^ 1]), 'do not match their CRC-32'),
                            (lambda v: v[:len(v) // 2], 'truncated or damaged'),
                            (lambda v: v[:12], 'cut inside its 22-byte header')):
        copy = tmp_path / f'{message[:5]}.lmdb'
        shutil.copytree(raw_lmdb / 'train_lq.lmdb', copy)
        env = lmdb.open(str(copy), map_size=1 << 26)
        with env.begin(write=True) as txn:
            txn.put(b'0003_0001', damage(txn.get(b'0003_0001')))
        env.close()
        with pytest.raises(ValueError, match=f'{copy}, key 0003_0001: .*{message}'):
            build_dataset({**raw_opt(lolblur, raw_lmdb), 'dataroot_lq': str(copy)})
