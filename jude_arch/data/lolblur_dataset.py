"""`LOLBlurDataset`: BasicSR's paired dataset for LOL-Blur, with keys that name the video and phase-3 noise."""
import re
from pathlib import Path

import numpy as np
import torch
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, bgr2ycbcr, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torchvision.transforms.functional import normalize

from .image_io import ImageDataError, decode_image, image_header
from .lolblur_layout import check_pair_sizes, pair_frames

# JUDE_SPEC §7 (the released code's phase-3 noise); σ in 8-bit levels, as BasicSR's noise functions take it.
LQ_NOISE_DEFAULTS = {'gaussian_sigma': (0, 8), 'poisson_scale': (0.1, 1.2), 'poisson_prob': 0.5, 'gray_prob': 0.3}
_PREPARE_HINT = 'run datasets_prep/prepare_lolblur.py to build the LMDBs'
# A line of BasicSR's meta_info.txt: `<key>.png (<h>,<w>,<c>) <compression>`.
_META_LINE = re.compile(r'^(?P<key>[^. ]+)\.\S*\s+\((?P<h>\d+),\s*(?P<w>\d+)')


def add_lq_noise(lq, gaussian_sigma=(0, 8), poisson_scale=(0.1, 1.2), poisson_prob=0.5, gray_prob=0.3):
    """Add one random draw of phase-3 sensor noise to an image (JUDE_SPEC §7).

    Poisson noise (scale ~ U[poisson_scale]) with probability `poisson_prob`, otherwise Gaussian noise
    (σ ~ U[gaussian_sigma] / 255); grey (identical in every channel) with probability `gray_prob`; the result
    is clipped to [0, 1]. BasicSR's noise functions do the drawing, on the torch random generator (seeded
    per worker by the DataLoader).

    Args:
        lq (Tensor): C×H×W image in [0, 1] (RGB when grey Poisson noise can be drawn).
        gaussian_sigma (Sequence[float]): range of the Gaussian σ, in 8-bit levels.
        poisson_scale (Sequence[float]): range of the Poisson noise scale.
        poisson_prob (float): probability of Poisson rather than Gaussian noise.
        gray_prob (float): probability of grey noise.

    Returns:
        Tensor: the noisy C×H×W image.
    """
    if torch.rand(()) < poisson_prob:
        noisy = random_add_poisson_noise_pt(lq[None], scale_range=poisson_scale, gray_prob=gray_prob, clip=True)
    else:
        noisy = random_add_gaussian_noise_pt(lq[None], sigma_range=gaussian_sigma, gray_prob=gray_prob, clip=True)
    return noisy[0]


@DATASET_REGISTRY.register()
class LOLBlurDataset(PairedImageDataset):
    """LOL-Blur pairs for BasicSR: `PairedImageDataset` plus video-aware keys and optional phase-3 noise.

    Two sources, as in `PairedImageDataset`:
    - `io_backend: {type: lmdb}`: `dataroot_lq` / `dataroot_gt` are the `.lmdb` folders written by
      `datasets_prep/prepare_lolblur.py` (keys `<video>_<frame>`).
    - `io_backend: {type: disk}`: `dataroot_lq` / `dataroot_gt` are LOL-Blur folders such as
      `train/low_blur_noise` and `train/high_sharp_scaled`; frames are found recursively and paired by
      their path below the folder (`<video>/<frame>.png`).
    Cropping (`gt_size`), `use_hflip`, `use_rot`, `color`, `mean`/`std` work as in `PairedImageDataset`
    (`meta_info_file` and `filename_tmpl` do not apply: LQ and GT frames have the same path).

    Every item also has 'key' = `<video>_<frame>` (unique across videos; frame names alone repeat), to name
    saved images by.

    `crop_to_multiple` reproduces the JUDE authors' evaluation, which crops LQ and GT to the top-left
    ⌊H/m⌋·m × ⌊W/m⌋·m region (m = 128; a 1120×640 LOL-Blur frame becomes 1024×640). It is done here, not in the
    metrics, so that the network restores the cropped frame exactly as in their test script.
    Unlike `PairedImageDataset`, nothing is used that is not what it should be: frames are decoded strictly
    (a truncated or corrupted image is an error naming its file, or its LMDB and key), GT and LQ sizes are
    checked when the dataset is built (from the file headers, or from the LMDBs' meta_info.txt) and again
    when a pair is read, so validation never crops a GT silently to its LQ.

    Args:
        opt (dict): `PairedImageDataset`'s options plus
            lq_noise (dict | None): phase-3 noise on the LQ image, added after cropping and augmentation and
                before `mean`/`std` normalisation; absent or None: off. Keys (all optional, defaults from
                JUDE_SPEC §7): gaussian_sigma [0, 8] (8-bit levels), poisson_scale [0.1, 1.2],
                poisson_prob 0.5, gray_prob 0.3.
            crop_to_multiple (int | None): crop LQ and GT to their top-left region whose height and width are
                multiples of this number (after any `gt_size` crop, before noise); absent or None: off.
    """

    def __init__(self, opt):
        super(PairedImageDataset, self).__init__()  # the parent's __init__ would scan the folders flat
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = opt['io_backend']
        # Normalisation happens here, after the noise; the parent's __getitem__ must not do it.
        self.norm_mean, self.norm_std = opt.get('mean'), opt.get('std')
        self.mean = self.std = None
        self.lq_noise = self._parse_noise(opt.get('lq_noise'))
        self.crop_to_multiple = opt.get('crop_to_multiple')
        if self.crop_to_multiple is not None and not (
                isinstance(self.crop_to_multiple, int) and not isinstance(self.crop_to_multiple, bool)
                and self.crop_to_multiple > 0):
            raise ValueError(f'crop_to_multiple must be a positive integer (e.g. 128) or absent, '
                             f'got {self.crop_to_multiple!r}')
        if self.lq_noise is not None and opt.get('color') == 'y':
            raise ValueError('lq_noise is drawn on RGB images; it cannot be combined with color: y')
        if opt.get('meta_info_file') is not None:
            raise ValueError('meta_info_file is not used by LOLBlurDataset (it pairs frames by their path below '
                             'the folders); remove it')
        for key in ('dataroot_lq', 'dataroot_gt'):
            if not opt.get(key):
                raise ValueError(f'datasets.{opt.get("phase", opt.get("name"))}: {key} is missing; set it to the LQ or '
                                 'GT LMDB (or LOL-Blur folder)')
        if opt.get('phase') == 'train' and not opt.get('gt_size'):
            raise ValueError('datasets.train: gt_size (the training crop, e.g. 256) is missing')
        if opt.get('scale', 1) != 1:
            raise ValueError(f'LOLBlurDataset pairs frames of the same size: scale must be 1, got {opt["scale"]}')
        self.gt_folder, self.lq_folder = opt['dataroot_gt'], opt['dataroot_lq']
        self.lmdb = self.io_backend_opt['type'] == 'lmdb'
        if self.lmdb:
            for folder in (self.lq_folder, self.gt_folder):
                self._check_lmdb(folder)
            self.io_backend_opt['db_paths'] = [self.lq_folder, self.gt_folder]
            self.io_backend_opt['client_keys'] = ['lq', 'gt']
            self.paths = paired_paths_from_lmdb([self.lq_folder, self.gt_folder], ['lq', 'gt'])
            for path in self.paths:
                path['key'] = path['lq_path']
            self._check_lmdb_sizes()
        else:
            for folder in (self.lq_folder, self.gt_folder):
                if str(folder).endswith('.lmdb'):
                    raise ValueError(f'{folder}: an LMDB, but io_backend is {self.io_backend_opt["type"]!r}; '
                                     'set io_backend: {type: lmdb}')
                if not Path(folder).is_dir():
                    raise FileNotFoundError(f'{folder}: LOL-Blur folder not found; point dataroot_lq/dataroot_gt at '
                                            f'e.g. LOL-Blur/train/low_blur_noise and .../high_sharp_scaled, or '
                                            f'{_PREPARE_HINT} and use io_backend lmdb')
            pairs = pair_frames(self.lq_folder, self.gt_folder)
            lq_paths, gt_paths = [lq for _, lq, _ in pairs], [gt for _, _, gt in pairs]
            check_pair_sizes(lq_paths, gt_paths, [image_header(path) for path in lq_paths + gt_paths])
            self.paths = [{'lq_path': str(lq), 'gt_path': str(gt), 'key': key} for key, lq, gt in pairs]

    @staticmethod
    def _check_lmdb(folder):
        if not str(folder).endswith('.lmdb'):
            raise ValueError(f'{folder}: io_backend is lmdb but this is not an .lmdb folder; {_PREPARE_HINT} '
                             'or use io_backend: {type: disk} with LOL-Blur folders')
        for name in ('data.mdb', 'meta_info.txt'):
            if not (Path(folder) / name).is_file():
                raise FileNotFoundError(f'{Path(folder) / name}: not found, {folder} is not a complete LMDB; '
                                        f'{_PREPARE_HINT}')

    def _check_lmdb_sizes(self):
        """GT and LQ sizes from the LMDBs' meta_info.txt (BasicSR's LMDB tools record every shape)."""
        shapes = []
        for folder in (self.lq_folder, self.gt_folder):
            lines = (Path(folder) / 'meta_info.txt').read_text().splitlines()
            shapes.append({m['key']: (int(m['w']), int(m['h'])) for m in map(_META_LINE.match, lines) if m})
        for key, lq_size in shapes[0].items():
            gt_size = shapes[1].get(key)
            if gt_size is not None and gt_size != lq_size:
                raise ImageDataError(f'{self.lq_folder}: key {key} is {lq_size[0]}×{lq_size[1]} but {self.gt_folder} '
                                     f'holds it as {gt_size[0]}×{gt_size[1]}; rebuild the LMDBs with '
                                     'datasets_prep/prepare_lolblur.py')

    def _read(self, path, client_key):
        """Read and strictly decode one frame as float32 BGR in [0, 1]; errors name the file or LMDB key."""
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend_opt.pop('type'), **self.io_backend_opt)
        name = f'{self.opt[f"dataroot_{client_key}"]}, key {path}' if self.lmdb else path
        try:
            data = self.file_client.get(path, client_key)
        except OSError as error:
            raise ImageDataError(f'{name}: cannot be read ({error})') from None
        if data is None:  # an LMDB without this key
            raise ImageDataError(f'{name}: no such key in the LMDB; rebuild it with datasets_prep/prepare_lolblur.py')
        image = decode_image(bytes(data), name)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        elif image.shape[2] == 4:  # BGRA: the alpha channel is not part of the scene
            image = image[..., :3]
        return image.astype(np.float32) / np.iinfo(image.dtype).max

    @staticmethod
    def _parse_noise(options):
        if options is None:
            return None
        unknown = set(options) - set(LQ_NOISE_DEFAULTS)
        if unknown:
            raise ValueError(f'lq_noise: unknown option(s) {sorted(unknown)}; known: {sorted(LQ_NOISE_DEFAULTS)}')
        noise = {**LQ_NOISE_DEFAULTS, **options}
        for name in ('gaussian_sigma', 'poisson_scale'):
            low, high = noise[name]
            if not 0 <= low <= high:
                raise ValueError(f'lq_noise.{name} must be a range [low, high] with 0 ≤ low ≤ high, got {noise[name]}')
        for name in ('poisson_prob', 'gray_prob'):
            if not 0 <= noise[name] <= 1:
                raise ValueError(f'lq_noise.{name} must lie in [0, 1], got {noise[name]}')
        return noise

    def _crop_top_left(self, item):
        """Crop item's LQ and GT to the top-left region whose sides are multiples of `crop_to_multiple`."""
        multiple = self.crop_to_multiple
        height, width = item['lq'].shape[-2:]
        crop_h, crop_w = height // multiple * multiple, width // multiple * multiple
        if not crop_h or not crop_w:
            raise ValueError(f"{item['lq_path']}: a {width}×{height} frame has no {multiple}×{multiple} region to "
                             f'keep (crop_to_multiple: {multiple}); lower crop_to_multiple or remove it')
        scale = self.opt.get('scale', 1)
        item['lq'] = item['lq'][..., :crop_h, :crop_w]
        item['gt'] = item['gt'][..., :crop_h * scale, :crop_w * scale]

    def __getitem__(self, index):
        """`PairedImageDataset.__getitem__` with strict decoding and checked sizes, then the crop to a multiple,
        noise and normalisation."""
        gt_path, lq_path = self.paths[index]['gt_path'], self.paths[index]['lq_path']
        img_gt, img_lq = self._read(gt_path, 'gt'), self._read(lq_path, 'lq')
        if img_gt.shape[:2] != img_lq.shape[:2]:
            raise ImageDataError(f'{lq_path}: size {img_lq.shape[1]}×{img_lq.shape[0]} differs from its ground truth '
                                 f'{gt_path} ({img_gt.shape[1]}×{img_gt.shape[0]})')
        if self.opt['phase'] == 'train':
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, self.opt['gt_size'], 1, gt_path)
            img_gt, img_lq = augment([img_gt, img_lq], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        item = {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
        if self.crop_to_multiple is not None:
            self._crop_top_left(item)
        if self.lq_noise is not None:
            item['lq'] = add_lq_noise(item['lq'], **self.lq_noise)
        if self.norm_mean is not None or self.norm_std is not None:
            normalize(item['lq'], self.norm_mean, self.norm_std, inplace=True)
            normalize(item['gt'], self.norm_mean, self.norm_std, inplace=True)
        item['key'] = self.paths[index]['key']
        return item
