"""Random camera-shake blur kernels (a random-walk trajectory splatted onto the kernel grid).

Follows the trajectory model of Boracchi & Foi (2012, "Modeling the performance of image restoration
from motion blur"): a 2-D trajectory whose velocity receives Gaussian and occasional impulsive
accelerations, pulled gently back to the start, sampled densely and splatted bilinearly (so diagonal
and sub-pixel paths stay smooth instead of staircased) onto a k×k grid, centred on its centre of mass.
"""
import numpy as np


def camera_shake_kernel(size, rng, max_length=None, anxiety=0.005, impulse_prob=0.005, samples=2000):
    """Draw one normalised camera-shake kernel.

    Args:
        size (int): kernel side k (the trajectory always fits inside it).
        rng (numpy.random.Generator): source of randomness (seed it for reproducible kernels).
        max_length (float | None): longest trajectory length in pixels; default 0.8 · size.
        anxiety (float): amount of shake (larger: more erratic paths).
        impulse_prob (float): probability of an abrupt shake per sample.
        samples (int): number of trajectory samples.

    Returns:
        numpy.ndarray: float64 k×k kernel, non-negative, summing to 1 (convention of
        `jude_arch.archs.data_step.blur`: true convolution, centred at (k // 2, k // 2)).
    """
    if size < 1:
        raise ValueError(f'kernel size must be ≥ 1, got {size}')
    if size == 1:
        return np.ones((1, 1))
    max_length = 0.8 * size if max_length is None else max_length
    # Velocity random walk (complex numbers as 2-D points).
    centripetal = 0.7 * rng.uniform()
    gaussian = 10 * rng.uniform()
    v = np.exp(1j * rng.uniform(0, 2 * np.pi)) * max_length / samples
    x = np.zeros(samples, complex)
    for t in range(1, samples):
        impulse = 0
        if rng.uniform() < impulse_prob * anxiety * samples:
            impulse = 2 * v * np.exp(1j * np.pi * (rng.uniform() - 0.5))
        dv = impulse + anxiety * (gaussian * (rng.normal() + 1j * rng.normal()) - centripetal * x[t - 1])
        dv *= max_length / samples
        v = v + dv
        v = v / max(abs(v), 1e-12) * max_length / samples
        x[t] = x[t - 1] + v
    # Fit the path into the grid: centre it and shrink it if it is longer than the grid allows.
    x -= x.real.mean() + 1j * x.imag.mean()
    extent = max(np.ptp(x.real), np.ptp(x.imag), 1e-12)
    x *= min(1.0, (size - 2) / extent)
    c = (size - 1) / 2
    px, py = x.real + c, x.imag + c
    kernel = np.zeros((size, size))
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
        np.add.at(kernel, (yi, xi), wgt)
    # Re-centre the mass on the grid centre (integer shift) so that the blur does not translate the image.
    ys, xs = np.indices(kernel.shape)
    total = kernel.sum()
    shift_y = int(round(size // 2 - (ys * kernel).sum() / total))
    shift_x = int(round(size // 2 - (xs * kernel).sum() / total))
    kernel = np.roll(kernel, (shift_y, shift_x), axis=(0, 1))
    return kernel / kernel.sum()
