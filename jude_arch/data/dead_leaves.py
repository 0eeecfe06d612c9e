"""Dead-leaves images: synthetic "photos" with the edge statistics of natural scenes, for kernel pretraining.

A dead-leaves image is a stack of opaque discs whose radii follow a 1/r³ law, the model under which an image's
statistics are scale invariant, as natural images' are (Lee, Mumford & Huang 2001); it is the standard target
for measuring a camera's texture sharpness. For a blur estimator it adds what a few photos lack: edges of every
orientation, contrast and size, so that what it learns is the blur, not the photos. They cost nothing to
make and nothing to download.
"""
import cv2
import numpy as np


def dead_leaves(size, rng, min_radius=2.0, max_radius=None, grey_fraction=0.3, coverage=0.998, max_discs=20000):
    """Draw one dead-leaves image.

    Args:
        size (int): side of the square image.
        rng (numpy.random.Generator): source of randomness.
        min_radius (float): smallest disc radius in pixels.
        max_radius (float | None): largest; default size / 2.
        grey_fraction (float): fraction of grey discs (the rest get a random colour).
        coverage (float): the image is complete once this fraction is covered (the rest keeps the backdrop).
        max_discs (int): at most this many discs.

    Returns:
        numpy.ndarray: size×size×3 uint8 image (BGR, as read from a file).
    """
    max_radius = size / 2 if max_radius is None else max_radius
    # Discs are drawn front to back, each only where no nearer disc lies: the stack is complete once covered.
    image = np.zeros((size, size, 3), np.uint8)
    covered = np.zeros((size, size), bool)
    uncovered, enough = size * size, size * size * (1 - coverage)
    a, b = min_radius**-2, max_radius**-2
    shift = 4  # cv2 draws with 1/16-pixel precision
    for _ in range(max_discs):
        radius = (a - rng.uniform() * (a - b))**-0.5  # inverse CDF of p(r) ∝ r^-3 on [min, max]
        x, y = rng.uniform(-radius, size + radius, 2)
        colour = rng.uniform(0, 255, 3) if rng.uniform() >= grey_fraction else np.full(3, rng.uniform(0, 255))
        top, left = max(0, int(y - radius) - 1), max(0, int(x - radius) - 1)
        bottom, right = min(size, int(y + radius) + 2), min(size, int(x + radius) + 2)
        if top >= bottom or left >= right:
            continue
        disc = np.zeros((bottom - top, right - left), np.uint8)
        cv2.circle(disc, (int(round((x - left) * 2**shift)), int(round((y - top) * 2**shift))),
                   int(round(radius * 2**shift)), 1, -1, cv2.LINE_8, shift)
        new = (disc > 0) & ~covered[top:bottom, left:right]
        image[top:bottom, left:right][new] = np.round(colour).astype(np.uint8)
        covered[top:bottom, left:right] |= new
        uncovered -= int(new.sum())
        if uncovered <= enough:
            break
    # A lens never draws a perfectly sharp step: a slight blur keeps the edges from aliasing.
    return cv2.GaussianBlur(image, (0, 0), 0.5)
