"""Pack LOL-Blur into BasicSR LMDBs: `<out>/{split}_lq.lmdb` and `<out>/{split}_gt.lmdb`.

Keys are `<video>_<frame>` (LOL-Blur's frame names repeat across videos), and each LMDB has BasicSR's
`meta_info.txt`, so `PairedImageDataset` and `LOLBlurDataset` read the result with `io_backend: {type: lmdb}`.

Nothing half-written ever reaches `<out>`:
1. Before anything is written: the output names are checked (an existing LMDB is refused unless `overwrite`),
   then every split's folders, the LQ/GT pairing and the LQ/GT sizes (read from the file headers).
2. All LMDBs are written into one staging folder inside `<out>`, each frame strictly decoded (a truncated
   or corrupted file stops the run, naming it) and re-encoded (`frame_format`: PNG, or raw pixels that a
   training crop reads without decoding the frame) by `workers` processes, and written
   with BasicSR's `LmdbMaker` using a map size computed from the frames' sizes (BasicSR's own estimate
   from the first image overflows when frame sizes vary).
3. Only when all of them are complete are they moved into place (replacing the old ones when
   `overwrite`); on any error or interruption the staging folder is removed and `<out>` is as it was.
"""
import contextlib
import functools
from pathlib import Path

import cv2
import lmdb
from basicsr.utils.lmdb_util import LmdbMaker
from tqdm import tqdm

from .image_io import ImageDataError, encode_raw, image_header, read_image
from .lolblur_layout import GT_FOLDER, LQ_FOLDERS, SPLITS, pair_frames
from .parallel import worker_map
from .preflight import check_pair_sizes
from .staging import refuse_existing, staged_outputs

COMPRESS_LEVEL = 1  # PNG compression inside the LMDB: BasicSR's default, fast to decode while training
# How frames are stored: 'png' (what BasicSR's own datasets read too) or 'raw' (`image_io.encode_raw`: about twice
# the space of PNG, read by LOLBlurDataset without a decode; docs/data.md has the measurements).
FRAME_FORMATS = ('png', 'raw')
_PAGE = 4096


def prepare_lolblur(root, out, *, lq='low_blur_noise', splits=SPLITS, overwrite=False, workers=1,
                    frame_format='png'):
    """Pack the LOL-Blur folders below `root` into BasicSR LMDBs in `out`.

    Args:
        root (str | Path): folder holding the splits (`train/`, `test/`) in the LOL-Blur layout.
        out (str | Path): output folder (created if missing).
        lq (str): LQ folder: 'low_blur_noise' (the standard benchmark input), 'low_blur' or 'low_sharp'.
            The GT is always 'high_sharp_scaled'.
        splits (Sequence[str]): splits to pack.
        overwrite (bool): replace existing LMDBs (only once the new ones are complete).
        workers (int): processes that read, decode and encode the frames.
        frame_format (str): 'png' or 'raw' (`FRAME_FORMATS`).

    Returns:
        dict[str, dict]: per split, {'lq': LMDB path, 'gt': LMDB path, 'frames': number of pairs}.

    Raises:
        ImageDataError: bad input or an existing output; the message names the offending path.
    """
    root, out = Path(root), Path(out)
    splits = [splits] if isinstance(splits, str) else list(splits)
    if lq not in LQ_FOLDERS:
        raise ImageDataError(f'lq must be one of {LQ_FOLDERS}, got {lq!r}')
    if frame_format not in FRAME_FORMATS:
        raise ImageDataError(f'frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}')
    if not splits:
        raise ImageDataError('no splits to prepare')
    if not root.is_dir():
        raise ImageDataError(f'{root}: LOL-Blur root not found (expected the folders {", ".join(splits)} in it)')
    if out.exists() and not out.is_dir():
        raise ImageDataError(f'{out}: exists and is not a folder')
    names = {split: {kind: f'{split}_{kind}.lmdb' for kind in ('lq', 'gt')} for split in splits}
    refuse_existing(out, [name for split in splits for name in names[split].values()], overwrite)

    with worker_map(workers) as imap:
        jobs, result = [], {}
        for split in splits:
            keys, lq_paths, gt_paths, map_size = _check_split(root, split, lq, imap)
            jobs += [(names[split]['lq'], keys, lq_paths, map_size), (names[split]['gt'], keys, gt_paths, map_size)]
            result[split] = {'lq': out / names[split]['lq'], 'gt': out / names[split]['gt'], 'frames': len(keys)}
        with staged_outputs(out, [job[0] for job in jobs], overwrite=overwrite, prefix='.prepare_lolblur-') as staging:
            for name, keys, paths, map_size in jobs:
                _write_lmdb(staging / name, keys, paths, map_size, imap, frame_format)
    return result


def _check_split(root, split, lq, imap):
    """Check one split's folders, pairing, keys and sizes; return its keys, paths and LMDB map size."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise ImageDataError(f'{split_dir}: split folder not found (expected {lq}/ and {GT_FOLDER}/ in it)')
    pairs = pair_frames(split_dir / lq, split_dir / GT_FOLDER)
    keys = [key for key, _, _ in pairs]
    lq_paths = [lq_path for _, lq_path, _ in pairs]
    gt_paths = [gt_path for _, _, gt_path in pairs]
    for key, lq_path in zip(keys, lq_paths):
        # BasicSR reads the keys back from meta_info.txt by splitting each line at the first '.' and ' '.
        if not key.isascii() or '.' in key or any(c.isspace() for c in key):
            raise ImageDataError(f'{lq_path}: gives the LMDB key {key!r}; rename it (keys must be ASCII '
                                 'without dots or spaces)')
    headers = list(
        tqdm(imap(image_header, lq_paths + gt_paths, 64), total=2 * len(pairs), desc=f'check {split}', unit='img'))
    names = {key: {'lq': lq_path, 'gt': gt_path} for key, lq_path, gt_path in pairs}
    sizes = [(key, client, header[:2]) for key, lq_header, gt_header in zip(keys, headers, headers[len(pairs):])
             for client, header in (('lq', lq_header), ('gt', gt_header))]
    check_pair_sizes(sizes, lambda key, client: names[key][client])
    map_size = 0
    for lq_header, gt_header in zip(headers, headers[len(pairs):]):
        map_size += _lmdb_bytes(*lq_header[:2], max(lq_header[2], gt_header[2]))
    return keys, lq_paths, gt_paths, map_size + 64 * 2**20


def _lmdb_bytes(width, height, sample_bytes):
    """Upper bound of the LMDB space one frame takes, PNG or raw.

    A PNG is at most its raw pixels (up to 4 channels) plus one filter byte per row and a little deflate
    overhead (more than a raw frame's header); LMDB stores it on whole overflow pages plus its share of the B-tree.
    """
    png = height * (width * 4 * sample_bytes + 1)
    return (png // 100 + png + 4 * _PAGE) // _PAGE * _PAGE


def _encode(path, frame_format):
    """Strictly decode one frame and encode it for the LMDB (PNG or raw); return (bytes, (h, w, c))."""
    image = read_image(path)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if frame_format == 'raw':
        return encode_raw(image), (*image.shape[:2], channels)
    ok, encoded = cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, COMPRESS_LEVEL])
    if not ok:
        raise ImageDataError(f'{path}: cannot be encoded as PNG (shape {image.shape}, dtype {image.dtype})')
    return encoded.tobytes(), (*image.shape[:2], channels)


def _write_lmdb(path, keys, paths, map_size, imap, frame_format):
    """Write one LMDB (values: PNG bytes or raw frames; BasicSR's meta_info.txt) from the frames at `paths`."""
    # The bar exists before the LMDB and is closed by `with` whatever happens: a Ctrl-C while writing ends
    # its line, so the tool's "interrupted" message starts on a line of its own.
    with tqdm(total=len(paths), desc=path.name, unit='img') as bar:
        maker = LmdbMaker(str(path), map_size=map_size, compress_level=COMPRESS_LEVEL)
        try:
            for key, (data, shape) in zip(keys, imap(functools.partial(_encode, frame_format=frame_format), paths, 4)):
                maker.put(data, key, shape)
                bar.update()
        except BaseException:
            with contextlib.suppress(lmdb.Error):  # the LMDB is discarded: only release its files
                maker.close()
            raise
    maker.close()
