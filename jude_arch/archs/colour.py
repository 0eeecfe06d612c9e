"""The sRGB transfer function (IEC 61966-2-1) on tensors: camera shake and sensor noise act on linear light,
images are stored encoded. Used by the physics measures (`jude_arch.physics`) and the kernel estimator's blur
statistics (`blur_statistics`)."""
import torch


def srgb_to_linear(x):
    """The sRGB transfer function's inverse, for tensors in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055)**2.4)


def linear_to_srgb(x):
    """The sRGB transfer function, for tensors in [0, 1]."""
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308)**(1 / 2.4) - 0.055)
