"""JUDERestorer: restore photos with a trained JUDE (load, tile, pick device and precision, run).

The one class behind the `jude-restore` CLI, the web app and the Python API, as RealESRGANer is for Real-ESRGAN.
Padding to the network's multiples lives in the architecture (any H, W ≥ 1 works), so the restorer only decides
how much of the image goes through the network at once; each concern has its module beside this one:

- `network_loading.py`: the network a checkpoint holds, its weights checked against it.
- `device.py`: the device and the precision ('auto' takes bf16 where the device runs it natively, see
  `jude_arch.precision`).
- `image_conversion.py`: OpenCV-layout images (grey, BGR, BGRA; 8/16-bit) to RGB tensors and back.
- `tiling.py`: overlapping tiles cross-faded with weights that sum to 1, so there are no seams and a tile at
  least as large as the image reproduces the untiled result exactly. JUDE estimates one blur kernel (and its
  λ, γ) per network input, so with tiles every tile gets its own: that follows blur that varies across a
  photo, but a tile too small to show the blur gives a poor estimate (hence the floor of automatic tiles).
  The overlap is the network's own (`JUDE.tile_overlap`: two kernel widths).
- `tile_planning.py`: `tile='auto'`, the largest tile that fits half of the free memory.
- `intermediates.py`: what JUDE did (kernels, λ, γ, the stages' images), collected tile by tile.
"""
import logging

import torch
from tqdm import tqdm

from ..archs import JUDE, compile_network
from ..precision import PRECISIONS
from .device import run_network, select_device, select_precision
from .errors import RestoreError
from .image_conversion import image_to_tensor, tensor_to_image
from .intermediates import Intermediates, IntermediatesCollector
from .memory import available_memory
from .network_loading import load_network
from .tile_planning import MEMORY_FRACTION, measure_memory_model, plan_tile
from .tiling import TileGrid, overlap_for, tiled_forward

__all__ = ['Intermediates', 'JUDERestorer', 'RestoreError']

logger = logging.getLogger(__name__)


class JUDERestorer:
    """Restore images with a trained network (JUDE or any BasicSR network mapping N×3×H×W to N×3×H×W).

    Args:
        network (torch.nn.Module): the network; `load_network` or `from_checkpoint` build it from a
            checkpoint.
        device (str): 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision (str): 'fp32', 'bf16', 'fp16' (autocast on the device) or 'auto' (bf16 where the device
            runs it natively, see `jude_arch.precision`).
        tile (int | str): tile side in pixels, 0 for whole images, or 'auto' to fit the device's memory.
        tile_overlap (int | None): smallest overlap of neighbouring tiles; None: the network's own
            (`tiling.overlap_for`: two kernel widths for JUDE).
        memory_fraction (float): share of the free memory that `tile='auto'` plans to use.
        compile: torch.compile the network: False, True / 'operators' or 'network' (`archs.compiling`); the first
            image of each tile size compiles, later ones run faster.
    """

    def __init__(self, network, device='auto', precision='fp32', tile='auto', tile_overlap=None,
                 memory_fraction=MEMORY_FRACTION, compile=False):
        self.device = select_device(device)
        self.precision = select_precision(precision, self.device)
        self.dtype = PRECISIONS[self.precision]
        self.tile_overlap = overlap_for(network) if tile_overlap is None else int(tile_overlap)
        if self.tile_overlap < 0:
            raise RestoreError(f'tile overlap must be ≥ 0, got {self.tile_overlap}')
        if tile != 'auto':
            if not isinstance(tile, int) or tile < 0:
                raise RestoreError(f"tile must be 'auto', 0 (no tiling) or a positive size, got {tile!r}")
            if 0 < tile < 3 * self.tile_overlap:
                raise RestoreError(f'tile {tile} is smaller than 3 × the tile overlap {self.tile_overlap}; '
                                   f'use a tile of at least {3 * self.tile_overlap} or a smaller overlap')
        self.tile = tile
        self.memory_fraction = memory_fraction
        self.net = network.eval().requires_grad_(False).to(self.device)
        try:
            compile_network(self.net, compile)
        except ValueError as error:
            raise RestoreError(str(error)) from None
        self.has_intermediates = isinstance(self.net, JUDE)
        self._memory_models = {}

    @classmethod
    def from_checkpoint(cls, model_path, network_opt=None, **kwargs):
        """Restorer for a checkpoint (see `load_network`); keyword arguments go to the constructor."""
        return cls(load_network(model_path, network_opt), **kwargs)

    def restore(self, image, return_intermediates=False, tile_progress=False):
        """Restore an image laid out as OpenCV reads it.

        Args:
            image (numpy.ndarray): H×W or H×W×1 (greyscale), H×W×3 (BGR) or H×W×4 (BGRA); uint8,
                uint16, or float in [0, 1].
            return_intermediates (bool): also return the `Intermediates` (JUDE networks only).
            tile_progress (bool): show a progress bar over tiles when there are several.

        Returns:
            numpy.ndarray: the restored image with the input's shape and dtype: greyscale stays
            greyscale (BT.601 luma of the RGB result), the alpha channel is carried over untouched.
            With return_intermediates, a tuple (image, Intermediates).
        """
        rgb, scale = image_to_tensor(image)
        result = self.restore_tensor(rgb, return_intermediates, tile_progress)
        restored, intermediates = result if return_intermediates else (result, None)
        restored = tensor_to_image(restored, image, scale)
        return (restored, intermediates) if return_intermediates else restored

    def restore_tensor(self, image, return_intermediates=False, tile_progress=False):
        """Restore an RGB image tensor, tile by tile when it does not fit at once.

        Args:
            image (Tensor): 3×H×W (or 1×3×H×W) RGB in [0, 1], on any device.
            return_intermediates (bool): also return the `Intermediates` (JUDE networks only).
            tile_progress (bool): show a progress bar over tiles when there are several.

        Returns:
            Tensor: 3×H×W float32 on the CPU, clamped to [0, 1]; with return_intermediates, a tuple
            (Tensor, Intermediates).
        """
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise RestoreError(f'expected a 3×H×W RGB image tensor, got shape {tuple(image.shape)}')
        if return_intermediates and not self.has_intermediates:
            raise RestoreError(f'{type(self.net).__name__} does not return intermediates; they need a JUDE network')
        image = image.float().cpu().contiguous()
        _, h, w = image.shape
        side = self.tile_size(h, w, return_intermediates)
        grid = TileGrid(h, w, side, self.tile_overlap)
        if len(grid) > 1:
            (top, bottom), (left, right) = grid.rows[0], grid.cols[0]
            logger.info(f'{w}×{h} image: {grid.shape[1]}×{grid.shape[0]} tiles of {right - left}×{bottom - top} px'
                        + (f' (auto: at most {side} px)' if self.tile == 'auto' else ''))
        collector = IntermediatesCollector(grid, h, w) if return_intermediates else None

        def forward(x, tile):
            result = run_network(self.net, x.contiguous().to(self.device), self.device, self.precision,
                                 return_intermediates)
            restored = (result['output'] if return_intermediates else result).float().cpu()
            if restored.shape[1:] != (3, x.shape[-2], x.shape[-1]):
                raise RestoreError(f'{type(self.net).__name__} turned a {x.shape[-1]}×{x.shape[-2]} input into '
                                   f'{tuple(restored.shape[1:])}; the restorer needs a same-size 3-channel network')
            if not torch.isfinite(restored).all():
                raise RestoreError(f'the network produced non-finite values at {self.precision} precision'
                                   + ('; try --precision fp32' if self.dtype is not None else ''))
            if collector is not None:
                collector.add(tile, result)
            return restored

        tiles = tqdm(grid, total=len(grid), unit='tile', leave=False, disable=not tile_progress or len(grid) == 1)
        output = tiled_forward(forward, image[None], grid, tiles)[0].clamp_(0, 1)
        return (output, collector.build()) if return_intermediates else output

    def tile_size(self, height, width, with_intermediates=False):
        """The tile side used for an image of this size: the set tile, or with 'auto' the largest that fits.

        Returns:
            int: tile side, 0 when the whole image goes through at once.
        """
        if self.tile != 'auto':
            return self.tile
        free = available_memory(self.device)
        if free is None:
            raise RestoreError(f'cannot tell how much memory is free on {self.device}; pass a tile size (--tile 512)')
        host = IntermediatesCollector.bytes_per_pixel(self.net) if with_intermediates else 0
        return plan_tile(height, width, free, self.memory_model(with_intermediates), device=self.device,
                         overlap=self.tile_overlap, host_bytes_per_pixel=host, memory_fraction=self.memory_fraction)

    def memory_model(self, with_intermediates=False):
        """Peak tensor memory of one forward pass as (base bytes, bytes per pixel), measured once per setting
        on the restorer's device and precision (`tile_planning.measure_memory_model`)."""
        if with_intermediates not in self._memory_models:
            self._memory_models[with_intermediates] = measure_memory_model(
                lambda probe: run_network(self.net, probe, self.device, self.precision, with_intermediates),
                self.device)
        return self._memory_models[with_intermediates]
