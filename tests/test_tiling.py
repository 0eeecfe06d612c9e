"""Tiles and their blending (jude_arch/restore/tiling.py): spans, weights, the one tiled forward, the overlap a
network asks for."""
import pytest
import torch
from helpers import Identity

from jude_arch.archs import JUDE
from jude_arch.restore.restorer import JUDERestorer, RestoreError
from jude_arch.restore.tiling import GENERIC_OVERLAP, TileGrid, overlap_for, span_weights, tile_spans, tiled_forward


@pytest.mark.parametrize('length', [1, 7, 64, 100, 129, 257, 961, 1000])
@pytest.mark.parametrize('tile,overlap', [(48, 16), (64, 0), (96, 32), (200, 64), (512, 64)])
def test_tile_spans_cover_the_axis_with_the_requested_overlap_and_weights_summing_to_one(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(end - start <= tile for start, end in spans)
    assert all(a_end - b_start >= overlap for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(a_end <= c_start for (_, a_end), (c_start, _) in zip(spans, spans[2:]))  # never three deep
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), weight in zip(spans, span_weights(spans, length)):
        assert weight.min() >= 0 and weight.max() <= 1
        total[start:end] += weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-12)


def test_blend_weights_are_smooth_and_zero_at_inner_tile_edges():
    spans = tile_spans(300, 192, 64)
    weights = span_weights(spans, 300)
    # The outer quarter of each overlap belongs to the neighbour alone; the cross-fade steps are small.
    assert weights[1][:16].abs().max() == 0 and weights[0][-16:].abs().max() == 0
    assert max(float(w.diff().abs().max()) for w in weights) < 0.1


def test_tile_grid_weights_sum_to_one_everywhere():
    grid = TileGrid(150, 230, 96, 32)
    assert grid.shape[0] > 1 and grid.shape[1] > 1
    total = torch.zeros(150, 230)
    for tile in grid:
        top, bottom, left, right = tile.box
        total[top:bottom, left:right] += tile.weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_rejects_a_tile_too_small_for_its_overlap():
    with pytest.raises(ValueError, match='3 × the overlap'):
        tile_spans(300, 100, 64)
    with pytest.raises(RestoreError, match='at least 192'):
        JUDERestorer(Identity(), device='cpu', tile=100, tile_overlap=64)


@pytest.mark.parametrize('fill', ['constant', 'random'])
def test_blending_passes_an_image_through_unchanged(fill):
    image = torch.full((3, 150, 230), 0.37) if fill == 'constant' else torch.rand(3, 150, 230)
    restorer = JUDERestorer(Identity(), device='cpu', tile=64, tile_overlap=16)
    assert len(TileGrid(150, 230, 64, 16)) > 6
    torch.testing.assert_close(restorer.restore_tensor(image), image, atol=1e-6, rtol=0)


def test_a_tile_covering_the_image_gives_the_untiled_output_exactly(small_jude, dark_photo):
    with torch.inference_mode():
        direct = small_jude(dark_photo[None])[0].clamp(0, 1)
    untiled = JUDERestorer(small_jude, device='cpu', tile=0).restore_tensor(dark_photo)
    one_tile = JUDERestorer(small_jude, device="cpu", tile=max(dark_photo.shape), tile_overlap=32).restore_tensor(dark_photo)
    assert torch.equal(untiled, direct)
    assert torch.equal(one_tile, direct)


def test_small_tiles_keep_the_size_and_stay_finite(small_jude, dark_photo):
    restorer = JUDERestorer(small_jude, device='cpu', tile=48, tile_overlap=16)
    out = restorer.restore_tensor(dark_photo)
    assert len(TileGrid(64, 96, 48, 16)) >= 4
    assert out.shape == dark_photo.shape and torch.isfinite(out).all()


def test_tiled_forward_runs_every_tile_and_blends_their_outputs():
    x = torch.rand(2, 3, 70, 90)
    grid = TileGrid(70, 90, 48, 16)
    seen = []

    def forward(part, tile):
        seen.append(tile.box)
        assert part.shape[-2:] == (tile.bottom - tile.top, tile.right - tile.left)
        return 2 * part.double()

    out = tiled_forward(forward, x, grid)
    assert len(seen) == len(grid) > 4 and out.dtype == torch.float32
    torch.testing.assert_close(out, 2 * x, atol=1e-6, rtol=0)


def test_the_overlap_is_asked_of_the_network():
    # Two kernel widths rounded up to a multiple of 8: 31 → 64, 33 (the release) → 72, 9 → 24.
    assert JUDE(preset='small').tile_overlap() == 64
    assert JUDE(preset='small', kernel_size=33).tile_overlap() == 72
    assert overlap_for(JUDE(preset='small', kernel_size=9)) == 24
    assert overlap_for(Identity()) == GENERIC_OVERLAP
    assert JUDERestorer(JUDE(preset='small', kernel_size=9), device='cpu', tile=0).tile_overlap == 24
