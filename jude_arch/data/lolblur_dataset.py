"""`LOLBlurDataset`: BasicSR's paired dataset for LOL-Blur, with keys that name the video and phase-3 noise."""
import copy
import re
from pathlib import Path

import numpy as np
import torch
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, bgr2ycbcr, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torchvision.transforms.functional import normalize

from .image_io import ImageDataError, decode_frame
from .lolblur_layout import frame_key, pair_frames
from .lq_noise import add_lq_noise, parse_lq_noise
from .preflight import check_file_frames, check_lmdb_frames, preflight_mode
from .sampling import SeededDraws

_PREPARE_HINT = 'run datasets_prep/prepare_lolblur.py to build the LMDBs'
# A line of BasicSR's meta_info.txt: `<key>.png (<h>,<w>,<c>) <compression>`.
_META_LINE = re.compile(r'^(?P<key>[^. ]+)\.\S*\s+\((?P<h>\d+),\s*(?P<w>\d+)')
# Optional images read, cropped and augmented with lq/gt, for the physics losses and metrics (dataroot_<name>).
EXTRA_IMAGES = ('low_sharp', 'low_blur')


@DATASET_REGISTRY.register()
class LOLBlurDataset(SeededDraws, PairedImageDataset):
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
    saved images by. In training, each item's random crop, flips and noise are drawn with its own seed
    (`jude_arch.data.sampling`), so that a resumed run sees exactly the data of an uninterrupted one.

    `crop_to_multiple` reproduces the JUDE authors' evaluation, which crops LQ and GT to the top-left
    ⌊H/m⌋·m × ⌊W/m⌋·m region (m = 128; a 1120×640 LOL-Blur frame becomes 1024×640). It is done here, not in the
    metrics, so that the network restores the cropped frame exactly as in their test script.
    Unlike `PairedImageDataset`, nothing is used that is not what it should be: frames are decoded strictly
    (a truncated or corrupted image is an error naming its file, or its LMDB and key), and checked when the
    dataset is built (`preflight`, `jude_arch.data.preflight`: validation sets decoded whole, other sets' sizes
    read from every frame's header and compared with its pair's and with the LMDB's meta_info.txt) and again
    when a pair is read, so that a bad frame stops a run before it starts and validation never crops a GT
    silently to its LQ.
    For JUDE's physics (auxiliary losses, kernel metrics) an item can also carry, cropped, flipped and rotated
    with lq/gt: 'low_sharp' (the dark sharp frame) and 'low_blur' (the noise-free blurred one), from folders or
    LMDBs of the same frames (same backend as lq/gt; `prepare_lolblur.py --lq low_sharp` packs one), and
    'kernel', the true blur kernel (synthetic data: `kernels/<video>/<frame>.npy`, always read from disk),
    flipped and transposed like the images, so it still blurs low_sharp into low_blur.

    Args:
        opt (dict): `PairedImageDataset`'s options plus
            lq_noise (dict | None): phase-3 noise on the LQ image, added after cropping and augmentation and
                before `mean`/`std` normalisation; absent or None: off. Keys (all optional, defaults from
                the released code): gaussian_sigma [0, 8] (8-bit levels), poisson_scale [0.1, 1.2],
                poisson_prob 0.5, gray_prob 0.3.
            crop_to_multiple (int | None): crop LQ and GT to their top-left region whose height and width are
                multiples of this number (after any `gt_size` crop, before noise); absent or None: off.
            dataroot_low_sharp, dataroot_low_blur (str | None): the extra images' folders or LMDBs.
            dataroot_kernel (str | None): folder of the true kernels (`.npy`, `<video>/<frame>.npy`).
            kernel_size (int): odd side the true kernels are zero-padded to, centred (they are batched). Default: 31.
            preflight (str): what is checked of every frame when the dataset is built: 'decode' (the default for
                validation sets), 'headers' (the default for training and test sets) or 'off' (huge sets on
                slow storage); see `jude_arch.data.preflight`.
    """

    # The options read here on top of PairedImageDataset's (the docstring); the options check refuses others.
    OPTIONS = ('lq_noise', 'crop_to_multiple', 'dataroot_kernel', 'kernel_size', 'preflight') + tuple(
        f'dataroot_{name}' for name in EXTRA_IMAGES)

    def __init__(self, opt, preflight=None):
        """`preflight` overrides the option (the first-frame probe of training builds the set without a scan)."""
        super(PairedImageDataset, self).__init__()  # the parent's __init__ would scan the folders flat
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = opt['io_backend']
        # Normalisation happens here, after the noise; the parent's __getitem__ must not do it.
        self.norm_mean, self.norm_std = opt.get('mean'), opt.get('std')
        self.mean = self.std = None
        self.lq_noise = parse_lq_noise(opt.get('lq_noise'))
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
            self.recorded_sizes = {'lq': self._lmdb_sizes(self.lq_folder), 'gt': self._lmdb_sizes(self.gt_folder)}
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
            self.paths = [{'lq_path': str(lq), 'gt_path': str(gt), 'key': key} for key, lq, gt in pairs]
        self._init_extras(opt)
        self._preflight(preflight or preflight_mode(opt))

    def _preflight(self, mode):
        """Check every frame (lq, gt and the extras) at level `mode` (`jude_arch.data.preflight`). Validation sets
        are decoded by the first process only: the others never validate."""
        from basicsr.utils.dist_util import get_dist_info

        if mode == 'decode' and get_dist_info()[0] != 0:
            mode = 'headers'
        if mode == 'off':
            return
        clients = ['lq', 'gt', *self.extras]
        if self.lmdb:
            folders = {client: self.opt[f'dataroot_{client}'] for client in clients}
            check_lmdb_frames([path['key'] for path in self.paths], folders, self.recorded_sizes, mode)
        else:
            check_file_frames([(path['key'], {client: path[f'{client}_path'] for client in clients})
                               for path in self.paths], mode)

    def close(self):
        """Close the LMDBs this dataset opened (py-lmdb opens an LMDB once per process; see `first_input`)."""
        backend = getattr(self.file_client, 'client', None)
        for env in getattr(backend, '_client', {}).values():
            env.close()
        self.file_client = None

    @classmethod
    def first_input(cls, opt):
        """The first frame's LQ as validation feeds it to the network (1×C×H×W) and its key; the dataset is built
        without a scan and closed again. The model checks with it that a checkpoint restores an image."""
        dataset = cls(copy.deepcopy(opt), preflight='off')
        try:
            item = dataset[0]
        finally:
            dataset.close()
        return item['lq'][None], item['key']

    def _init_extras(self, opt):
        """Find every pair's extra images and true kernel, when their dataroots are given."""
        self.extras = [name for name in EXTRA_IMAGES if opt.get(f'dataroot_{name}')]
        self.kernel_size = opt.get('kernel_size', 31)
        self.kernel_paths = None
        if not self.extras and not opt.get('dataroot_kernel'):
            return
        if opt.get('color') == 'y' or self.norm_mean is not None or self.norm_std is not None:
            raise ValueError('dataroot_low_sharp / dataroot_low_blur / dataroot_kernel are for RGB images in [0, 1]; '
                             'they cannot be combined with color: y or mean/std')
        keys = [path['key'] for path in self.paths]
        for name in self.extras:
            folder = opt[f'dataroot_{name}']
            if self.io_backend_opt['type'] == 'lmdb':
                self._check_lmdb(folder)
                self.io_backend_opt['db_paths'].append(folder)
                self.io_backend_opt['client_keys'].append(name)
                found = self.recorded_sizes[name] = self._lmdb_sizes(folder)
            else:
                found = {key: str(path) for key, path, _ in pair_frames(folder, self.gt_folder)}
            missing = [key for key in keys if key not in found]
            if missing:
                raise FileNotFoundError(f'{folder}: no frame {missing[0]} (dataroot_{name} lacks {len(missing)} of the '
                                        f'{len(keys)} frames of {self.lq_folder})')
            for path in self.paths:
                path[f'{name}_path'] = path['key'] if self.io_backend_opt['type'] == 'lmdb' else found[path['key']]
        if opt.get('dataroot_kernel'):
            folder = Path(opt['dataroot_kernel'])
            if not folder.is_dir():
                raise FileNotFoundError(f'{folder}: dataroot_kernel folder not found (the synthesis writes '
                                        '<split>/kernels/<video>/<frame>.npy)')
            if not isinstance(self.kernel_size, int) or self.kernel_size % 2 == 0:
                raise ValueError(f'kernel_size must be an odd integer (kernels stay centred), got {self.kernel_size!r}')
            found = {frame_key(path.relative_to(folder)): path for path in folder.rglob('*.npy')}
            missing = [key for key in keys if key not in found]
            if missing:
                raise FileNotFoundError(f'{folder}: no kernel {missing[0]}.npy for {len(missing)} of the {len(keys)} '
                                        'frames; point dataroot_kernel at the kernels of the same split')
            self.kernel_paths = [found[key] for key in keys]

    @staticmethod
    def _check_lmdb(folder):
        if not str(folder).endswith('.lmdb'):
            raise ValueError(f'{folder}: io_backend is lmdb but this is not an .lmdb folder; {_PREPARE_HINT} '
                             'or use io_backend: {type: disk} with LOL-Blur folders')
        for name in ('data.mdb', 'meta_info.txt'):
            if not (Path(folder) / name).is_file():
                raise FileNotFoundError(f'{Path(folder) / name}: not found, {folder} is not a complete LMDB; '
                                        f'{_PREPARE_HINT}')

    @staticmethod
    def _lmdb_sizes(folder):
        """{key: (width, height)} of an LMDB's frames from its meta_info.txt (BasicSR's LMDB tools record every
        shape)."""
        lines = (Path(folder) / 'meta_info.txt').read_text().splitlines()
        return {m['key']: (int(m['w']), int(m['h'])) for m in map(_META_LINE.match, lines) if m}

    def _check_lmdb_sizes(self):
        """GT and LQ sizes as the LMDBs' meta_info.txt records them."""
        for key, lq_size in self.recorded_sizes['lq'].items():
            gt_size = self.recorded_sizes['gt'].get(key)
            if gt_size is not None and gt_size != lq_size:
                raise ImageDataError(f'{self.lq_folder}: key {key} is {lq_size[0]}×{lq_size[1]} but {self.gt_folder} '
                                     f'holds it as {gt_size[0]}×{gt_size[1]}; rebuild the LMDBs with '
                                     'datasets_prep/prepare_lolblur.py')

    def _read(self, path, client_key):
        """Read and strictly decode one frame, BGR, as stored (uint8 or uint16: cropped before it becomes float, so
        that a raw frame costs only its crop); errors name the file or LMDB key."""
        if self.file_client is None:
            options = dict(self.io_backend_opt)
            self.file_client = FileClient(options.pop('type'), **options)
        name = self._frame_name(path, client_key)
        try:
            data = self.file_client.get(path, client_key)
        except OSError as error:
            raise ImageDataError(f'{name}: cannot be read ({error})') from None
        if data is None:  # an LMDB without this key
            raise ImageDataError(f'{name}: no such key in the LMDB; rebuild it with datasets_prep/prepare_lolblur.py')
        image = decode_frame(data if isinstance(data, bytes) else bytes(data), name)
        if image.ndim == 2:
            image = image[..., None]
        elif image.shape[2] == 4:  # BGRA: the alpha channel is not part of the scene
            image = image[..., :3]
        return image

    @staticmethod
    def _to_float(image):
        """A frame as read (`_read`, cropped or not) as float32 BGR in [0, 1], three channels."""
        converted = image.astype(np.float32) / np.iinfo(image.dtype).max
        return np.repeat(converted, 3, axis=2) if converted.shape[2] == 1 else converted

    def _frame_name(self, path, client_key):
        """How errors name a frame: its file, or its LMDB and key."""
        return f'{self.opt[f"dataroot_{client_key}"]}, key {path}' if self.lmdb else path

    def _crop_top_left(self, item):
        """Crop item's images (LQ, GT and extras) to the top-left region whose sides are multiples of
        `crop_to_multiple`."""
        multiple = self.crop_to_multiple
        height, width = item['lq'].shape[-2:]
        crop_h, crop_w = height // multiple * multiple, width // multiple * multiple
        if not crop_h or not crop_w:
            raise ValueError(f"{item['lq_path']}: a {width}×{height} frame has no {multiple}×{multiple} region to "
                             f'keep (crop_to_multiple: {multiple}); lower crop_to_multiple or remove it')
        for name in ('lq', 'gt', *self.extras):
            item[name] = item[name][..., :crop_h, :crop_w]

    def draw_item(self, index):
        """Strictly decoded frames with checked sizes (and the extras and true kernel when configured), cropped and
        augmented together, then the crop to a multiple, noise and normalisation."""
        item = self._read_item(index)
        if self.crop_to_multiple is not None:
            self._crop_top_left(item)
        if self.lq_noise is not None:
            item['lq'] = add_lq_noise(item['lq'], **self.lq_noise)
        if self.norm_mean is not None or self.norm_std is not None:
            normalize(item['lq'], self.norm_mean, self.norm_std, inplace=True)
            normalize(item['gt'], self.norm_mean, self.norm_std, inplace=True)
        item['key'] = self.paths[index]['key']
        return item

    def _read_item(self, index):
        """`PairedImageDataset.__getitem__` with strict decoding and checked sizes, plus the extra images cropped
        and augmented like gt and the true kernel flipped and transposed like the images. The random draws are
        those of lq/gt alone, so extras never change the lq/gt crops."""
        paths = self.paths[index]
        names = ['gt', *self.extras]
        images = [self._read(paths[f'{name}_path'], name) for name in names]
        lq = self._read(paths['lq_path'], 'lq')
        for name, image in zip(names, images):
            if image.shape[:2] != lq.shape[:2]:
                raise ImageDataError(f"{self._frame_name(paths['lq_path'], 'lq')}: size {lq.shape[1]}×{lq.shape[0]} "
                                     f"differs from its {name} {self._frame_name(paths[f'{name}_path'], name)} "
                                     f'({image.shape[1]}×{image.shape[0]})')
        kernel = self._kernel(index) if self.kernel_paths else None
        if self.opt['phase'] == 'train':
            images, lq = paired_random_crop(images, lq, self.opt['gt_size'], 1, paths['gt_path'])
            images = images if isinstance(images, list) else [images]
        images, lq = [self._to_float(image) for image in images], self._to_float(lq)
        if self.opt['phase'] == 'train':
            augmented, (hflip, vflip, rot90) = augment([*images, lq], self.opt.get('use_hflip', False),
                                                       self.opt.get('use_rot', False), return_status=True)
            *images, lq = augmented
            if kernel is not None:
                # blur(T(sharp), T(k)) = T(blur(sharp, k)) for these T, with an odd kernel centred on its grid.
                kernel = kernel[:, ::-1] if hflip else kernel
                kernel = kernel[::-1] if vflip else kernel
                kernel = kernel.T if rot90 else kernel
        if self.opt.get('color') == 'y':  # extras are refused with color: y (`_init_extras`)
            images = [bgr2ycbcr(image, y_only=True)[..., None] for image in images]
            lq = bgr2ycbcr(lq, y_only=True)[..., None]
        tensors = img2tensor([*images, lq], bgr2rgb=True, float32=True)
        item = dict(zip(names, tensors[:-1]), lq=tensors[-1], lq_path=paths['lq_path'], gt_path=paths['gt_path'])
        if kernel is not None:
            item['kernel'] = torch.from_numpy(np.ascontiguousarray(kernel, np.float32))[None]
        return item

    def _kernel(self, index):
        path = self.kernel_paths[index]
        kernel = np.load(path)
        k = kernel.shape[0]
        if kernel.ndim != 2 or kernel.shape[1] != k or k % 2 == 0 or k > self.kernel_size:
            raise ValueError(f'{path}: a kernel of shape {kernel.shape}; expected an odd square kernel of at most '
                             f'kernel_size = {self.kernel_size} (raise kernel_size)')
        before = self.kernel_size // 2 - k // 2
        return np.pad(kernel, before)
