"""Tiled restoration: run a network on overlapping tiles and blend them with smooth weights.

Used by JUDEModel's validation (`val.tile`) for frames too large for one forward pass. Each tile is
restored on its own (for JUDE: with its own estimated kernel); where tiles overlap, their outputs are
mixed with raised-cosine ramps across the overlap, normalised so the weights sum to one at every pixel:
no seams, and a network that is exact on every tile gives back the exact image.
"""
import math

import torch


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` pixels shared.

    Args:
        length (int): image side.
        tile (int): tile side (the whole side when length ≤ tile).
        overlap (int): minimum overlap of neighbouring tiles, 0 ≤ overlap < tile.

    Returns:
        list[int]: increasing offsets; the last tile ends exactly at `length`.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def _ramp(size, overlap, ramp_start, ramp_end, device):
    """1-D weights: 1 inside, a raised-cosine ramp over `overlap` pixels at each side that meets a neighbour."""
    w = torch.ones(size, dtype=torch.float32, device=device)
    if overlap > 0:
        # Strictly positive ramp: (i + 0.5) / overlap in (0, 1), shaped by 0.5 - 0.5·cos(π·t).
        t = (torch.arange(overlap, dtype=torch.float32, device=device) + 0.5) / overlap
        ramp = 0.5 - 0.5 * torch.cos(math.pi * t)
        if ramp_start:
            w[:overlap] = ramp
        if ramp_end:
            w[size - overlap:] = torch.minimum(w[size - overlap:], ramp.flip(0))
    return w


def tiled_forward(net, x, tile, overlap):
    """Restore x tile by tile and blend the tiles.

    Args:
        net (Callable[[Tensor], Tensor]): maps N×C×h×w to N×C'×h×w (same spatial size).
        x (Tensor): N×C×H×W input.
        tile (int): tile side in pixels (> overlap).
        overlap (int): pixels shared by neighbouring tiles (≥ 0).

    Returns:
        Tensor: N×C'×H×W, float32 (float64 if x is float64).
    """
    if not isinstance(tile, int) or not isinstance(overlap, int) or tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f'tiling: need integers 0 <= overlap < size, got size={tile!r}, overlap={overlap!r}')
    h, w = x.shape[-2:]
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    dtype = torch.promote_types(x.dtype, torch.float32)
    out = weight = None
    for i, top in enumerate(rows):
        wy = _ramp(th, overlap, i > 0, i < len(rows) - 1, x.device)
        for j, left in enumerate(cols):
            wx = _ramp(tw, overlap, j > 0, j < len(cols) - 1, x.device)
            patch = net(x[..., top:top + th, left:left + tw]).to(dtype)
            if out is None:
                out = patch.new_zeros(*patch.shape[:2], h, w)
                weight = patch.new_zeros(1, 1, h, w)
            mask = (wy[:, None] * wx[None, :]).to(dtype)
            out[..., top:top + th, left:left + tw] += patch * mask
            weight[..., top:top + th, left:left + tw] += mask
    return out / weight
