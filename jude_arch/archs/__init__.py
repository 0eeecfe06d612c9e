"""JUDE's network: the registered `JUDE` architecture and its parts."""
from .compiling import compile_network
from .config import PRESETS, JUDEConfig
from .data_step import BOUNDARIES, FFTDataStep, blur, psf2otf, solve_i_update
from .hyper_net import HyperNet
from .jude_arch import JUDE, State
from .kernel_estimator import KernelEstimator
from .kernel_net import JUDEKernelNet
from .operators import ProximalOperator
from .resunet import ResUNet
from .retinex_heads import IlluminationEnhancer, ReflectanceDenoiser

__all__ = [
    'BOUNDARIES', 'FFTDataStep', 'blur', 'psf2otf', 'solve_i_update', 'HyperNet', 'JUDE', 'JUDEConfig', 'PRESETS',
    'State', 'KernelEstimator', 'JUDEKernelNet', 'ProximalOperator', 'ResUNet', 'IlluminationEnhancer',
    'ReflectanceDenoiser', 'compile_network'
]
