"""The images a metric scores: BasicSR's 8-bit images, or the float tensors JUDEModel passes along."""
import numpy as np
import torch
from basicsr.utils import img2tensor

# Keys under which JUDEModel passes the float N×3×H×W RGB tensors (output unclamped, ground truth) to metrics.
FLOAT_KEYS = ('img_float', 'img2_float')


def uint8_to_tensor(img, device):
    """BasicSR's H×W×3 BGR uint8 image (from `tensor2img`) as a 1×3×H×W RGB float32 tensor in [0, 1]."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an H×W×3 colour image, got shape {img.shape}')
    return img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None].to(device)


def metric_tensors(metric, img, img2, float_input, data, device=None):
    """The image pair a metric scores, as float RGB tensors of shape N×3×H×W.

    Args:
        metric (str): the metric's name, for error messages.
        img (ndarray): BasicSR's 8-bit output image (H×W×3, BGR).
        img2 (ndarray | None): BasicSR's 8-bit ground truth, or None (no-reference metrics).
        float_input (bool): use the float tensors `data['img_float']` / `data['img2_float']` instead.
        data (dict): the metric's other keyword arguments (where the float tensors are).
        device (torch.device | None): where the tensors go; None: the float tensors' own device, or the CPU.

    Returns:
        tuple[Tensor, Tensor | None]: output and ground truth (None when img2 is None).
    """
    if float_input:
        if FLOAT_KEYS[0] not in data:
            raise ValueError(f'{metric}: float_input: true needs the float output that JUDEModel passes to metrics '
                             f'({FLOAT_KEYS[0]}); this model passes 8-bit images only: set float_input: false')
        pair = [data[FLOAT_KEYS[0]], data.get(FLOAT_KEYS[1]) if img2 is not None else None]
        return tuple(None if t is None else t.float().to(device or t.device) for t in pair)
    device = device or torch.device('cpu')
    return uint8_to_tensor(img, device), None if img2 is None else uint8_to_tensor(img2, device)


def default_device():
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
