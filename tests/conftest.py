"""Shared fixtures: real photographs bundled with scikit-image, realistic blur kernels. No downloads."""
import struct
import zlib

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

import jude_arch  # noqa: F401  (shims + registration before anything imports basicsr)
from jude_arch.data.blur_kernels import camera_shake_kernel

torch.set_num_threads(min(2, torch.get_num_threads()))

TEST_TIMEOUT_S = 600


def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs a CUDA GPU (skipped without one); run them with pytest -m cuda')
    config.addinivalue_line('markers', 'slow: takes minutes (builds and installs packages); deselect with '
                            '-m "not slow"')


def pytest_collection_modifyitems(items):
    # A hang fails its own test (pytest-timeout prints where it hung) instead of stalling CI to its limit.
    for item in items:
        if item.get_closest_marker('timeout') is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


def load_photo(name='astronaut', size=256):
    """A scikit-image sample photo as a 1×3×size×size float64 tensor in [0, 1]."""
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = skimage.transform.resize(img[..., :3], (size, size), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def png_declaring(width, height):
    """A well-formed PNG (valid chunks and CRCs) whose header declares width×height but that holds a few bytes."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


@pytest.fixture
def photo():
    return load_photo()


@pytest.fixture
def shake_kernel():
    """A 15×15 camera-shake kernel (1×1×15×15, float64) from a fixed seed."""
    return torch.from_numpy(camera_shake_kernel(15, np.random.default_rng(3)))[None, None]
