"""OpenCV-layout images to the network's RGB tensors and back (jude_arch/restore/image_conversion.py)."""
import numpy as np
import pytest
import torch
from helpers import Identity

from jude_arch.restore.restorer import JUDERestorer


@pytest.mark.parametrize('shape,dtype', [((9, 13, 3), np.uint8), ((9, 13, 3), np.uint16), ((9, 13), np.uint8),
                                         ((9, 13, 1), np.uint16), ((9, 13, 4), np.uint8), ((9, 13, 4), np.uint16)])
def test_conversions_round_trip_exactly(shape, dtype):
    image = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    restored = JUDERestorer(Identity(), device='cpu', tile=0).restore(image)
    assert restored.dtype == image.dtype and restored.shape == image.shape
    np.testing.assert_array_equal(restored, image)


def test_colour_order_reaches_the_network_as_rgb():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    seen = {}

    class Spy(Identity):

        def forward(self, x):
            seen['x'] = x.clone()
            return x

    JUDERestorer(Spy(), device='cpu', tile=0).restore(bgr)
    assert torch.equal(seen['x'][0, 2], torch.ones(4, 5)) and seen['x'][0, :2].abs().max() == 0
