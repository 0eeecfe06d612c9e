"""Fixtures and hooks only (helpers the tests import are in helpers.py): real photographs bundled with
scikit-image, realistic blur kernels, a small JUDE. No downloads."""
import logging

import numpy as np
import pytest
import torch
from helpers import load_photo

import jude_arch  # noqa: F401  (shims + registration before anything imports basicsr)
from jude_arch.archs import JUDE, blur
from jude_arch.data.blur_kernels import camera_shake_kernel

torch.set_num_threads(min(2, torch.get_num_threads()))

TEST_TIMEOUT_S = 600


def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs a CUDA GPU (skipped without one); run them with pytest -m cuda')
    config.addinivalue_line('markers', 'slow: runs subprocesses that take long (training runs, builds and installs, '
                            'the CLI, the web app in a browser); the quick run deselects them with -m "not slow"')


def pytest_collection_modifyitems(items):
    # A hang fails its own test (pytest-timeout prints where it hung) instead of stalling CI to its limit.
    for item in items:
        if item.get_closest_marker('timeout') is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
def photo():
    return load_photo()


@pytest.fixture
def shake_kernel():
    """A 15×15 camera-shake kernel (1×1×15×15, float64) from a fixed seed."""
    return torch.from_numpy(camera_shake_kernel(15, np.random.default_rng(3)))[None, None]


@pytest.fixture(scope='module')
def small_jude():
    """The small preset with fixed random weights, in eval mode."""
    torch.manual_seed(0)
    return JUDE(preset='small').eval()


@pytest.fixture(scope='module')
def dark_photo():
    """A real photo made dark and shaky: 3×64×96 RGB in [0, 1]."""
    sharp = load_photo('astronaut', 96).float()[..., 16:80, :]
    kernel = torch.from_numpy(camera_shake_kernel(9, np.random.default_rng(1))).float()
    return (0.3 * blur(sharp, kernel)).clamp(0, 1)[0]


@pytest.fixture
def log(caplog):
    """BasicSR's log of the test (its logger does not propagate to pytest's)."""
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)
