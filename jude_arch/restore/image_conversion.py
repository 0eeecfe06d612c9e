"""Images as OpenCV lays them out (H×W grey, BGR, BGRA; 8-bit, 16-bit or float) to the network's RGB tensors, and
back to the input's own layout, bit depth and alpha."""
import numpy as np
import torch

from .errors import RestoreError

# BT.601 luma, as OpenCV's RGB→grey conversion.
LUMA = (0.299, 0.587, 0.114)


def image_to_tensor(image):
    """An OpenCV-layout image as a 3×H×W float32 RGB tensor in [0, 1] (grey repeated in the three channels).

    Args:
        image (numpy.ndarray): H×W or H×W×1 (greyscale), H×W×3 (BGR) or H×W×4 (BGRA); uint8, uint16, or
            float in [0, 1]. An alpha channel is left out.

    Returns:
        tuple[Tensor, float]: the tensor and the value of full scale (255, 65535 or 1.0) it was divided by.
    """
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise RestoreError(f'expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {image.shape}')
    if image.dtype == np.uint8 or image.dtype == np.uint16:
        scale = np.iinfo(image.dtype).max
    elif np.issubdtype(image.dtype, np.floating):
        scale = 1.0
    else:
        raise RestoreError(f'unsupported image data type {image.dtype}; use 8- or 16-bit images')
    color = image[..., :3] if image.ndim == 3 else image[..., None]
    rgb = torch.from_numpy(np.ascontiguousarray(color[..., ::-1], dtype=np.float32)).permute(2, 0, 1) / scale
    return rgb.expand(3, -1, -1), scale


def tensor_to_image(restored, like, scale):
    """A restored 3×H×W RGB tensor in [0, 1] in the layout of the image it came from.

    Args:
        restored (Tensor): 3×H×W float32 on the CPU (modified in place).
        like (numpy.ndarray): the input image (`image_to_tensor`'s argument).
        scale (float): what `image_to_tensor` returned with the tensor.

    Returns:
        numpy.ndarray: the input's shape and dtype: greyscale stays greyscale (BT.601 luma of the RGB result),
        the alpha channel is carried over untouched.
    """
    if like.ndim == 2 or like.shape[2] == 1:
        restored = sum(w * c for w, c in zip(LUMA, restored))[None]
    if scale != 1.0:
        restored = restored.mul_(scale).round_()
    restored = restored.flip(0).permute(1, 2, 0).numpy().astype(like.dtype)  # BGR, H×W×C
    if like.ndim == 2:
        return restored[..., 0]
    if like.shape[2] == 4:
        return np.concatenate([restored, like[..., 3:]], axis=2)
    return restored
