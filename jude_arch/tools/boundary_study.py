"""Which boundary should the FFT data step assume? A measurement on photos whose borders hold real content.

`python -m jude_arch.tools.boundary_study` prints the table of docs/boundary.md. Every observation is cut from a
LARGER blurred photo, so the pixels just outside its frame are real scene content that the blur carried in:
exactly the situation of a camera photo (and of a training crop). An observation made by blurring the crop
itself with reflected borders would favour the 'reflect' boundary by construction.

For each pair (a random crop of one of scikit-image's bundled photos, a random camera-shake kernel), the
noiseless observation is deblurred by one closed-form data step (`solve_i_update`, Z = X, Δ = 0, fixed λ's)
with each boundary, and the PSNR gain over the blurred observation is measured on the whole image and on the
band of `border` pixels along the frame.
"""
import argparse
import sys

import numpy as np
import torch

from ..archs.data_step import BLUR_BOUNDARIES, blur, solve_i_update
from ..data.blur_kernels import camera_shake_kernel
from ..data.synthesis import _load_photo, skimage_photo_paths


def _psnr(a, b, mask=None):
    diff = (a - b).square()
    mse = diff.mean() if mask is None else diff[..., mask].mean()
    return (10 * torch.log10(1 / mse)).item()


def observation_pairs(pairs=80, size=192, kernel_size=15, seed=0):
    """Yield (sharp, observed, kernel): noiseless observations cut from larger blurred photos.

    Args:
        pairs (int): number of photo × kernel pairs, spread evenly over the bundled photos.
        size (int): side of the observation.
        kernel_size (int): side of the camera-shake kernels.
        seed (int): seed of the crops and kernels.

    Yields:
        tuple[Tensor, Tensor, Tensor]: 1×3×size×size sharp crop and observation (float64), 1×1×k×k kernel.
    """
    rng = np.random.default_rng(seed)
    photos = [torch.from_numpy(_load_photo(path)[0].copy()).permute(2, 0, 1)[None] for path in skimage_photo_paths()]
    margin = kernel_size  # more than the kernel's reach: every observed pixel sees only real content
    for i in range(pairs):
        photo = photos[i % len(photos)]
        h, w = photo.shape[-2:]
        top = int(rng.integers(margin, h - size - margin + 1))
        left = int(rng.integers(margin, w - size - margin + 1))
        region = photo[..., top - margin:top + size + margin, left - margin:left + size + margin]
        kernel = torch.from_numpy(camera_shake_kernel(kernel_size, rng))[None, None]
        inner = (slice(margin, margin + size), slice(margin, margin + size))
        yield region[(..., *inner)], blur(region, kernel)[(..., *inner)], kernel


def compare_boundaries(pairs=80, size=192, kernel_size=15, border=16, lam1=1.0, lam5=0.002, seed=0,
                       boundaries=BLUR_BOUNDARIES):
    """PSNR gains of one data step over the blurred observation, per boundary (see the module docstring).

    Returns:
        dict: {boundary: {'whole': array of gains in dB, 'border': array of gains in dB}}.
    """
    band = torch.ones(size, size, dtype=torch.bool)
    band[border:-border, border:-border] = False
    gains = {b: {'whole': [], 'border': []} for b in boundaries}
    lam1, lam5 = torch.tensor([lam1], dtype=torch.float64), torch.tensor([lam5], dtype=torch.float64)
    for sharp, observed, kernel in observation_pairs(pairs, size, kernel_size, seed):
        base_whole, base_border = _psnr(observed, sharp), _psnr(observed, sharp, band)
        for boundary in boundaries:
            restored = solve_i_update(observed, observed, torch.zeros_like(observed), kernel, lam1, lam5,
                                      boundary=boundary)
            gains[boundary]['whole'].append(_psnr(restored, sharp) - base_whole)
            gains[boundary]['border'].append(_psnr(restored, sharp, band) - base_border)
    return {b: {k: np.array(v) for k, v in g.items()} for b, g in gains.items()}


def format_table(gains, border=16):
    """Markdown table of `compare_boundaries`' result: mean and worst gain, and how often each mode is best."""
    names = list(gains)
    wins = {region: np.argmax(np.stack([gains[b][region] for b in names]), axis=0) for region in ('whole', 'border')}
    lines = [f'| boundary | whole image: mean gain (dB) | worst | best on | {border}-px border band: mean gain (dB) '
             '| worst | best on |', '|---|---|---|---|---|---|---|']
    for i, name in enumerate(names):
        cells = [name]
        for region in ('whole', 'border'):
            g = gains[name][region]
            cells += [f'{g.mean():+.2f}', f'{g.min():+.2f}', f'{(wins[region] == i).sum()} / {len(g)}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=80, help='photo × kernel pairs (default 80)')
    parser.add_argument('--size', type=int, default=192, help='observation side (default 192)')
    parser.add_argument('--kernel-size', type=int, default=15, help='camera-shake kernel side (default 15)')
    parser.add_argument('--border', type=int, default=16, help='width of the border band (default 16)')
    parser.add_argument('--lam5', type=float, default=0.002, help='coupling weight λ5 (λ1 = 1; default 0.002)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    gains = compare_boundaries(args.pairs, args.size, args.kernel_size, args.border, lam5=args.lam5, seed=args.seed)
    print(f'{args.pairs} pairs: {args.size}² crops of scikit-image photos, {args.kernel_size}×{args.kernel_size} '
          f'camera shake, noiseless, λ1 = 1, λ5 = {args.lam5}; gain = PSNR(restored) − PSNR(blurred)')
    print(format_table(gains, args.border))
    diff = gains['replicate']['whole'] - gains['reflect']['whole'], \
        gains['replicate']['border'] - gains['reflect']['border']
    print(f'replicate − reflect: whole {diff[0].mean():+.2f} dB (min {diff[0].min():+.2f}, max {diff[0].max():+.2f}), '
          f'border {diff[1].mean():+.2f} dB (min {diff[1].min():+.2f}, max {diff[1].max():+.2f})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
