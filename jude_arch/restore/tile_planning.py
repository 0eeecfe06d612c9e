"""How large a tile fits in memory (`tile='auto'`): measure the network's memory, then plan within the free memory.

The network's peak tensor memory in inference mode at the chosen precision is measured on two small probe
inputs and modelled as bytes = base + per-pixel × pixels. The planned tile is the largest that fits a share
(half by default) of the device's free memory (CUDA: free device memory; CPU: available RAM less the whole-image
buffers); the other half absorbs what the count does not see: library workspaces, allocator slack, the runtime
itself (docs/restoring.md has measured peaks against the plan).
"""
import math

import torch

from .errors import RestoreError
from .memory import PeakTensorMemory

PROBE_SIZES = (64, 128)  # square probe inputs of the memory measurement
MIN_AUTO_TILE = 128  # a smaller tile shows too little of the blur for a good kernel estimate
MEMORY_FRACTION = 0.5
# Whole-image buffers per pixel on the host: float32 RGB input, output and its conversion, the image arrays.
HOST_BYTES_PER_PIXEL = 64


def measure_memory_model(run, device):
    """Peak tensor memory of one forward pass as (base bytes, bytes per pixel).

    Measured with `PeakTensorMemory` on two square probe inputs; the line through the two points over-estimates
    larger inputs, whose padded FFT domain grows more slowly than their area.

    Args:
        run (callable): run(x) performs the forward pass to measure on a 1×3×S×S input.
        device (torch.device): where the probes are made and counted.
    """
    peaks = []
    for size in PROBE_SIZES:
        probe = torch.full((1, 3, size, size), 0.5, device=device)
        with PeakTensorMemory(device) as tracker:
            run(probe)
        peaks.append(tracker.peak)
    per_pixel = (peaks[1] - peaks[0]) / (PROBE_SIZES[1]**2 - PROBE_SIZES[0]**2)
    base = max(peaks[0] - per_pixel * PROBE_SIZES[0]**2, 0.0)
    return base, max(per_pixel, 1.0)


def plan_tile(height, width, free, memory_model, *, device, overlap, host_bytes_per_pixel=0,
              memory_fraction=MEMORY_FRACTION):
    """The largest tile side (a multiple of 16) whose forward pass fits the memory budget.

    Args:
        height, width (int): the image.
        free (int): bytes free on the device (`memory.available_memory`).
        memory_model (tuple[float, float]): (base bytes, bytes per pixel) of `measure_memory_model`.
        device (torch.device): the device (on the CPU, whole-image host buffers share the budget).
        overlap (int): the tile overlap; a tile is at least 3 × overlap.
        host_bytes_per_pixel (int): host bytes per image pixel besides `HOST_BYTES_PER_PIXEL` (the
            intermediates' maps).
        memory_fraction (float): share of the free memory to plan with.

    Returns:
        int: tile side, 0 when the whole image fits at once.

    Raises:
        RestoreError: not even a tile of `MIN_AUTO_TILE` (or 3 × overlap) fits.
    """
    base, per_pixel = memory_model
    budget = free * memory_fraction
    if device.type == 'cpu':
        budget -= (HOST_BYTES_PER_PIXEL + host_bytes_per_pixel) * height * width
    pixels = (budget - base) / per_pixel
    if pixels >= height * width:
        return 0
    tile = math.isqrt(max(int(pixels), 0)) // 16 * 16
    minimum = max(MIN_AUTO_TILE, 3 * overlap)
    if tile < minimum:
        why = (f'the {free / 2**30:.1f} GiB free leave room for tiles of only {tile}×{tile} px, below the '
               f'minimum of {minimum}×{minimum}' if tile > 0 else
               f'the {free / 2**30:.1f} GiB free do not even hold the image and the network, without any tile')
        raise RestoreError(f'not enough free memory on {device} for a {width}×{height} image: {why}; '
                           'free memory, or pass --tile <size> to choose the tile size yourself')
    return tile
