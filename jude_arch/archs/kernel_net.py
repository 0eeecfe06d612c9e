"""JUDE's kernel estimator as a network of its own, for pretraining it before JUDE (phase 0)."""
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY

from .config import JUDEConfig
from .kernel_estimator import KernelEstimator


@ARCH_REGISTRY.register()
class JUDEKernelNet(nn.Module):
    """The `KernelEstimator` of a JUDE network, alone. Its weights are named as inside JUDE
    (`kernel_estimator.*`), so a checkpoint of it loads into JUDE with `strict_load_g: false`.

    Args:
        preset (str): the JUDE preset whose estimator this is: 'full' or 'small'.
        kernel_size (int | None): side k of the kernels; None: the preset's.
        num_kernels (int | None): basis kernels B; None: the preset's.
        kernel_width (int | None): the estimator's base width; None: the preset's.
        kernel_statistics (bool | None): refine the kernel with the image's gradient correlations (adds
            `kernel_estimator.statistics.*`); None: the preset's (off).

    Returns (forward):
        tuple: kernels N×B×k×k and the weight map N×B×H×W or None (`KernelEstimator`).
    """

    def __init__(self, preset='full', kernel_size=None, num_kernels=None, kernel_width=None, kernel_statistics=None):
        super().__init__()
        cfg = JUDEConfig.from_options(preset, kernel_size=kernel_size, num_kernels=num_kernels,
                                      kernel_width=kernel_width, kernel_statistics=kernel_statistics)
        self.config = dict(kernel_size=cfg.kernel_size, num_kernels=cfg.num_kernels, kernel_width=cfg.kernel_width,
                           kernel_statistics=cfg.kernel_statistics)
        self.kernel_estimator = KernelEstimator(cfg.kernel_size, cfg.num_kernels, cfg.kernel_width,
                                                statistics=cfg.kernel_statistics)

    def forward(self, x):
        return self.kernel_estimator(x)
