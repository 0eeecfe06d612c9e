"""The SSIM of the JUDE paper's evaluation: average pooling by r = max(1, round(min(H, W) / 256)), then SSIM.

Their test script pools output and ground truth with adaptive average pooling to (⌊H/r⌋, ⌊W/r⌋) and computes
`ssim(…, data_range=1)` with an 11-tap Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, 'valid' filtering,
averaged over channels and pixels. That is exactly BasicSR's `calculate_ssim_pt`, which does the SSIM here;
only the pooling is new. On a 1024×640 frame r = round(2.5) = 2 (Python rounds halves to even), so SSIM is
measured on 512×320 images, where blur and noise weigh less than at full resolution: the number is not
comparable with full-resolution SSIM.
"""
import torch.nn.functional as F
from basicsr.metrics.psnr_ssim import calculate_ssim_pt
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_input import metric_tensors


def pooling_factor(height, width):
    """r = max(1, round(min(H, W) / 256)), with Python's round as in the authors' script."""
    return max(1, round(min(height, width) / 256))


def pool(image):
    """Average-pool an N×C×H×W tensor to (⌊H/r⌋, ⌊W/r⌋) (unchanged when r = 1)."""
    height, width = image.shape[-2:]
    r = pooling_factor(height, width)
    return image if r == 1 else F.adaptive_avg_pool2d(image, (height // r, width // r))


@METRIC_REGISTRY.register()
def calculate_ssim_pooled(img, img2, float_input=False, **kwargs):
    """SSIM after the JUDE paper's average pooling (higher is better).

    Args:
        img (ndarray): 8-bit output image, H×W×3 BGR (as BasicSR's models pass it).
        img2 (ndarray): 8-bit ground truth, same layout.
        float_input (bool): score the float tensors JUDEModel passes (`img_float`, `img2_float`: the output
            before clamping and rounding), as the paper's script did, instead of the 8-bit images.
        **kwargs: the other keys BasicSR passes (`better`, the float tensors).

    Returns:
        float: SSIM of the pooled images, averaged over RGB channels.
    """
    x, y = metric_tensors('calculate_ssim_pooled', img, img2, float_input, kwargs)
    if x.shape != y.shape:
        raise ValueError(f'calculate_ssim_pooled: output and ground truth differ in size: {tuple(x.shape)} vs '
                         f'{tuple(y.shape)}')
    return calculate_ssim_pt(pool(x), pool(y), crop_border=0).mean().item()
