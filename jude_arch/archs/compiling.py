"""`torch.compile` of JUDE, in place and by parts: the option `compile` of training, validation and `jude-restore`.

JUDE is three ResUNets called at full resolution in every stage plus cheap element-wise updates and an FFT step.
What compiling buys is fusion: the ReLUs, residual additions, padding and layout copies around each convolution
become one generated kernel instead of several passes over a full-resolution tensor, and fewer kernel launches.
The parts:

- 'operators' (what `true` means): each convolutional sub-network (D_P, D_Q, D_Z, the illumination enhancer, the
  reflectance denoiser) is compiled on its own. They are the convolutions, nearly all of the arithmetic; one shared
  operator is compiled once and reused by every stage, so compilation stays short. The unrolled updates and the FFT
  step run eagerly between them.
- 'network': the whole forward pass, stages and FFT step included, as one program: more fusion (the element-wise
  stage updates too), a compilation that grows with the number of stages.

Compiling is in place (`nn.Module.compile`): the parameters, the state-dict keys and the checkpoints stay those of
the eager network, so a compiled network saves, loads and averages (EMA) exactly as before. Outputs equal the
eager ones up to float rounding (tests/test_compiling.py checks both parts against eager on the CPU).
"""
COMPILE_PARTS = ('operators', 'network')
CHOICES = (False, True) + COMPILE_PARTS


def compile_parts(value, where='compile'):
    """The parts an option value asks to compile: None (false), 'operators' (true) or 'network'.

    Raises:
        ValueError: a value that is none of false, true, 'operators', 'network'; the message names `where`.
    """
    if value is None or value is False:
        return None
    if value is True:
        return 'operators'
    if isinstance(value, str) and value in COMPILE_PARTS:
        return value
    raise ValueError(f'{where} must be false, true, operators or network, got {value!r}')


def compile_network(net, parts=True, **compile_options):
    """Compile `net` in place and return it.

    Args:
        net (nn.Module): a JUDE network, or any other network (compiled whole: it has no JUDE parts).
        parts: false (nothing), true / 'operators' or 'network' (see the module docstring).
        **compile_options: passed to `torch.compile` (e.g. mode='max-autotune').
    """
    parts = compile_parts(parts)
    if parts is None:
        return net
    modules = operator_modules(net) if parts == 'operators' else []
    for module in modules or [net]:
        module.compile(**compile_options)
    return net


def operator_modules(net):
    """JUDE's convolutional sub-networks (D_P, D_Q, D_Z of every stage, enhancer, denoiser); [] for another net."""
    from .jude_arch import JUDE
    if not isinstance(net, JUDE):
        return []
    return [*net.prox_p, *net.prox_q, *net.prox_z, net.enhancer, net.denoiser]
