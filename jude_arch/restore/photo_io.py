"""Reading photos the way a viewer shows them and writing results without ever leaving half a file.

Decoding is `jude_arch.data.image_io.decode_image` (OpenCV, IMREAD_UNCHANGED: bit depth, greyscale and
alpha kept; a truncated or corrupt file is an error). IMREAD_UNCHANGED is also the one OpenCV mode that
ignores the EXIF orientation a phone writes instead of rotating the pixels, so the orientation is read
here (with Pillow, from the header) and applied to the decoded array.
"""
import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..checkpoint_io import atomic_write
from ..data.image_io import IMAGE_EXTENSIONS, ImageDataError, decode_image, image_header, is_image_file

__all__ = ['DEFAULT_MAX_PIXELS', 'IMAGE_EXTENSIONS', 'ImageDataError', 'is_image_file',
           'output_extension', 'read_photo', 'write_bytes', 'write_image']

# Photos larger than this are refused before decoding: a 100-MP photo already needs several GiB of whole-image
# buffers besides the network, and a few bytes of header can claim billions of pixels.
DEFAULT_MAX_PIXELS = 100_000_000

_EXIF_ORIENTATION = 0x0112
# EXIF orientation → the array operation that shows the picture upright (as OpenCV's IMREAD_COLOR does).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
# What each output format can hold: bit depths and whether an alpha channel survives.
_FORMATS = {
    '.png': ({np.dtype(np.uint8), np.dtype(np.uint16)}, True),
    '.tif': ({np.dtype(np.uint8), np.dtype(np.uint16)}, True),
    '.tiff': ({np.dtype(np.uint8), np.dtype(np.uint16)}, True),
    '.jpg': ({np.dtype(np.uint8)}, False),
    '.jpeg': ({np.dtype(np.uint8)}, False),
    '.webp': ({np.dtype(np.uint8)}, True),
    '.bmp': ({np.dtype(np.uint8)}, True),
}
_WRITE_PARAMS = {'.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95], '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95],
                 '.webp': [cv2.IMWRITE_WEBP_QUALITY, 95]}


def _exif_orientation(data):
    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # no readable EXIF: the picture is shown as stored
        return 1
    return orientation if orientation in _ORIENT else 1


def read_photo(path, max_pixels=None):
    """Read an image file as stored (depth, channels, alpha), turned upright by its EXIF orientation.

    Args:
        path (str | Path): image file.
        max_pixels (int | None): refuse, from the file's header and before decoding, an image with more
            pixels (a small file can declare a huge image: a 164 KB PNG of 13000×13000 decodes to 4.3 GiB).

    Returns:
        numpy.ndarray: H×W (greyscale) or H×W×C (BGR / BGRA) array, uint8 or uint16, contiguous.

    Raises:
        ImageDataError: the file cannot be read, is a broken link, is not an image, is truncated or corrupt, or
            has more than `max_pixels` pixels.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageDataError(f'{path}: broken symbolic link (to {os.readlink(path)})')
    if max_pixels:
        width, height, _ = image_header(path)
        if width * height > max_pixels:
            raise ImageDataError(f'{path}: {width}×{height} is {width * height / 1e6:.1f} megapixels, more than the '
                                 f'limit of {max_pixels / 1e6:g}; raise it with --max-megapixels if you mean it')
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageDataError(f'{path}: cannot be read ({error.strerror})') from None
    image = decode_image(data, path)
    orientation = _exif_orientation(data)
    if orientation != 1:
        image = np.ascontiguousarray(_ORIENT[orientation](image))
    return image


def output_extension(input_suffix, requested, image):
    """The file extension a restored image is saved with.

    Args:
        input_suffix (str): the input file's extension, e.g. '.JPG'.
        requested (str): 'auto' (the input's format), 'png' or 'jpg'.
        image (numpy.ndarray): the restored image (its depth and channels decide what can hold it).

    Returns:
        str: lower-case extension with the dot. 'auto' falls back to '.png' when the input's format
        cannot hold the image; an image with alpha is always saved where the alpha survives ('.png'
        when 'jpg' was requested); a 16-bit image saved as '.jpg' is converted to 8 bits by `write_image`.
    """
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    if requested == 'auto':
        suffix = input_suffix.lower()
        depths, alpha_ok = _FORMATS.get(suffix, (set(), False))
        return suffix if image.dtype in depths and (alpha_ok or not has_alpha) else '.png'
    if requested == 'jpg':
        return '.png' if has_alpha else '.jpg'
    if requested == 'png':
        return '.png'
    raise ValueError(f"output extension must be 'auto', 'png' or 'jpg', got {requested!r}")


def write_image(path, image):
    """Encode `image` in the format of `path`'s extension and write it atomically.

    The file is encoded in memory and written with `write_bytes`, so an interrupted run never leaves a
    partial image. Parent folders are created.

    Args:
        path (str | Path): output file; its extension picks the format.
        image (numpy.ndarray): H×W or H×W×C (BGR / BGRA) uint8 or uint16 array. A 16-bit image
            written to an 8-bit-only format is rounded to 8 bits.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    depths, _ = _FORMATS.get(suffix, ({np.dtype(np.uint8)}, True))
    if image.dtype == np.uint16 and image.dtype not in depths:
        image = np.round(image / 257.0).astype(np.uint8)
    ok, encoded = cv2.imencode(suffix, image, _WRITE_PARAMS.get(suffix, []))
    if not ok:
        raise OSError(f'{path}: OpenCV cannot encode a {image.dtype} image with shape {image.shape} as {suffix}')
    write_bytes(path, encoded.tobytes())


def write_bytes(path, data):
    """Write `data` to `path` atomically (temporary file beside it, then rename), creating parent folders.

    Args:
        path (str | Path): target file.
        data (bytes): file content.
    """
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
