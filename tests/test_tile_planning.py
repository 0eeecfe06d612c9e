"""Automatic tiles (jude_arch/restore/tile_planning.py): the network's memory measured, the largest tile that fits."""
import pytest
import torch
from helpers import AllocatesPerPixel

from jude_arch.restore import restorer as restorer_module
from jude_arch.restore import tile_planning
from jude_arch.restore.restorer import JUDERestorer, RestoreError


def test_memory_model_measures_bytes_per_pixel():
    restorer = JUDERestorer(AllocatesPerPixel(), device='cpu', tile='auto', tile_overlap=16)
    base, per_pixel = restorer.memory_model()
    assert per_pixel == pytest.approx(112) and base == pytest.approx(0, abs=1)


def test_auto_tile_fits_the_free_memory(monkeypatch):
    restorer = JUDERestorer(AllocatesPerPixel(), device='cpu', tile='auto', tile_overlap=16)
    host = tile_planning.HOST_BYTES_PER_PIXEL * 600 * 800
    # Half of this "free memory" holds the image buffers plus 112 B × 256² of network tensors.
    monkeypatch.setattr(restorer_module, 'available_memory', lambda device: 2 * (host + 112 * 256**2))
    assert restorer.tile_size(600, 800) == 256
    image = torch.rand(3, 600, 800)
    torch.testing.assert_close(restorer.restore_tensor(image), image, atol=1e-6, rtol=0)

    monkeypatch.setattr(restorer_module, 'available_memory', lambda device: 2**40)
    assert restorer.tile_size(600, 800) == 0  # fits at once
    monkeypatch.setattr(restorer_module, 'available_memory', lambda device: 2 * host)
    with pytest.raises(RestoreError, match='not enough free memory .* do not even hold the image and the network'):
        restorer.tile_size(600, 800)
    monkeypatch.setattr(restorer_module, 'available_memory', lambda device: 2 * (host + 112 * 100**2))
    with pytest.raises(RestoreError, match='room for tiles of only 96×96 px, below the minimum of 128×128'):
        restorer.tile_size(600, 800)


def test_auto_tile_for_jude_is_measured_at_the_chosen_precision(small_jude):
    fp32 = JUDERestorer(small_jude, device='cpu', precision='fp32').memory_model()[1]
    bf16 = JUDERestorer(small_jude, device='cpu', precision='bf16').memory_model()[1]
    # Every convolution activation is half as large in bf16; the unrolled variables stay float32.
    assert 0.3 * fp32 < bf16 < 0.9 * fp32
