"""Phase-3 sensor noise on the low-light input: the released code's augmentation, drawn by BasicSR's noise functions."""
import torch
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt

# The released code's phase-3 noise; σ in 8-bit levels, as BasicSR's noise functions take it.
LQ_NOISE_DEFAULTS = {'gaussian_sigma': (0, 8), 'poisson_scale': (0.1, 1.2), 'poisson_prob': 0.5, 'gray_prob': 0.3}


def add_lq_noise(lq, gaussian_sigma=LQ_NOISE_DEFAULTS['gaussian_sigma'],
                 poisson_scale=LQ_NOISE_DEFAULTS['poisson_scale'], poisson_prob=LQ_NOISE_DEFAULTS['poisson_prob'],
                 gray_prob=LQ_NOISE_DEFAULTS['gray_prob']):
    """Add one random draw of phase-3 sensor noise to an image (the released code's phase 3).

    Poisson noise (scale ~ U[poisson_scale]) with probability `poisson_prob`, otherwise Gaussian noise
    (σ ~ U[gaussian_sigma] / 255); grey (identical in every channel) with probability `gray_prob`; the result
    is clipped to [0, 1]. BasicSR's noise functions do the drawing, on the torch random generator (seeded
    per worker by the DataLoader).

    Args:
        lq (Tensor): C×H×W image in [0, 1] (RGB when grey Poisson noise can be drawn).
        gaussian_sigma (Sequence[float]): range of the Gaussian σ, in 8-bit levels.
        poisson_scale (Sequence[float]): range of the Poisson noise scale.
        poisson_prob (float): probability of Poisson rather than Gaussian noise.
        gray_prob (float): probability of grey noise.

    Returns:
        Tensor: the noisy C×H×W image.
    """
    if torch.rand(()) < poisson_prob:
        noisy = random_add_poisson_noise_pt(lq[None], scale_range=poisson_scale, gray_prob=gray_prob, clip=True)
    else:
        noisy = random_add_gaussian_noise_pt(lq[None], sigma_range=gaussian_sigma, gray_prob=gray_prob, clip=True)
    return noisy[0]


def parse_lq_noise(options):
    """The `lq_noise` options completed with the defaults and checked (None: no noise)."""
    if options is None:
        return None
    unknown = set(options) - set(LQ_NOISE_DEFAULTS)
    if unknown:
        raise ValueError(f'lq_noise: unknown option(s) {sorted(unknown)}; known: {sorted(LQ_NOISE_DEFAULTS)}')
    noise = {**LQ_NOISE_DEFAULTS, **options}
    for name in ('gaussian_sigma', 'poisson_scale'):
        low, high = noise[name]
        if not 0 <= low <= high:
            raise ValueError(f'lq_noise.{name} must be a range [low, high] with 0 ≤ low ≤ high, got {noise[name]}')
    for name in ('poisson_prob', 'gray_prob'):
        if not 0 <= noise[name] <= 1:
            raise ValueError(f'lq_noise.{name} must lie in [0, 1], got {noise[name]}')
    return noise
