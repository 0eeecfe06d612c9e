"""`ShakeBlurDataset`: LOL-Blur-style frames made on the fly from sharp photos, with their true blur kernels.

Every item is a fresh draw of `jude_arch.data.synthesis.degrade` (random crop, camera-shake kernel, darkening in
linear light, blur, shot and read noise, 8-bit outputs), so kernel pretraining never sees the same blur twice.
"""
import random
from pathlib import Path

import numpy as np
import torch
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .image_io import ImageDataError
from .lolblur_layout import GT_FOLDER, frame_key, list_images
from .sampling import SeededDraws
from .synthesis import Degradation, _load_photo, degrade, skimage_photo_paths

# Item keys of the images, by the LOL-Blur folder they stand for.
IMAGE_KEYS = {'lq': 'low_blur_noise', 'gt': GT_FOLDER, 'low_blur': 'low_blur', 'low_sharp': 'low_sharp'}


@DATASET_REGISTRY.register()
class ShakeBlurDataset(SeededDraws, data.Dataset):
    """Dark, shaken, noisy frames synthesised from sharp photos at every access.

    Items: 'lq' (`low_blur_noise`), 'gt' (`high_sharp_scaled`), 'low_blur' (noise-free), 'low_sharp' (dark,
    sharp): 3×S×S RGB float32 in [0, 1]; 'kernel': 1×k×k float32, the true kernel zero-padded (centred) to
    `kernel_size`; 'lq_path' (the photo) and 'key'.

    Args:
        opt (dict): BasicSR dataset options:
            dataroot_gt (str): a folder of sharp photos, searched recursively (e.g. LOL-Blur's
                `train/high_sharp_scaled`), or 'skimage' (scikit-image's bundled photos).
            gt_size (int): side S of the frames.
            kernel_size (int): side the true kernels are padded to (at least the largest drawn). Default: 31.
            length (int): items per epoch. Default: 1000.
            degradation (dict): fields of `synthesis.Degradation` (parameter ranges). Default: the synthesis's.
            seed (int): validation/test items are the same draws at every pass, seeded by (seed, index).
                Training items are drawn from Python's `random`, which BasicSR seeds per worker. Default: 0.
            phase (str): 'train' or 'val' (set by BasicSR).
    """

    # Its own options (the docstring); with BasicSR's dataset and loader keys, the options check refuses others.
    OPTIONS = ('kernel_size', 'length', 'degradation', 'seed')

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        source = opt.get('dataroot_gt')
        if source is None:
            raise ValueError("ShakeBlurDataset: set dataroot_gt to a folder of sharp photos or 'skimage'")
        if str(source) == 'skimage':
            self.photos = skimage_photo_paths()
        else:
            folder = Path(source)
            if not folder.is_dir():
                raise ImageDataError(f"{folder}: dataroot_gt folder not found (a folder of sharp photos or 'skimage')")
            self.photos = [folder / name for name in list_images(folder)]
            if not self.photos:
                raise ImageDataError(f'{folder}: no images found (looked for png, jpg, jpeg, bmp, tif, tiff, webp)')
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
        self.seed = int(opt.get('seed', 0))

    def __len__(self):
        return self.length

    def draw_item(self, index):
        """One fresh draw (training: from Python's `random`, seeded per item by `SeededDraws` in training runs)."""
        if self.opt.get('phase') == 'train':
            rng = np.random.default_rng(random.getrandbits(64))
        else:
            rng = np.random.default_rng([self.seed, index])
        photo_index = int(rng.integers(len(self.photos)))
        path = self.photos[photo_index]
        photo, raw = _load_photo(path)
        images, kernel = degrade(photo, raw, self.size, self.degradation, rng)
        item = {key: img2tensor(images[folder].astype(np.float32) / 255, bgr2rgb=True, float32=True)
                for key, folder in IMAGE_KEYS.items()}
        k = kernel.shape[0]
        pad = self.kernel_size // 2 - k // 2  # centre k // 2 → kernel_size // 2, blur's convention
        padded = np.zeros((self.kernel_size, self.kernel_size), np.float32)
        padded[pad:pad + k, pad:pad + k] = kernel
        item['kernel'] = torch.from_numpy(padded)[None]
        item['lq_path'] = str(path)
        item['key'] = f'{frame_key(Path(path).name)}_{index:06d}'
        return item
