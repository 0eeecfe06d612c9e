"""`checkpoint_stages: auto`: recompute the operators' activations only when a training step would not fit otherwise.

Gradient checkpointing costs time (measured on an H200: the phase-1 step in bf16 takes 0.282 s with it, 0.221 s
without; docs/performance.md and docs/gpu.md) and is only needed when the activations of a training step do not
fit the device. With 'auto' the network decides at the first training forward pass of each input shape:

1. The memory model of a training step without checkpointing, bytes = base + per_pixel × (N·H·W), is measured
   once per device and precision on a copy of the network with two small probe batches (1×3×64² and 1×3×128²):
   the peak of tensor bytes alive during forward and backward (`PeakTensorMemory`), parameter gradients
   included. It is the network's own arithmetic, so it holds for any preset or option, and the autocast that is
   active at that moment (the training precision) is the one measured.
2. Checkpointing is switched off when `SAFETY` × that estimate plus the optimizer's two moments (Adam: 2 × the
   parameters' bytes, not allocated yet at the first step) fits in `AUTO_FRACTION` of the memory free on the
   device (`available_memory`: CUDA's free memory plus what PyTorch holds unused; the CPU's available RAM).
   The count sees tensors only, not cuDNN's workspaces or the allocator's rounding: on an H200 the full preset's
   training steps peaked at 1.2× (fp32) and 1.6× (bf16) this model as measured on a CPU (phase 1: 52.8 GiB
   against 44.3 in fp32, 27.9 against 17.0 in bf16; phase 3: 69.9 against 59.0, 36.7 against 22.6), hence
   `SAFETY` = 1.7.

The decision is logged once per shape and the same for every later step of that shape.
"""
import logging

import torch

PROBE_SIDES = (64, 128)
SAFETY = 1.7
AUTO_FRACTION = 0.9

logger = logging.getLogger('basicsr')


def measure_training_memory(build_probe, device):
    """(base bytes, bytes per pixel) of a training step (forward + backward) without checkpointing.

    Args:
        build_probe (callable): returns a fresh network (checkpointing off, train mode) on `device`.
        device (torch.device): where the probes run.
    """
    from ..restore.memory import PeakTensorMemory

    net = build_probe()
    peaks = []
    for side in PROBE_SIDES:
        x = torch.full((1, 3, side, side), 0.3, device=device)
        with PeakTensorMemory(device) as tracker:
            net(x).float().abs().mean().backward()
        net.zero_grad(set_to_none=True)
        peaks.append(tracker.peak)
    per_pixel = (peaks[1] - peaks[0]) / (PROBE_SIDES[1]**2 - PROBE_SIDES[0]**2)
    base = max(peaks[0] - per_pixel * PROBE_SIDES[0]**2, 0.0)
    return base, max(per_pixel, 1.0)


def estimate_bytes(model, batch, height, width):
    """Estimated peak bytes of a training step without checkpointing, from `measure_training_memory`'s model."""
    base, per_pixel = model
    return base + per_pixel * batch * height * width


class AutoCheckpoint:
    """The 'auto' decision of one network: memory models per device and precision, decisions per input shape.

    Args:
        build_probe (callable): build_probe(device) returns a fresh copy of the network without checkpointing, in
            train mode, on that device (for the probes).
        parameter_bytes (callable): returns the bytes of the network's parameters (for the optimizer's moments).
    """

    def __init__(self, build_probe, parameter_bytes):
        self.build_probe = build_probe
        self.parameter_bytes = parameter_bytes
        self.models = {}
        self.decisions = {}

    def __call__(self, x):
        """Whether a training step on x needs checkpointing (decided once per shape, device and precision)."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        key = (tuple(x.shape), x.device, dtype)
        if key not in self.decisions:
            self.decisions[key] = self._decide(x, dtype)
        return self.decisions[key]

    def _decide(self, x, dtype):
        from ..restore.memory import available_memory

        model_key = (x.device, dtype)
        if model_key not in self.models:
            self.models[model_key] = measure_training_memory(lambda: self.build_probe(x.device), x.device)
        n, _, h, w = x.shape
        needed = SAFETY * estimate_bytes(self.models[model_key], n, h, w) + 2 * self.parameter_bytes()
        free = available_memory(x.device)
        checkpoint = free is None or needed > AUTO_FRACTION * free
        free_text = 'unknown' if free is None else f'{free / 2**30:.1f} GiB'
        logger.info(f'checkpoint_stages auto: a training step on {n}×{h}×{w} needs about {needed / 2**30:.1f} GiB '
                    f'without checkpointing, {free_text} free on {x.device} → checkpointing '
                    f'{"on" if checkpoint else "off"}')
        return checkpoint
