"""Overlapping tiles and seamless blending weights for restoring images larger than memory allows.

Along each axis the image is covered by equal tiles whose neighbours overlap by at least the requested
overlap. Each overlap band is split in quarters: the outer quarter next to a tile's edge gets weight 0
in that tile (the band whose blur reaches past the tile, where the tile is least reliable), the middle
half is a raised-cosine cross-fade, and the two cross-fading weights are complementary, so the weights
of all tiles sum to exactly 1 at every pixel. The 2-D weights are outer products of the 1-D ones,
which keeps that property. A tile at least as large as the image is the image itself, with weight 1.

`tiled_forward` runs a network tile by tile and blends the results: the one tiled forward of the project, used
by `JUDERestorer` (`jude-restore`, the web app) and by `JUDEModel`'s validation (`val.tile`).
"""
import math
from dataclasses import dataclass

import torch

from ..archs import JUDE

# Overlap for networks that do not say what they need (JUDE does: `JUDE.tile_overlap`).
GENERIC_OVERLAP = 32


def tile_spans(length, tile, overlap):
    """Equal spans covering [0, length), neighbours overlapping by at least `overlap`.

    The tile may shrink below `tile` so that the spans are equal and the overlaps as even as integer
    positions allow; it never shrinks below (tile + overlap) / 2, so with tile ≥ 3·overlap no pixel
    is covered by more than two spans.

    Args:
        length (int): length of the axis.
        tile (int): largest span length; at least 3 × overlap when it is shorter than the axis.
        overlap (int): smallest overlap of neighbouring spans.

    Returns:
        list[tuple[int, int]]: (start, end) of each span, in order.
    """
    if tile >= length:
        return [(0, length)]
    if overlap < 0 or tile < 3 * overlap or tile < 1:
        raise ValueError(f'tile {tile} must be positive and at least 3 × the overlap {overlap}')
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    # Floor division keeps every step at most size − overlap, so every overlap is at least `overlap`.
    return [(i * (length - size) // (count - 1), i * (length - size) // (count - 1) + size) for i in range(count)]


def _cross_fade(overlap):
    """Weight of the later span across an overlap of `overlap` pixels (the earlier span gets 1 − it)."""
    margin = overlap // 4
    ramp = overlap - 2 * margin
    weight = torch.zeros(overlap, dtype=torch.float64)
    if ramp:
        position = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        weight[margin:margin + ramp] = torch.sin(0.5 * math.pi * position).square()
    weight[margin + ramp:] = 1
    return weight


def span_weights(spans, length):
    """1-D blending weights of each span, summing to 1 at every position of the axis.

    Args:
        spans (list[tuple[int, int]]): the spans of `tile_spans`.
        length (int): length of the axis.

    Returns:
        list[Tensor]: float64 weights of each span, one value per pixel of the span.
    """
    weights = [torch.ones(end - start, dtype=torch.float64) for start, end in spans]
    for i in range(len(spans) - 1):
        (_, end), (next_start, _) = spans[i], spans[i + 1]
        fade = _cross_fade(end - next_start)
        weights[i + 1][:end - next_start] = fade
        weights[i][next_start - spans[i][0]:] = 1 - fade
    return weights


@dataclass(frozen=True)
class Tile:
    """One tile: its box in the image and its blending weights (H_t×W_t, float32)."""

    row: int
    col: int
    top: int
    bottom: int
    left: int
    right: int
    weight: torch.Tensor

    @property
    def box(self):
        """(top, bottom, left, right) in image pixels, bottom/right exclusive."""
        return self.top, self.bottom, self.left, self.right


class TileGrid:
    """The tiles of an H×W image and their blending weights.

    Args:
        height (int): image height.
        width (int): image width.
        tile (int): largest tile side; 0 means one tile covering the whole image.
        overlap (int): smallest overlap of neighbouring tiles, in pixels.
    """

    def __init__(self, height, width, tile, overlap):
        tile = tile or max(height, width)
        self.rows = tile_spans(height, tile, overlap)
        self.cols = tile_spans(width, tile, overlap)
        self._row_weights = span_weights(self.rows, height)
        self._col_weights = span_weights(self.cols, width)

    @property
    def shape(self):
        """(tile rows, tile columns)."""
        return len(self.rows), len(self.cols)

    def __len__(self):
        return len(self.rows) * len(self.cols)

    def __iter__(self):
        for r, ((top, bottom), w_row) in enumerate(zip(self.rows, self._row_weights)):
            for c, ((left, right), w_col) in enumerate(zip(self.cols, self._col_weights)):
                yield Tile(r, c, top, bottom, left, right, torch.outer(w_row, w_col).float())


def overlap_for(net):
    """The tile overlap a network needs: JUDE's own (two blur-kernel widths), `GENERIC_OVERLAP` for any other."""
    return net.tile_overlap() if isinstance(net, JUDE) else GENERIC_OVERLAP


def tiled_forward(forward, x, grid, tiles=None):
    """Run `forward` on every tile of an image and blend the outputs with the grid's weights.

    Args:
        forward (callable): forward(x_tile, tile) → N×C×h×w output of the tile (any device; it may also record
            per-tile results of its own).
        x (Tensor): N×C×H×W input.
        grid (TileGrid): the tiles of x.
        tiles (Iterable[Tile] | None): the grid's tiles to iterate, e.g. wrapped in a progress bar; None: the grid.

    Returns:
        Tensor: N×C×H×W float32, on the device of the tiles' outputs.
    """
    output = None
    for tile in grid if tiles is None else tiles:
        restored = forward(x[..., tile.top:tile.bottom, tile.left:tile.right], tile).float()
        if output is None:
            output = restored.new_zeros(*restored.shape[:-2], *x.shape[-2:])
        output[..., tile.top:tile.bottom, tile.left:tile.right] += tile.weight.to(restored.device) * restored
    return output
