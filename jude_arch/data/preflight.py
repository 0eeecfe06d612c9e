"""Checking a dataset's frames when it is built, so that a bad frame stops a run before its first iteration
instead of when it is first read (hours in, at the first validation).

Three levels (the `preflight` option of `LOLBlurDataset`):
- `decode` (the default for validation sets, which are small): every frame decoded strictly, as training reads
  it, and its size compared with its pair's;
- `headers` (the default for training and test sets): every frame's size read from its header (one page of an
  LMDB value, the first bytes of a file) and compared with its pair's and with the size `meta_info.txt` records;
- `off`: nothing (a huge set on slow storage; bad frames are then found when read).
Every error names the frame: its file, or its LMDB and key.
"""
import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

from .image_io import ImageDataError, decode_frame, encoded_size, image_header

MODES = ('decode', 'headers', 'off')
_HEADER_BYTES = 4096  # enough for the size in a PNG's IHDR, a JPEG's SOF after small EXIF blocks, ...
_CHUNK = 32  # frames decoded at a time per thread (bounds the memory the scan holds)
_LABELS = {'gt': 'ground truth'}


def preflight_mode(opt):
    """The `preflight` option of a dataset's options, checked, with its default for the dataset's phase."""
    mode = opt.get('preflight', 'decode' if opt.get('phase') == 'val' else 'headers')
    if mode not in MODES:
        raise ValueError(f'datasets.{opt.get("phase", opt.get("name"))}.preflight must be one of {MODES}, got '
                         f'{mode!r}')
    return mode


@contextlib.contextmanager
def lmdb_values(folders):
    """Yield read(client, key, size=None) → bytes or None (the first `size` bytes only, without copying the rest),
    over LMDBs {client: folder} opened read-only for the scan and closed after it: an LMDB environment must not
    stay open in a process that later forks data-loader workers or opens it again.

    Raises:
        lmdb.Error: an LMDB cannot be opened (py-lmdb opens one once per process: another reader holds it).
    """
    import lmdb

    envs = {}
    try:
        for client, folder in folders.items():
            envs[client] = lmdb.open(str(folder), readonly=True, lock=False, readahead=False)
        txns = {client: env.begin(buffers=True) for client, env in envs.items()}

        def read(client, key, size=None):
            value = txns[client].get(key.encode())
            if value is None:
                return None
            return bytes(value[:size] if size else value)

        yield read
    finally:
        for env in envs.values():
            env.close()  # ends its transactions too


def check_lmdb_frames(keys, folders, recorded, mode):
    """Check the frames `keys` in the LMDBs {client: folder} (client 'lq' first).

    Args:
        keys (Sequence[str]): the frames' keys.
        folders (dict[str, str]): the LMDB of each client (lq, gt, extras).
        recorded (dict[str, dict]): per client, {key: (width, height)} from its meta_info.txt.
        mode (str): 'headers' or 'decode' (see the module docstring).
    """
    import lmdb

    def frames(read):  # read here, in the scanning thread (an LMDB transaction is not shared between threads)
        for key in keys:
            for client, folder in folders.items():
                name = f'{folder}, key {key}'
                data = read(client, key, None if mode == 'decode' else _HEADER_BYTES)
                if data is None:
                    raise ImageDataError(f'{name}: no such key in the LMDB (its meta_info.txt lists it); rebuild '
                                         'it with datasets_prep/prepare_lolblur.py')
                yield key, client, (name, data)

    def size_of(key, client, frame):
        name, data = frame
        size = _decoded_size(data, name) if mode == 'decode' else encoded_size(data, name)
        expected = recorded.get(client, {}).get(key)
        if expected is not None and tuple(size) != tuple(expected):
            raise ImageDataError(f'{name}: the frame is {size[0]}×{size[1]} but meta_info.txt records '
                                 f'{expected[0]}×{expected[1]}; rebuild the LMDB with datasets_prep/prepare_lolblur.py')
        return size

    try:
        with lmdb_values(folders) as read:
            _check_pairs(frames(read), size_of, lambda key, client: f'{folders[client]}, key {key}', mode == 'decode')
    except lmdb.Error as error:  # not a damaged frame: the LMDB could not be opened for the scan
        if 'already open' not in str(error):
            raise ImageDataError(f'{", ".join(map(str, folders.values()))}: cannot be read ({error})') from None
        warnings.warn(f'the pre-flight check of {", ".join(map(str, folders.values()))} is skipped: {error} (another '
                      'dataset of this process reads it)', stacklevel=3)


def check_file_frames(frames, mode):
    """Check the frames [(key, {client: path})] on disk (client 'lq' first) at level `mode`."""
    paths = {(key, client): path for key, clients in frames for client, path in clients.items()}

    def size_of(key, client, path):
        if mode == 'decode':
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                raise ImageDataError(f'{path}: cannot be read ({error.strerror})') from None
            return _decoded_size(data, path)
        return image_header(path)[:2]

    _check_pairs(((key, client, path) for (key, client), path in paths.items()), size_of,
                 lambda key, client: paths[key, client], mode == 'decode')


def _decoded_size(data, name):
    image = decode_frame(data, name)
    return image.shape[1], image.shape[0]


def check_pair_sizes(sizes, name_of):
    """Check that every client of a key has the size of its first client (LQ), from sizes [(key, client, (width,
    height))] (each key's LQ first); name_of(key, client) names a frame in the error (its file, or LMDB and key).

    Raises:
        ImageDataError: naming the first frame whose size differs from its LQ's, and that LQ frame.
    """
    first = {}
    for key, client, size in sizes:
        if key not in first:
            first[key] = (client, size)
        elif size != first[key][1]:
            lq_client, lq_size = first[key]
            raise ImageDataError(f'{name_of(key, lq_client)}: size {lq_size[0]}×{lq_size[1]} differs from its '
                                 f'{_LABELS.get(client, client)} {name_of(key, client)} ({size[0]}×{size[1]})')


def _check_pairs(frames, size_of, name_of, decode):
    """Run size_of(key, client, payload) over frames [(key, client, payload)] (in threads when decoding: OpenCV
    and zlib release the GIL) and `check_pair_sizes` on the sizes as they come."""
    frames = iter(frames)
    workers = min(8, os.cpu_count() or 1) if decode else 1

    def sizes():
        with ThreadPoolExecutor(workers) as pool:
            while chunk := list(islice(frames, _CHUNK * workers)):
                for (key, client, _), size in zip(chunk, pool.map(lambda frame: tuple(size_of(*frame)), chunk)):
                    yield key, client, size

    check_pair_sizes(sizes(), name_of)
