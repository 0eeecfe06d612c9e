"""Synthesise LOL-Blur-style pairs from sharp photos: any folder of photos, or scikit-image's bundled ones.

Each photo becomes one "video" of `frames_per_photo` frames, each frame a different random crop, flip,
blur kernel, exposure and noise draw. Whole photos are held out for the test split, so `test` is made of
photos never seen in `train`. Every frame is degraded the way a dark, shaky night shot is formed, in
linear light (in the spirit of LOL-Blur, whose frames were darkened, blurred and noised in a simulated
camera pipeline):

1. GT (`high_sharp_scaled`): a random square crop of the photo resized to `size`×`size`, flipped
   horizontally at random; `high_sharp_original` is the same crop at the photo's own resolution.
2. Scene radiance: the GT in linear light (sRGB decoded). Pixels near saturation are light sources whose
   true radiance the photo clipped; they get `highlight_gain / exposure` times more radiance, so that after
   the exposure drop they still sit at `highlight_gain` × the sensor's saturation: lamps stay bright.
3. Under-exposure: radiance × `exposure` → `low_sharp` (clipped to the sensor's range, sRGB encoded).
4. Camera shake: the under-exposed radiance blurred by a random camera-shake kernel
   (`camera_shake_kernel`, odd size drawn from `kernel_size`) with `jude_arch.archs.blur`, then clipped:
   blurring before the clip lets a lamp smear into a saturated streak → `low_blur`. The kernel is saved
   as `kernels/<video>/<frame>.npy`, in `blur`'s convention (true convolution, centred at k // 2).
5. Sensor noise on the blurred signal: Poisson shot noise with `photons` photo-electrons at saturation
   plus Gaussian read noise of σ `read_noise` (both in linear units), clipped → `low_blur_noise`.
6. Every output is 8-bit (sRGB encoded and rounded).

The blur is computed on a crop extended by the kernel's radius, so frame borders hold real scene content,
not padding. Randomness comes from one generator per frame seeded by (seed, photo, frame): the same
arguments give byte-identical files for any number of workers.
"""
import contextlib
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import skimage
import torch
from tqdm import tqdm

from ..archs import blur
from .blur_kernels import camera_shake_kernel
from .image_io import ImageDataError, read_image
from .lolblur_layout import GT_FOLDER, KERNEL_FOLDER, ORIGINAL_FOLDER, SPLITS, list_images
from .parallel import worker_map
from .staging import refuse_existing, staged_outputs

# scikit-image's colour photographs of everyday scenes that ship inside the package (no download). Its other
# colour samples are graphics, microscopy or astronomy (mostly white or mostly black), or need a download.
SKIMAGE_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'rocket.jpg')


@dataclasses.dataclass(frozen=True)
class Degradation:
    """Ranges the per-frame degradation parameters are drawn from (see the module docstring).

    Args:
        kernel_size (tuple[int, int]): blur kernel sizes (odd sizes in this range, uniformly).
        exposure (tuple[float, float]): linear-light exposure factor (log-uniform); 0.05 is about 4.3 stops
            under.
        highlight_gain (tuple[float, float]): light sources' level after the exposure drop, in multiples of
            the saturation level (uniform).
        highlight_threshold (float): linear level (of a pixel's brightest channel) from which a pixel counts
            as a light source; the transition up to 1 is smooth.
        photons (tuple[float, float]): photo-electrons at saturation, for the shot noise (log-uniform; fewer
            is noisier).
        read_noise (tuple[float, float]): σ of the Gaussian read noise in linear units (uniform).
        crop_scale (tuple[float, float]): side of the crop as a fraction of the photo's shorter side
            (uniform).
    """
    kernel_size: tuple = (7, 21)
    exposure: tuple = (0.03, 0.12)
    highlight_gain: tuple = (1.5, 4.0)
    highlight_threshold: float = 0.8
    photons: tuple = (200.0, 2000.0)
    read_noise: tuple = (0.0005, 0.002)
    crop_scale: tuple = (0.5, 1.0)

    def __post_init__(self):
        for field in ('kernel_size', 'exposure', 'highlight_gain', 'photons', 'read_noise', 'crop_scale'):
            value = getattr(self, field)
            if len(value) != 2 or not 0 <= value[0] <= value[1]:
                raise ValueError(f'{field} must be a range (low, high) with 0 ≤ low ≤ high, got {value}')
            object.__setattr__(self, field, tuple(value))
        if not any(k % 2 for k in range(self.kernel_size[0], self.kernel_size[1] + 1)):
            raise ValueError(f'kernel_size {self.kernel_size} holds no odd size')
        for field in ('exposure', 'photons'):
            if getattr(self, field)[0] <= 0:
                raise ValueError(f'{field} must be positive, got {getattr(self, field)}')
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f'crop_scale must lie in (0, 1], got {self.crop_scale}')
        if not 0 <= self.highlight_threshold < 1:
            raise ValueError(f'highlight_threshold must lie in [0, 1), got {self.highlight_threshold}')


def skimage_photo_paths():
    """Paths of the bundled scikit-image photos used by `source='skimage'`.

    Returns:
        list[Path]: one file per name in `SKIMAGE_PHOTOS`.

    Raises:
        ImageDataError: this scikit-image does not bundle one of them.
    """
    folder = Path(skimage.__file__).parent / 'data'
    paths = [folder / name for name in SKIMAGE_PHOTOS]
    for path in paths:
        if not path.is_file():
            raise ImageDataError(f'{path}: not bundled with scikit-image {skimage.__version__}; '
                                 'pass a folder of photos as the source instead')
    return paths


def synthesize_lolblur(source, out_root, *, size=256, frames_per_photo=4, test_photos=2, seed=0, workers=1,
                       overwrite=False, **degradation):
    """Write LOL-Blur-style pairs synthesised from sharp photos under `out_root`.

    Layout: `{train,test}/{low_blur,low_blur_noise,low_sharp,high_sharp_scaled,high_sharp_original,kernels}/
    <4-digit video>/<4-digit frame>.png` (`.npy` for kernels); video = the photo's index in the sorted
    source list.

    Args:
        source (str | Path): 'skimage' (scikit-image's bundled photos, `SKIMAGE_PHOTOS`) or a folder,
            searched recursively for images (png, jpg, jpeg, bmp, tif, tiff, webp).
        out_root (str | Path): output folder; its `train/` and `test/` are written.
        size (int): side of the square frames.
        frames_per_photo (int): frames per photo (video).
        test_photos (int): photos held out for the test split (chosen at random with `seed`).
        seed (int): seed of every random choice.
        workers (int): processes (one video at a time each); the output does not depend on it.
        overwrite (bool): replace an existing `train/` and `test/` in `out_root` (once the new ones are
            complete).
        **degradation: fields of `Degradation` (parameter ranges).

    Returns:
        dict: {'root': out_root, 'train': {'photos': [source paths], 'frames': number of pairs}, 'test': ...}.

    Raises:
        ImageDataError: missing source, no images, an unreadable image, or existing output.
        ValueError: invalid sizes, counts or degradation ranges.
    """
    degradation = Degradation(**degradation)
    if size < 8:
        raise ValueError(f'size must be ≥ 8, got {size}')
    if frames_per_photo < 1 or test_photos < 0:
        raise ValueError(f'need frames_per_photo ≥ 1 and test_photos ≥ 0, got {frames_per_photo}, {test_photos}')
    out_root = Path(out_root)
    photos = _source_photos(source, out_root)
    if len(photos) <= test_photos:
        raise ImageDataError(f'{source}: {len(photos)} photo(s), but {test_photos} are held out for testing and '
                             'at least one is needed for training')
    refuse_existing(out_root, SPLITS, overwrite)

    held_out = set(np.random.default_rng(seed).permutation(len(photos))[:test_photos].tolist())
    tasks = [(path, 'test' if index in held_out else 'train', index, frames_per_photo, size, seed, degradation)
             for index, path in enumerate(photos)]
    with staged_outputs(out_root, SPLITS, overwrite=overwrite, prefix='.synthesize_lolblur-') as staging, \
            worker_map(workers, initializer=_single_thread) as imap:
        videos = imap(_synthesize_video, [(*task, staging) for task in tasks])
        for _ in tqdm(videos, total=len(tasks), desc='synthesize', unit='photo'):
            pass
    summary = {'root': out_root}
    for split in SPLITS:
        split_photos = [path for path, task_split, *_ in tasks if task_split == split]
        summary[split] = {'photos': split_photos, 'frames': len(split_photos) * frames_per_photo}
    return summary


def _source_photos(source, out_root):
    """The source's photo files, sorted (without earlier outputs when `out_root` lies inside the source)."""
    if str(source) == 'skimage':
        return skimage_photo_paths()
    folder = Path(source)
    if not folder.is_dir():
        raise ImageDataError(f"{folder}: source folder not found (pass a folder of photos or 'skimage')")
    output = out_root.resolve()
    photos = [folder / name for name in list_images(folder) if output not in (folder / name).resolve().parents]
    if not photos:
        raise ImageDataError(f'{folder}: no images found (looked for png, jpg, jpeg, bmp, tif, tiff, webp)')
    return photos


def _single_thread():
    # One thread per worker process: the processes are the parallelism.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


@contextlib.contextmanager
def _torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _load_photo(path):
    """A photo as (RGB float64 in [0, 1], the same pixels as stored: 3-channel BGR in the file's dtype)."""
    raw = read_image(path)
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    raw = raw[..., :3]  # drop alpha
    if raw.dtype not in (np.uint8, np.uint16):
        raise ImageDataError(f'{path}: unsupported pixel type {raw.dtype} (use 8- or 16-bit images)')
    return raw[..., ::-1] / np.iinfo(raw.dtype).max, raw


def _synthesize_video(task):
    """Synthesise and write all frames of one photo (runs in a worker process)."""
    path, split, index, frames, size, seed, degradation, staging = task
    photo, raw = _load_photo(path)
    video = f'{index:04d}'
    # A fixed single thread keeps the float results, hence the files, independent of the caller's threads.
    with _torch_threads(1):
        for frame in range(frames):
            rng = np.random.default_rng([seed, index, frame])
            images, kernel = degrade(photo, raw, size, degradation, rng)
            name = f'{frame:04d}'
            for folder, image in images.items():
                target = staging / split / folder / video / f'{name}.png'
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), image):
                    raise OSError(f'{target}: cannot be written')
            target = staging / split / KERNEL_FOLDER / video / f'{name}.npy'
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, kernel)


def degrade(photo, raw, size, degradation, rng):
    """Make one frame's images from a photo (steps 1–6 of the module docstring).

    Args:
        photo (numpy.ndarray): H×W×3 RGB float64 in [0, 1].
        raw (numpy.ndarray): the same photo as stored (H×W×3 BGR, uint8 or uint16), for `high_sharp_original`.
        size (int): side of the output frames.
        degradation (Degradation): parameter ranges.
        rng (numpy.random.Generator): this frame's random generator.

    Returns:
        tuple[dict[str, numpy.ndarray], numpy.ndarray]: images by LOL-Blur folder name (BGR, uint8 except
        `high_sharp_original`, which keeps the photo's dtype) and the float64 k×k blur kernel.
    """
    d = degradation
    k = int(rng.choice([k for k in range(d.kernel_size[0], d.kernel_size[1] + 1) if k % 2]))
    kernel = camera_shake_kernel(k, rng)
    # Crop a square of the photo that, resized, gives the frame plus a margin of the kernel's radius.
    pad = k // 2
    padded = size + 2 * pad
    height, width = photo.shape[:2]
    side = max(1, round(rng.uniform(*d.crop_scale) * min(height, width)))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop, raw_crop = photo[top:top + side, left:left + side], raw[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop, raw_crop = crop[:, ::-1], raw_crop[:, ::-1]
    interpolation = cv2.INTER_AREA if side >= padded else cv2.INTER_CUBIC
    sharp = np.clip(cv2.resize(np.ascontiguousarray(crop), (padded, padded), interpolation=interpolation), 0, 1)
    margin = round(pad * side / padded)
    original = raw_crop[margin:side - margin, margin:side - margin]

    # Linear-light radiance; light sources (clipped in the photo) get back the radiance the clip removed.
    radiance = _srgb_to_linear(sharp)
    t = d.highlight_threshold
    light = np.clip((radiance.max(axis=2, keepdims=True) - t) / (1 - t), 0, 1)
    light = light * light * (3 - 2 * light)  # smoothstep
    exposure = math.exp(rng.uniform(math.log(d.exposure[0]), math.log(d.exposure[1])))
    gain = rng.uniform(*d.highlight_gain)
    dark = exposure * radiance * (1 + light * (gain / exposure - 1))

    core = slice(pad, pad + size)
    blurred = np.clip(_blur(dark, kernel)[core, core], 0, 1)
    photons = math.exp(rng.uniform(math.log(d.photons[0]), math.log(d.photons[1])))
    noisy = rng.poisson(blurred * photons) / photons + rng.normal(0, rng.uniform(*d.read_noise), blurred.shape)

    images = {
        'low_blur': blurred,
        'low_blur_noise': np.clip(noisy, 0, 1),
        'low_sharp': np.clip(dark[core, core], 0, 1),
    }
    images = {folder: _to_uint8(_linear_to_srgb(image)) for folder, image in images.items()}
    images[GT_FOLDER] = _to_uint8(sharp[core, core])
    images[ORIGINAL_FOLDER] = np.ascontiguousarray(original)
    return images, kernel


def _blur(image, kernel):
    """`jude_arch.archs.blur` of an H×W×C numpy image (float32 is plenty for 8-bit outputs, and fast)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1)[None]
    return blur(tensor, torch.from_numpy(kernel)[None, None])[0].permute(1, 2, 0).double().numpy()


def _srgb_to_linear(x):
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055)**2.4)


def _linear_to_srgb(x):
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.maximum(x, 0.0031308)**(1 / 2.4) - 0.055)


def _to_uint8(rgb):
    """RGB float in [0, 1] → BGR uint8 (what cv2.imwrite expects)."""
    return np.ascontiguousarray(np.round(np.clip(rgb[..., ::-1], 0, 1) * 255).astype(np.uint8))
