"""Data for JUDE's physics: LOLBlurDataset's low_sharp / low_blur / kernel extras, and ShakeBlurDataset."""
import random

import numpy as np
import pytest
import torch
from basicsr.data import build_dataset

from jude_arch.data.lolblur_lmdb import prepare_lolblur
from jude_arch.physics import reblur_psnr
from training_helpers import tiny_lolblur


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """The tiny synthetic LOL-Blur (64×64 frames, kernels recorded) plus an LMDB of its low_sharp frames."""
    root = tiny_lolblur(tmp_path_factory)
    if not (root / 'lmdb_low_sharp').exists():
        prepare_lolblur(root / 'lolblur', root / 'lmdb_low_sharp', lq='low_sharp', splits=['train'])
    return root


def extras_opt(data, backend, **options):
    split = data / 'lolblur' / 'train'
    if backend == 'lmdb':
        roots = {'dataroot_lq': str(data / 'lmdb/train_lq.lmdb'), 'dataroot_gt': str(data / 'lmdb/train_gt.lmdb'),
                 'dataroot_low_sharp': str(data / 'lmdb_low_sharp/train_lq.lmdb')}
    else:
        roots = {'dataroot_lq': str(split / 'low_blur_noise'), 'dataroot_gt': str(split / 'high_sharp_scaled'),
                 'dataroot_low_sharp': str(split / 'low_sharp'), 'dataroot_low_blur': str(split / 'low_blur')}
    return {'name': 'extras', 'type': 'LOLBlurDataset', 'phase': 'val', 'scale': 1, 'io_backend': {'type': backend},
            'dataroot_kernel': str(split / 'kernels'), **roots, **options}


def _transforms(image):
    """The 8 results of BasicSR's augment (hflip, vflip, transpose) of an H×W×C array, with their flags."""
    for hflip in (False, True):
        for vflip in (False, True):
            for rot90 in (False, True):
                out = image[:, ::-1] if hflip else image
                out = out[::-1] if vflip else out
                yield (hflip, vflip, rot90), (out.transpose(1, 0, 2) if rot90 else out)


def _locate(crop, full):
    """(transform flags, top, left) with crop == transform(full)[top:, left:] (HWC arrays)."""
    size = crop.shape[0]
    for flags, image in _transforms(full):
        for top in range(image.shape[0] - size + 1):
            for left in range(image.shape[1] - size + 1):
                if np.array_equal(image[top:top + size, left:left + size], crop):
                    return flags, top, left
    raise AssertionError('crop not found in the frame under any flip/rotation')


def _hwc(tensor):
    return tensor.permute(1, 2, 0).numpy()


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_extras_are_cropped_flipped_and_rotated_with_lq_and_gt(data, backend):
    options = dict(phase='train', gt_size=32, use_hflip=True, use_rot=True)
    train = build_dataset(extras_opt(data, backend, **options))
    full = build_dataset(extras_opt(data, 'disk'))  # whole frames (py-lmdb opens an LMDB once per process)
    seen = set()
    for seed in range(12):
        random.seed(seed)
        index = seed % len(train)
        item, frame = train[index], full[index]
        assert item['key'] == frame['key']
        flags, top, left = _locate(_hwc(item['gt']), _hwc(frame['gt']))
        seen.add(flags)
        names = ['lq', 'low_sharp'] + (['low_blur'] if backend == 'disk' else [])
        for name in names:
            expected = dict(_transforms(_hwc(frame[name])))[flags][top:top + 32, left:left + 32]
            np.testing.assert_array_equal(_hwc(item[name]), expected, err_msg=f'{name} not aligned with gt')
        # The kernel went through the same flips, so it still blurs the item's low_sharp into its low_blur.
        expected = dict(_transforms(frame['kernel'].permute(1, 2, 0).numpy()))[flags]
        np.testing.assert_array_equal(item['kernel'][0].numpy(), expected[..., 0])
    assert len(seen) >= 4  # several different flips/rotations were exercised


def test_augmented_kernels_still_blur_low_sharp_into_low_blur(data):
    """blur(T(sharp), T(k)) = T(blur(sharp, k)): the flipped kernel explains the flipped crop, the original does not.

    Video 0001 (scikit-image's cat) has no light sources, so low_sharp is not clipped and the true kernel
    explains low_blur up to the 8-bit rounding."""
    train = build_dataset(extras_opt(data, 'disk', phase='train', gt_size=48, use_hflip=True, use_rot=True))
    frames = build_dataset(extras_opt(data, 'disk'))
    indices = [i for i, path in enumerate(train.paths) if path['key'].startswith('0001_')]
    changed = 0
    for seed in range(8):
        random.seed(seed)
        index = indices[seed % len(indices)]
        item, original = train[index], frames[index]['kernel']
        sharp, blurred = item['low_sharp'][None], item['low_blur'][None]
        good = reblur_psnr(sharp, item['kernel'][None], blurred).item()
        assert good > 45
        if not torch.equal(item['kernel'], original):
            changed += 1
            assert good > reblur_psnr(sharp, original[None], blurred).item() + 5
    assert changed >= 4


def test_true_kernels_explain_the_full_frames(data):
    dataset = build_dataset(extras_opt(data, 'disk'))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item['kernel'].shape == (1, 31, 31) and item['kernel'].sum().item() == pytest.approx(1, abs=1e-5)
        good = reblur_psnr(item['low_sharp'][None], item['kernel'][None], item['low_blur'][None]).item()
        wrong = reblur_psnr(item['low_sharp'][None], item['kernel'].transpose(-2, -1)[None],
                            item['low_blur'][None]).item()
        # Light sources are clipped in low_sharp, not in the blur: frames that have them match less closely.
        assert good > 25 and good > wrong + 1, (item['key'], good, wrong)


def test_without_extras_the_items_are_unchanged(data):
    options = dict(phase='train', gt_size=32, use_hflip=True, use_rot=True)
    plain = build_dataset({**extras_opt(data, 'disk', **options), 'dataroot_low_sharp': None,
                           'dataroot_low_blur': None, 'dataroot_kernel': None})
    extras = build_dataset(extras_opt(data, 'disk', **options))
    for seed in range(4):
        random.seed(seed)
        a = plain[seed]
        random.seed(seed)
        b = extras[seed]
        assert set(a) == {'lq', 'gt', 'lq_path', 'gt_path', 'key'}
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])  # the same random crops


@pytest.mark.parametrize('change, message', [
    ({'dataroot_low_sharp': 'missing'}, 'missing: folder not found'),
    ({'dataroot_kernel': 'missing'}, 'missing: dataroot_kernel folder not found'),
    ({'kernel_size': 32}, 'kernel_size must be an odd integer'),
    ({'mean': [0.5] * 3}, 'cannot be combined with color: y or mean/std'),
])
def test_bad_extras_are_clear_errors(data, tmp_path, change, message):
    opt = extras_opt(data, 'disk', **change)
    for key, value in change.items():
        if value == 'missing':
            opt[key] = str(tmp_path / 'missing')
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_dataset(opt)


def test_kernels_of_another_split_are_refused(data):
    opt = extras_opt(data, 'disk', dataroot_kernel=str(data / 'lolblur' / 'test' / 'kernels'))
    with pytest.raises(FileNotFoundError, match='no kernel 0000_0000.npy for 6 of the 6 frames'):
        build_dataset(opt)


def shake_opt(**options):
    return {'name': 'shake', 'type': 'ShakeBlurDataset', 'phase': 'val', 'scale': 1, 'dataroot_gt': 'skimage',
            'gt_size': 48, 'kernel_size': 25, 'length': 6, **options,
            # Light sources at the saturation level: low_sharp is not clipped, the true kernel explains low_blur.
            'degradation': {'kernel_size': [9, 15], 'highlight_gain': [1, 1], **options.get('degradation', {})}}


def test_shake_blur_items_follow_the_physics():
    dataset = build_dataset(shake_opt())
    assert len(dataset) == 6
    for index in range(3):
        item = dataset[index]
        for key in ('lq', 'gt', 'low_blur', 'low_sharp'):
            assert item[key].shape == (3, 48, 48) and 0 <= item[key].min() and item[key].max() <= 1
        kernel = item['kernel']
        assert kernel.shape == (1, 25, 25) and kernel.sum().item() == pytest.approx(1, abs=1e-5)
        good = reblur_psnr(item['low_sharp'][None], kernel[None], item['low_blur'][None]).item()
        assert good > 45
        box = torch.nn.functional.pad(torch.full((1, 1, 15, 15), 1 / 225), (5, 5, 5, 5))
        assert good > 5 + reblur_psnr(item['low_sharp'][None], box, item['low_blur'][None]).item()
        assert item['low_sharp'].mean() < 0.6 * item['gt'].mean()  # darkened
    # Validation draws are the same at every pass; training draws are fresh.
    assert torch.equal(dataset[1]['lq'], build_dataset(shake_opt())[1]['lq'])
    train = build_dataset(shake_opt(phase='train'))
    assert not torch.equal(train[1]['lq'], train[1]['lq'])


@pytest.mark.parametrize('change, message', [
    ({'dataroot_gt': '/nonexistent/photos'}, 'dataroot_gt folder not found'),
    ({'gt_size': None}, 'gt_size must be at least 8'),
    ({'kernel_size': 11}, 'kernel_size 11 is smaller than the largest drawn kernel'),
    ({'degradation': {'exposure': [0.5, 0.1]}}, 'exposure must be a range'),
    ({'extra_sources': 'dead-leaves'}, 'extra_sources must be a list'),
    ({'extra_sources': ['/nonexistent/more']}, 'dataroot_gt folder not found'),
])
def test_shake_blur_bad_options(change, message):
    with pytest.raises(ValueError, match=message):
        build_dataset(shake_opt(**change))


def test_shake_blur_draws_from_every_listed_source(monkeypatch):
    """Photos, scikit-image's other photographs and dead-leaves images: each source drawn, each item physical."""
    from jude_arch.data import shake_blur_dataset
    monkeypatch.setattr(shake_blur_dataset, 'DEAD_LEAVES_COUNT', 2)  # two small ones keep the test quick
    monkeypatch.setattr(shake_blur_dataset, 'DEAD_LEAVES_SIZE', 96)
    dataset = build_dataset(shake_opt(extra_sources=['skimage-extra', 'dead-leaves'], length=30))
    names = {dataset[i]['lq_path'].split('/')[-1] for i in range(30)}
    assert names & set(shake_blur_dataset.SKIMAGE_EXTRA)
    assert names & {'dead_leaves_000.png', 'dead_leaves_001.png'}
    assert names & {'astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'rocket.jpg'}
    for index in range(6):
        item = dataset[index]
        assert reblur_psnr(item['low_sharp'][None], item['kernel'][None], item['low_blur'][None]).item() > 45
    # Without extra sources the draws are as they always were: the same validation frames.
    assert torch.equal(build_dataset(shake_opt(extra_sources=[]))[3]['lq'], build_dataset(shake_opt())[3]['lq'])


def test_dead_leaves_images_are_seeded_and_cover_the_frame():
    from jude_arch.data.dead_leaves import dead_leaves
    image = dead_leaves(96, np.random.default_rng(0))
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, dead_leaves(96, np.random.default_rng(0)))
    assert not np.array_equal(image, dead_leaves(96, np.random.default_rng(1)))
    # Discs of many sizes and colours: many distinct colours, edges everywhere.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200
    edges = np.abs(np.diff(image.astype(float), axis=1)).max(2) > 20
    assert edges.mean() > 0.05 and edges[:48].any() and edges[48:].any()
