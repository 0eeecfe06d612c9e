"""Strict image reading for data preparation: a damaged file is an error, never a silently partial image.

OpenCV is the decoder (BasicSR's, and it keeps 16-bit and greyscale files as they are), but how it treats a
damaged file depends on its version and the format: older builds return the decoded part of a truncated
file, and libpng prints its complaints straight to stderr. So every file is first checked by Pillow, which
raises a Python exception for a truncated or corrupted file: for PNG a chunk-level check (every CRC, and
the chunk sequence complete up to IEND, without inflating the pixels); for other formats a full decode.

Frames packed for training can also be stored raw (`encode_raw`, `prepare_lolblur --format raw`): the pixels as
they are, behind a small header with their shape and a CRC-32. A raw frame is read without decoding anything,
so a training crop costs a copy of its own pixels instead of a full-frame PNG decode (`decode_image` knows both).
"""
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_BYTES_PER_SAMPLE = {'I;16': 2, 'I;16B': 2, 'I;16L': 2, 'I': 4, 'F': 4}


# Raw frames: magic, then height, width, channels, bytes per sample and the CRC-32 of the pixels (little-endian).
RAW_MAGIC = b'JUDERAW1'
_RAW_HEADER = struct.Struct('<8sIIBBI')
_RAW_DTYPES = {1: np.uint8, 2: np.uint16}


class ImageDataError(ValueError):
    """A data file or folder that cannot be used; the message names it and says what is wrong."""


def is_image_file(path):
    """Whether `path` has one of the image extensions this package reads (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def encode_raw(image):
    """A frame as raw bytes: `RAW_MAGIC`, its shape, sample size and pixel CRC-32, then the C-order pixels.

    Args:
        image (numpy.ndarray): H×W or H×W×C, uint8 or uint16 (OpenCV's layout).
    """
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
        raise ValueError(f'encode_raw: an H×W or H×W×C uint8 or uint16 image, got {image.shape} {image.dtype}')
    pixels = np.ascontiguousarray(image).tobytes()
    channels = 1 if image.ndim == 2 else image.shape[2]
    return _RAW_HEADER.pack(RAW_MAGIC, image.shape[0], image.shape[1], channels, image.itemsize,
                            zlib.crc32(pixels)) + pixels


def raw_size(data):
    """(width, height) from the header of a raw frame (`encode_raw`), or None for any other data."""
    if not data.startswith(RAW_MAGIC) or len(data) < _RAW_HEADER.size:
        return None
    _, height, width, _, _, _ = _RAW_HEADER.unpack_from(data)
    return width, height


def decode_raw(data, name):
    """The pixels of a raw frame (`encode_raw`) as a read-only array over `data` (nothing is copied), checked
    against the header's size and CRC-32."""
    if len(data) < _RAW_HEADER.size:
        raise ImageDataError(f'{name}: a raw frame cut inside its {_RAW_HEADER.size}-byte header (truncated); rebuild '
                             'it with datasets_prep/prepare_lolblur.py')
    _, height, width, channels, sample_bytes, crc = _RAW_HEADER.unpack_from(data)
    pixels = memoryview(data)[_RAW_HEADER.size:]
    expected = height * width * channels * sample_bytes
    if sample_bytes not in _RAW_DTYPES or len(pixels) != expected:
        raise ImageDataError(f'{name}: a raw frame of {len(pixels)} pixel bytes where its header declares {width}×'
                             f'{height}×{channels} × {sample_bytes} bytes (truncated or damaged); rebuild it with '
                             'datasets_prep/prepare_lolblur.py')
    if zlib.crc32(pixels) != crc:
        raise ImageDataError(f'{name}: the pixels of the raw frame do not match their CRC-32 (damaged); rebuild it '
                             'with datasets_prep/prepare_lolblur.py')
    image = np.frombuffer(pixels, _RAW_DTYPES[sample_bytes]).reshape(height, width, channels)
    return image[..., 0] if channels == 1 else image


def _png_size(head):
    """(width, height) from a PNG's IHDR in its first 24 bytes, or None when `head` does not start a PNG."""
    if len(head) >= 24 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b'IHDR':
        return struct.unpack('>II', head[16:24])
    return None


def encoded_size(data, name):
    """(width, height) of a packed frame from its first bytes: a raw frame's header or PNG's IHDR directly, other
    formats by Pillow."""
    size = raw_size(data) or _png_size(data)
    if size is not None:
        return size
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # Pillow signals an unknown or damaged header with several exception types
        raise ImageDataError(f'{name}: not a readable image (its header is not one of an image); re-copy or '
                             'rebuild it') from None


def decode_frame(data, name):
    """A packed training frame: a raw frame (`decode_raw`) or an encoded image (`decode_image`)."""
    return decode_raw(data, name) if data.startswith(RAW_MAGIC) else decode_image(data, name)


def decode_image(data, name):
    """Decode an encoded image completely or fail.

    Args:
        data (bytes): the encoded file.
        name (str | Path): the file's name, used in error messages.

    Returns:
        numpy.ndarray: H×W or H×W×C array as OpenCV reads it with IMREAD_UNCHANGED (BGR/BGRA order,
        uint8 or uint16).

    Raises:
        ImageDataError: the file is not an image, is truncated or is corrupted.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if data.startswith(_PNG_SIGNATURE):
                image.verify()
            else:
                image.load()
    except UnidentifiedImageError:  # Pillow's message names its BytesIO object, not the file
        raise ImageDataError(f'{name}: not a readable image (not an image file, or a format Pillow does not know); '
                             're-copy or re-download it') from None
    except Exception as error:  # Pillow signals bad data with several exception types
        raise ImageDataError(f'{name}: not a readable image ({error}); re-copy or re-download it') from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDataError(f'{name}: OpenCV cannot decode this image; re-copy or re-download it')
    return image


def read_image(path):
    """Read and strictly decode an image file (see `decode_image`).

    Args:
        path (str | Path): image file.

    Returns:
        numpy.ndarray: the decoded image (OpenCV layout).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageDataError(f'{path}: cannot be read ({error.strerror})') from None
    return decode_image(data, path)


def image_header(path):
    """Size and sample depth of an image from its header, without decoding the pixels.

    Args:
        path (str | Path): image file.

    Returns:
        tuple[int, int, int]: (width, height, bytes per sample).
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(25)
        # PNG's IHDR is read directly: Pillow reports 16-bit RGB PNGs as 8-bit 'RGB'.
        size = _png_size(head)
        if size is not None and len(head) == 25:
            return (*size, 2 if head[24] == 16 else 1)
        with Image.open(path) as image:
            return (*image.size, _BYTES_PER_SAMPLE.get(image.mode, 1))
    except Image.DecompressionBombError:  # Pillow refuses to even open a header this large
        raise ImageDataError(f'{path}: declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; '
                             'not an image this tool reads') from None
    except UnidentifiedImageError:  # the same words as `decode_image` (Pillow's own repeat the path)
        raise ImageDataError(f'{path}: not a readable image (not an image file, or a format Pillow does not know); '
                             're-copy or re-download it') from None
    except OSError as error:
        raise ImageDataError(f'{path}: not a readable image ({error.strerror or error}); re-copy or re-download it') \
            from None
