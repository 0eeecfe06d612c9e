"""`ShakeBlurDataset`: LOL-Blur-style frames made on the fly from sharp photos, with their true blur kernels.

Every item is a fresh draw of `jude_arch.data.synthesis.degrade` (random crop, camera-shake kernel, darkening in
linear light, blur, shot and read noise, 8-bit outputs), so kernel pretraining never sees the same blur twice.
The photos can come from several sources at once: folders of photos, scikit-image's bundled ones and
dead-leaves images (`dead_leaves.py`), so that an estimator learns the blur rather than a few photos.
"""
import random
from pathlib import Path

import numpy as np
import skimage
import torch
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .dead_leaves import dead_leaves
from .image_io import ImageDataError
from .lolblur_layout import GT_FOLDER, frame_key, list_images
from .sampling import SeededDraws
from .synthesis import Degradation, _load_photo, degrade, skimage_photo_paths

# Item keys of the images, by the LOL-Blur folder they stand for.
IMAGE_KEYS = {'lq': 'low_blur_noise', 'gt': GT_FOLDER, 'low_blur': 'low_blur', 'low_sharp': 'low_sharp'}
# scikit-image's other bundled photographs (greyscale scenes and textures, the stereo twin of the motorcycle):
# edges of every kind for a blur estimator, colour or not.
SKIMAGE_EXTRA = ('brick.png', 'camera.png', 'coins.png', 'grass.png', 'gravel.png', 'moon.png', 'page.png',
                 'text.png', 'motorcycle_right.png')
# The 'dead-leaves' source: this many images of this side, drawn once per dataset (seeded).
DEAD_LEAVES_COUNT, DEAD_LEAVES_SIZE = 12, 384
SOURCES = ('skimage', 'skimage-extra', 'dead-leaves')


def _source_photos(source, seed):
    """The photos of one source: a list of paths (read when drawn) or of in-memory BGR uint8 images."""
    if source == 'skimage':
        return skimage_photo_paths()
    if source == 'skimage-extra':
        folder = Path(skimage.__file__).parent / 'data'
        paths = [folder / name for name in SKIMAGE_EXTRA]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise ImageDataError(f'{folder}: scikit-image {skimage.__version__} does not bundle {missing}; '
                                 "leave 'skimage-extra' out of dataroot_gt")
        return paths
    if source == 'dead-leaves':
        return [dead_leaves(DEAD_LEAVES_SIZE, np.random.default_rng([seed, i])) for i in range(DEAD_LEAVES_COUNT)]
    folder = Path(source)
    if not folder.is_dir():
        raise ImageDataError(f'{folder}: dataroot_gt folder not found (a folder of sharp photos, or one of {SOURCES})')
    photos = [folder / name for name in list_images(folder)]
    if not photos:
        raise ImageDataError(f'{folder}: no images found (looked for png, jpg, jpeg, bmp, tif, tiff, webp)')
    return photos


def _photo(photo):
    """(RGB float64 in [0, 1], the stored pixels) of a path or an in-memory BGR uint8 image."""
    if isinstance(photo, np.ndarray):
        return photo[..., ::-1] / 255.0, photo
    return _load_photo(photo)


@DATASET_REGISTRY.register()
class ShakeBlurDataset(SeededDraws, data.Dataset):
    """Dark, shaken, noisy frames synthesised from sharp photos at every access.

    Items: 'lq' (`low_blur_noise`), 'gt' (`high_sharp_scaled`), 'low_blur' (noise-free), 'low_sharp' (dark,
    sharp): 3×S×S RGB float32 in [0, 1]; 'kernel': 1×k×k float32, the true kernel zero-padded (centred) to
    `kernel_size`; 'lq_path' (the photo) and 'key'.

    Args:
        opt (dict): BasicSR dataset options:
            dataroot_gt (str): the source of the sharp photos: a folder of photos, searched recursively (e.g.
                LOL-Blur's `train/high_sharp_scaled`), 'skimage' (scikit-image's five bundled colour photos),
                'skimage-extra' (its other photographs, `SKIMAGE_EXTRA`) or 'dead-leaves' (`DEAD_LEAVES_COUNT`
                synthetic dead-leaves images, `dead_leaves.py`).
            extra_sources (list[str]): more sources of the same kinds; every source, dataroot_gt's included, is
                drawn equally often. Default: none.
            gt_size (int): side S of the frames.
            kernel_size (int): side the true kernels are padded to (at least the largest drawn). Default: 31.
            length (int): items per epoch. Default: 1000.
            degradation (dict): fields of `synthesis.Degradation` (parameter ranges). Default: the synthesis's.
            seed (int): validation/test items are the same draws at every pass, seeded by (seed, index).
                Training items are drawn from Python's `random`, which BasicSR seeds per worker. Default: 0.
            phase (str): 'train' or 'val' (set by BasicSR).
    """

    # Its own options (the docstring); with BasicSR's dataset and loader keys, the options check refuses others.
    OPTIONS = ('kernel_size', 'length', 'degradation', 'seed', 'extra_sources')

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        if not opt.get('dataroot_gt'):
            raise ValueError(f'ShakeBlurDataset: set dataroot_gt to a folder of sharp photos or one of {SOURCES}')
        extra = opt.get('extra_sources') or []
        if isinstance(extra, str):
            raise ValueError(f'ShakeBlurDataset: extra_sources must be a list of sources, got {extra!r}')
        self.seed = int(opt.get('seed', 0))
        self.sources = [_source_photos(str(source), self.seed) for source in [opt['dataroot_gt'], *extra]]
        self.size = int(opt.get('gt_size') or 0)
        if self.size < 8:
            raise ValueError(f"ShakeBlurDataset: gt_size must be at least 8, got {opt.get('gt_size')!r}")
        self.degradation = Degradation(**(opt.get('degradation') or {}))
        self.kernel_size = int(opt.get('kernel_size', 31))
        largest = max(k for k in range(self.degradation.kernel_size[0], self.degradation.kernel_size[1] + 1) if k % 2)
        if self.kernel_size < largest:
            raise ValueError(f'ShakeBlurDataset: kernel_size {self.kernel_size} is smaller than the largest drawn '
                             f'kernel ({largest}); raise kernel_size or lower degradation.kernel_size')
        self.length = int(opt.get('length', 1000))

    def __len__(self):
        return self.length

    def draw_item(self, index):
        """One fresh draw (training: from Python's `random`, seeded per item by `SeededDraws` in training runs)."""
        if self.opt.get('phase') == 'train':
            rng = np.random.default_rng(random.getrandbits(64))
        else:
            rng = np.random.default_rng([self.seed, index])
        source = int(rng.integers(len(self.sources))) if len(self.sources) > 1 else 0
        photos = self.sources[source]
        photo_index = int(rng.integers(len(photos)))
        chosen = photos[photo_index]
        photo, raw = _photo(chosen)
        images, kernel = degrade(photo, raw, self.size, self.degradation, rng)
        item = {key: img2tensor(images[folder].astype(np.float32) / 255, bgr2rgb=True, float32=True)
                for key, folder in IMAGE_KEYS.items()}
        k = kernel.shape[0]
        pad = self.kernel_size // 2 - k // 2  # centre k // 2 → kernel_size // 2, blur's convention
        padded = np.zeros((self.kernel_size, self.kernel_size), np.float32)
        padded[pad:pad + k, pad:pad + k] = kernel
        item['kernel'] = torch.from_numpy(padded)[None]
        name = Path(chosen).name if not isinstance(chosen, np.ndarray) else f'dead_leaves_{photo_index:03d}.png'
        item['lq_path'] = str(chosen) if not isinstance(chosen, np.ndarray) else name
        item['key'] = f'{frame_key(name)}_{index:06d}'
        return item
