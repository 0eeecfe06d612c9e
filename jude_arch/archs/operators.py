"""JUDE's convolutional sub-networks as the unrolling calls them: D_P, D_Q, D_Z and the two Retinex heads.

Each is its plain network (`ResUNet`, `IlluminationEnhancer`, `ReflectanceDenoiser`) subclassed, not wrapped,
so that the state-dict keys stay those of the plain network (`prox_p.0.head.weight`, `enhancer.tail.bias`):
checkpoints and the released-model converter rely on them. What the subclass adds is how the tensors cross
the boundary between the unrolled math and the convolutions (`ConvLayout`), and for the proximal operators
the noise-level channel, so that a stage reads `P = self.prox_p[i](point, gamma_p)`.
"""
import torch
from torch.utils.checkpoint import checkpoint

from .resunet import ResUNet
from .retinex_heads import IlluminationEnhancer, ReflectanceDenoiser


class ConvLayout:
    """Mixin for a convolutional network inside JUDE: its forward runs on a `memory_format` copy of the input and
    hands back a contiguous (NCHW) result in the input's dtype.

    channels_last is what oneDNN and cuDNN convolve fastest, while the element-wise math and the FFT step of
    the unrolling want NCHW. Under autocast the convolutions run in bf16/fp16, and casting the result back keeps
    the unrolled variables and the FFT step in the input's precision (float32). With `checkpointed`, a forward
    that records gradients keeps only its input and recomputes the activations in the backward pass (one
    network's activations alive at a time instead of a stage's); without gradients there is nothing to save.

    Args (keyword-only, after the network's own):
        memory_format (torch.memory_format): layout the convolutions run in. Default: torch.contiguous_format.
        checkpointed (bool): gradient checkpointing of this network. Default: False.
    """

    def __init__(self, *args, memory_format=torch.contiguous_format, checkpointed=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory_format = memory_format
        self.checkpointed = checkpointed

    def forward(self, x):
        network = super().forward
        inp = x.contiguous(memory_format=self.memory_format)
        if self.checkpointed and torch.is_grad_enabled():
            out = checkpoint(network, inp, use_reentrant=False)
        else:
            out = network(inp)
        return out.to(x.dtype, memory_format=torch.contiguous_format)


def with_noise_level(x, gamma, memory_format=torch.contiguous_format):
    """[x, γ]: x with a constant map of the per-sample noise level γ (shape N) as an extra channel.

    Written straight into one tensor of the operators' memory format (no concatenation, then layout copy).
    """
    n, c, h, w = x.shape
    out = torch.empty(n, c + 1, h, w, dtype=x.dtype, device=x.device, memory_format=memory_format)
    out[:, :c] = x
    out[:, c] = gamma.to(x.dtype).view(n, 1, 1)
    return out


class ProximalOperator(ConvLayout, ResUNet):
    """A learned proximal operator D([point, γ]) of steps 1, 3, 5 (docs/algorithm.md): a 4-in, 3-out `ResUNet`.

    Args:
        channels (Sequence[int]): widths of the four ResUNet levels.
        num_blocks (int): residual blocks per level.
        memory_format, checkpointed: see `ConvLayout`.

    Forward: point (N×3×H×W proximal point) and gamma (N noise levels) → N×3×H×W, in point's dtype.
    """

    def __init__(self, channels, num_blocks, memory_format=torch.contiguous_format, checkpointed=False):
        super().__init__(4, 3, channels, num_blocks, memory_format=memory_format, checkpointed=checkpointed)

    def forward(self, point, gamma):
        return super().forward(with_noise_level(point, gamma, self.memory_format))


class Enhancer(ConvLayout, IlluminationEnhancer):
    """`IlluminationEnhancer` with JUDE's `ConvLayout` (L̂ of docs/algorithm.md)."""


class Denoiser(ConvLayout, ReflectanceDenoiser):
    """`ReflectanceDenoiser` with JUDE's `ConvLayout` (R̂ of docs/algorithm.md)."""
