"""The LOL-Blur folder layout: folder names, frame keys and the pairing of LQ and GT frames.

    <root>/{train,test}/{low_blur,low_blur_noise,low_sharp,high_sharp_scaled,high_sharp_original}/
        <4-digit video>/<4-digit frame>.png

Frame names repeat across videos, so a frame is identified by its key `<video>_<frame>` (e.g. `0012_0034`).
"""
import os
from pathlib import Path, PurePath

from .image_io import ImageDataError, is_image_file

SPLITS = ('train', 'test')
LQ_FOLDERS = ('low_blur_noise', 'low_blur', 'low_sharp')
GT_FOLDER = 'high_sharp_scaled'
ORIGINAL_FOLDER = 'high_sharp_original'
FOLDERS = ('low_blur', 'low_blur_noise', 'low_sharp', GT_FOLDER, ORIGINAL_FOLDER)
KERNEL_FOLDER = 'kernels'


def frame_key(relative_path):
    """Key of a frame from its path relative to an LQ or GT folder: `0012/0034.png` → `0012_0034`.

    Args:
        relative_path (str | PurePath): path below the folder, e.g. `<video>/<frame>.png`.

    Returns:
        str: the path's parts without the extension, joined by '_'.
    """
    return '_'.join(PurePath(relative_path).with_suffix('').parts)


def list_images(folder):
    """Image files below `folder`, recursively (following links), hidden files and folders skipped.

    Args:
        folder (str | Path): folder to scan.

    Returns:
        list[PurePath]: sorted paths relative to `folder`.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        base = PurePath(dirpath).relative_to(folder)
        found += [base / name for name in filenames if not name.startswith('.') and is_image_file(name)]
    return sorted(found)


def pair_frames(lq_folder, gt_folder):
    """Pair the frames of an LQ folder with those of its GT folder by relative path.

    Args:
        lq_folder (str | Path): folder of low-quality frames (e.g. `train/low_blur_noise`).
        gt_folder (str | Path): folder of ground-truth frames (e.g. `train/high_sharp_scaled`).

    Returns:
        list[tuple[str, Path, Path]]: (key, LQ path, GT path), sorted by key.

    Raises:
        ImageDataError: a folder is missing or holds no images, a frame has no counterpart, or two frames
            map to the same key.
    """
    lq_folder, gt_folder = Path(lq_folder), Path(gt_folder)
    for folder in (lq_folder, gt_folder):
        if not folder.is_dir():
            raise ImageDataError(f'{folder}: folder not found')
    lq_names, gt_names = list_images(lq_folder), list_images(gt_folder)
    if not lq_names:
        raise ImageDataError(f'{lq_folder}: no images found (expected <video>/<frame>.png below it)')
    missing_gt = sorted(set(lq_names) - set(gt_names))
    if missing_gt:
        raise ImageDataError(f'{lq_folder / missing_gt[0]}: no ground truth {gt_folder / missing_gt[0]} '
                             f'({len(missing_gt)} LQ frame(s) without GT)')
    missing_lq = sorted(set(gt_names) - set(lq_names))
    if missing_lq:
        raise ImageDataError(f'{gt_folder / missing_lq[0]}: no LQ frame {lq_folder / missing_lq[0]} '
                             f'({len(missing_lq)} GT frame(s) without LQ)')
    pairs, seen = [], {}
    for name in lq_names:
        key = frame_key(name)
        if key in seen:
            raise ImageDataError(f'{lq_folder / name}: its key {key!r} is also the key of {lq_folder / seen[key]}')
        seen[key] = name
        pairs.append((key, lq_folder / name, gt_folder / name))
    return sorted(pairs)

