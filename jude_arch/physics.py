"""Measures of JUDE's physics: does the estimated kernel explain the blur, and is I_K the sharp image?

- `reblur`: blur a sharp image with a kernel in the light space the data was blurred in (linear light for
  `jude_arch.data.synthesis`, whose darkening, blur and noise happen on linear radiance), then encode it back.
- `reblur_psnr`: PSNR of that re-blurred image against the observed noise-free blurred one, quantised to 8 bits
  like the data; the kernel's quality in the units that matter for the data step.
- `kernel_error` / `kernel_similarity`: compare an estimated kernel with the true one up to a translation.
  A kernel shifted by s explains a blurred image exactly as well as the original kernel with the sharp image
  shifted by −s; an estimator that sees only the blurred image cannot tell the two apart, and data sources
  centre their kernels differently (centre of mass, trajectory start, grid centre). So both take the best
  integer shift within ±max_shift.
- `kernel_entropy`: entropy of a kernel as a fraction of the uniform kernel's (1: uniform, 0: one tap).
- `reference_reblur_psnr`: what an estimate's re-blur PSNR reads against, on the same frames: the uniform kernel
  (no estimate), the best isotropic Gaussian (an oracle that knows each frame's best width) and the true kernel.
"""
import math

import torch
import torch.nn.functional as F

from .archs.colour import linear_to_srgb, srgb_to_linear  # noqa: F401  (part of this module's interface)
from .archs.data_step import _fast_fft_len, _pad, blur, psf2otf

LIGHT_SPACES = ('linear', 'srgb')


def _check_light(light):
    if light not in LIGHT_SPACES:
        raise ValueError(f'light must be one of {LIGHT_SPACES} (the space the data was blurred in), got {light!r}')


def fft_blur(image, kernel, boundary='reflect'):
    """`jude_arch.archs.blur` (same result to float rounding) computed with FFTs, for large kernels.

    The image is padded as `blur` pads it, so the periodic convolution of the padded image never wraps into
    the part kept; for a 31×31 kernel this is an order of magnitude faster than the direct convolution,
    in the forward and the backward pass.

    Args:
        image (Tensor): N×C×H×W.
        kernel (Tensor): N×1×k×k (or 1×1×k×k) kernels, centred at k // 2.
        boundary (str): 'reflect' or 'replicate' (for 'circular', `blur` itself is used).

    Returns:
        Tensor: N×C×H×W blurred image, float32 (float64 stays float64).
    """
    if boundary == 'circular':
        return blur(image, kernel, boundary)
    h, w = image.shape[-2:]
    k_h, k_w = kernel.shape[-2:]
    top, left = k_h - 1 - k_h // 2, k_w - 1 - k_w // 2
    dtype = torch.promote_types(image.dtype, torch.float32)
    with torch.autocast(image.device.type, enabled=False):
        padded = _pad(image.to(dtype), (top, k_h // 2, left, k_w // 2), boundary)
        size = (_fast_fft_len(padded.shape[-2]), _fast_fft_len(padded.shape[-1]))
        spectrum = torch.fft.rfft2(padded, s=size) * psf2otf(kernel.to(dtype), size)
        return torch.fft.irfft2(spectrum, s=size)[..., top:top + h, left:left + w]


def reblur(sharp, kernel, light='linear', boundary='reflect'):
    """Blur sRGB-encoded sharp images with kernels the way the data was blurred.

    Args:
        sharp (Tensor): N×C×H×W sharp images, sRGB encoded, in [0, 1].
        kernel (Tensor): N×1×k×k kernels in `jude_arch.archs.blur`'s convention (or N×k×k).
        light (str): 'linear': decode, blur, encode (synthetic data, real camera shake); 'srgb': blur the
            encoded values as they are.
        boundary (str): `blur`'s boundary handling.

    Returns:
        Tensor: N×C×H×W blurred images, sRGB encoded.
    """
    _check_light(light)
    if kernel.dim() == 3:
        kernel = kernel[:, None]
    if kernel.shape[1] != 1:
        raise ValueError(f'reblur takes one kernel per image (N×1×k×k), got {tuple(kernel.shape)}')
    if light == 'srgb':
        return fft_blur(sharp, kernel, boundary)
    return linear_to_srgb(fft_blur(srgb_to_linear(sharp), kernel, boundary).clamp(0, 1))


def reblur_psnr(sharp, kernel, blurred, light='linear', crop_border=None):
    """PSNR (dB, per image) of `reblur(sharp, kernel)`, rounded to 8 bits, against the observed blurred image.

    Args:
        sharp (Tensor): N×C×H×W sharp images (e.g. LOL-Blur's `low_sharp`), sRGB encoded, in [0, 1].
        kernel (Tensor): N×1×k×k kernels to test.
        blurred (Tensor): N×C×H×W noise-free blurred images (`low_blur`), 8-bit values in [0, 1].
        light (str): space the data was blurred in ('linear' or 'srgb').
        crop_border (int | None): pixels left out at every side, where the observation depends on scene content
            outside the frame; default: the kernel's radius.

    Returns:
        Tensor: N PSNRs in dB (capped at 100 for a perfect match).
    """
    crop = kernel.shape[-1] // 2 if crop_border is None else crop_border
    return psnr_8bit(reblur(sharp.double(), kernel.double(), light), blurred, crop)


def psnr_8bit(image, reference, crop_border=0):
    """PSNR (dB, per image) of images clamped and rounded to 8 bits against 8-bit references, both in [0, 1].

    Args:
        image (Tensor): N×C×H×W, e.g. JUDE's I_K.
        reference (Tensor): N×C×H×W, e.g. `low_sharp`.
        crop_border (int): pixels left out at every side.

    Returns:
        Tensor: N PSNRs in dB (capped at 100).
    """
    diff = torch.round(image.double().clamp(0, 1) * 255) / 255 - reference.double()
    if crop_border:
        diff = diff[..., crop_border:-crop_border, crop_border:-crop_border]
    return (10 * torch.log10(1 / diff.square().flatten(1).mean(1).clamp_min(1e-10))).float()


def center_pad(kernel, size):
    """Zero-pad …×k×k kernels (odd or even k ≤ size) to …×size×size, keeping the centre at k // 2 → size // 2."""
    k = kernel.shape[-1]
    if k > size:
        raise ValueError(f'a {k}×{k} kernel does not fit in {size}×{size}; use a kernel size of at least {k}')
    before = size // 2 - k // 2
    return F.pad(kernel, (before, size - k - before, before, size - k - before))


def _correlations(estimate, target, max_shift):
    """Σ estimate(y, x) · target(y − s_y, x − s_x) for every shift |s| ≤ max_shift: N×(2m+1)² (kernels N×k×k)."""
    size = max(estimate.shape[-1], target.shape[-1])
    estimate, target = center_pad(estimate, size), center_pad(target, size)
    n = estimate.shape[0]
    padded = F.pad(estimate, (max_shift, ) * 4)[None]  # 1×N×(k+2m)×(k+2m)
    return F.conv2d(padded, target[:, None], groups=n)[0].flatten(1)


def _as_single_kernels(kernel, name):
    if kernel.dim() == 4:
        if kernel.shape[1] != 1:
            raise ValueError(f'{name}: one kernel per image expected (N×1×k×k), got {tuple(kernel.shape)}')
        kernel = kernel[:, 0]
    if kernel.dim() != 3:
        raise ValueError(f'{name}: kernels must be N×k×k or N×1×k×k, got {tuple(kernel.shape)}')
    return kernel.float()


def kernel_error(estimate, target, max_shift=4):
    """Relative squared error of estimated kernels, at the best integer shift of the true kernel:

        min_|s|≤m ‖k̂ − shift_s(k)‖² / ‖k‖²      (both zero outside their grids; sizes may differ)

    0 for the true kernel at any shift within the tolerance; about 1 for a uniform estimate of a sparse kernel.

    Args:
        estimate (Tensor): N×k×k (or N×1×k×k) estimated kernels.
        target (Tensor): N×k'×k' (or N×1×k'×k') true kernels.
        max_shift (int): largest tolerated shift in pixels along each axis.

    Returns:
        Tensor: N errors.
    """
    estimate, target = _as_single_kernels(estimate, 'estimate'), _as_single_kernels(target, 'target')
    energy_t = target.square().flatten(1).sum(1)
    energy_e = estimate.square().flatten(1).sum(1)
    best = _correlations(estimate, target, max_shift).amax(1)
    return (energy_e + energy_t - 2 * best) / energy_t.clamp_min(1e-12)


def kernel_similarity(estimate, target, max_shift=4):
    """Normalised cross-correlation of estimated and true kernels at the best shift (1: equal up to the shift).

    Args:
        estimate (Tensor): N×k×k (or N×1×k×k) estimated kernels.
        target (Tensor): N×k'×k' (or N×1×k'×k') true kernels.
        max_shift (int): largest tolerated shift in pixels along each axis.

    Returns:
        Tensor: N similarities in [0, 1] (non-negative kernels).
    """
    estimate, target = _as_single_kernels(estimate, 'estimate'), _as_single_kernels(target, 'target')
    norms = estimate.flatten(1).norm(dim=1) * target.flatten(1).norm(dim=1)
    return _correlations(estimate, target, max_shift).amax(1) / norms.clamp_min(1e-12)


def kernel_entropy(kernel):
    """Entropy of each normalised kernel over its k² taps, as a fraction of log(k²) (1 = uniform).

    Args:
        kernel (Tensor): …×k×k non-negative kernels.

    Returns:
        Tensor: one value per kernel (the leading dimensions).
    """
    p = kernel.float().flatten(-2)
    p = p / p.sum(-1, keepdim=True)
    return -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(p.shape[-1])


def gaussian_kernel(size, sigma):
    """A size×size isotropic Gaussian kernel (float64, sums to 1), centred at size // 2."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-r.square() / (2 * max(float(sigma), 1e-6)**2))
    kernel = g[:, None] * g[None]
    return kernel / kernel.sum()


# Widths the best-Gaussian oracle chooses from (pixels): fine enough that the next width changes little.
GAUSSIAN_SIGMAS = tuple(float(s) for s in torch.logspace(math.log10(0.3), math.log10(8), 40, dtype=torch.float64))
REFERENCE_KERNELS = ('uniform', 'best_gaussian', 'true')


def best_gaussian_kernel(sharp, blurred, size, light='linear', sigmas=GAUSSIAN_SIGMAS):
    """For each image, the isotropic Gaussian whose re-blur PSNR is highest: an oracle (it sees the blurred image
    the estimate is scored on), the bar an estimator that reads the blur's extent from the image must reach.

    Args:
        sharp (Tensor): N×C×H×W sharp images (sRGB, [0, 1]).
        blurred (Tensor): N×C×H×W noise-free blurred images (8-bit values in [0, 1]).
        size (int): kernel side.
        light (str): space the data was blurred in.
        sigmas (Sequence[float]): widths to choose from.

    Returns:
        tuple[Tensor, Tensor]: the N×1×size×size kernels (float32) and their N re-blur PSNRs.
    """
    crop = size // 2
    scores = torch.stack([reblur_psnr(sharp, gaussian_kernel(size, sigma)[None, None].expand(len(sharp), -1, -1, -1),
                                      blurred, light, crop) for sigma in sigmas], 1)  # N×len(sigmas)
    best, index = scores.max(1)
    kernels = torch.stack([gaussian_kernel(size, sigmas[i]) for i in index.tolist()])[:, None]
    return kernels.float().to(sharp.device), best


def reference_reblur_psnr(sharp, blurred, true_kernel=None, size=31, light='linear'):
    """Re-blur PSNRs of the reference kernels on these frames, scored like an estimate of side `size`
    (the same border left out): 'uniform', 'best_gaussian' (`best_gaussian_kernel`) and, when the true kernels
    are known, 'true'.

    Args:
        sharp (Tensor): N×C×H×W sharp images (sRGB, [0, 1]).
        blurred (Tensor): N×C×H×W noise-free blurred images.
        true_kernel (Tensor | None): N×1×k×k true kernels (any odd k).
        size (int): side of the estimated kernels these references stand beside.
        light (str): space the data was blurred in.

    Returns:
        dict[str, Tensor]: N PSNRs (dB) per reference kernel.
    """
    crop = size // 2
    uniform = torch.full((len(sharp), 1, size, size), 1 / size**2, device=sharp.device)
    scores = {'uniform': reblur_psnr(sharp, uniform, blurred, light, crop),
              'best_gaussian': best_gaussian_kernel(sharp, blurred, size, light)[1]}
    if true_kernel is not None:
        scores['true'] = reblur_psnr(sharp, true_kernel, blurred, light, crop)
    return scores


def compare_with_references(estimate, references):
    """One line that says how an estimate's mean re-blur PSNR (dB) reads against the reference kernels', e.g.
    "1.47 dB below the best isotropic Gaussian (38.34, an oracle); uniform kernel 23.85, true kernel 43.11".

    Args:
        estimate (float): the estimate's mean re-blur PSNR.
        references (dict[str, float]): mean PSNRs by `REFERENCE_KERNELS` name (from `reference_reblur_psnr`).
    """
    gap = estimate - references['best_gaussian']
    where = f'{abs(gap):.2f} dB {"above" if gap >= 0 else "below"} the best isotropic Gaussian'
    parts = [f'{where} ({references["best_gaussian"]:.2f} dB, an oracle)', f'uniform kernel {references["uniform"]:.2f}']
    if 'true' in references:
        parts.append(f'true kernel {references["true"]:.2f}')
    return '; '.join(parts)
