"""JUDERestorer: restore photos with a trained JUDE (load, tile, pick device and precision, run).

The one class behind the `jude-restore` CLI and the Python API, as RealESRGANer is for Real-ESRGAN.
Padding to the network's multiples lives in the architecture (any H, W ≥ 1 works), so the restorer
only decides how much of the image goes through the network at once:

- Tiles (`jude_arch.tiling`): overlapping tiles cross-faded with weights that sum to 1, so there are no
  seams and a tile at least as large as the image reproduces the untiled result exactly. JUDE
  estimates one blur kernel (and its λ, γ) per network input, so with tiles every tile gets its own:
  that follows blur that varies across a photo, but a tile too small to show the blur gives a poor
  estimate (hence the 128-pixel floor of automatic tiles). The default overlap is two kernel widths
  (64 px for 31×31 kernels): the outer quarter of the overlap, more than half a kernel, lies where a
  tile's blur reaches past its edge and gets no weight; the middle half is the cross-fade.
- `tile='auto'` measures the network's peak tensor memory in inference mode at the chosen precision
  on two small probe inputs (bytes = base + per-pixel × pixels), then takes the largest tile that
  fits half of the device's free memory (CUDA: free device memory; CPU: available RAM less the
  whole-image buffers); the other half absorbs what the count does not see: library workspaces,
  allocator slack, the runtime itself (12-MP photos on CPU peaked at 1.1–1.5× the planned bytes).
- Precision (`jude_arch.precision`): 'bf16' and 'fp16' run the network under autocast on its device; the
  architecture keeps its FFT data step and the unrolled variables in float32. 'auto' takes bf16 where the
  device runs it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16), fp16 on other GPUs, fp32 on
  other CPUs, where bf16 is emulated and far slower than fp32 (asking for it there warns once).
"""
import inspect
import logging
import math
from copy import deepcopy
from dataclasses import dataclass, field

import numpy as np
import torch
import yaml
from tqdm import tqdm

from .checkpoint_io import CheckpointError, convert_if_released, read_checkpoint, state_dict_of
from .memory import PeakTensorMemory, available_memory
from .precision import PRECISIONS, auto_precision
from .precision import resolve as resolve_precision
from .tiling import TileGrid

PROBE_SIZES = (64, 128)  # square probe inputs of the memory measurement
MIN_AUTO_TILE = 128
MEMORY_FRACTION = 0.5
# Whole-image buffers per pixel on the host: float32 RGB input, output and its conversion, the image arrays.
_HOST_BYTES_PER_PIXEL = 64
# BT.601 luma, as OpenCV's RGB→grey conversion.
_LUMA = (0.299, 0.587, 0.114)

logger = logging.getLogger(__name__)


class RestoreError(ValueError):
    """A checkpoint, setting or image the restorer cannot use; the message says what and what to do."""


# ---------------------------------------------------------------------------------------------- checkpoints


def read_network_options(path):
    """Network options from a YAML file: a BasicSR options file (its `network_g`) or a bare network dict.

    Args:
        path (str | Path): the YAML file.

    Returns:
        dict: the network options, with 'type'.
    """
    try:
        with open(path) as f:
            options = yaml.safe_load(f)
    except OSError as error:
        raise RestoreError(f'{path}: cannot read the network options ({error.strerror})') from None
    except yaml.YAMLError as error:
        raise RestoreError(f'{path}: not valid YAML ({error})') from None
    if isinstance(options, dict) and isinstance(options.get('network_g'), dict):
        options = options['network_g']
    if not isinstance(options, dict) or 'type' not in options:
        raise RestoreError(f"{path}: expected a BasicSR options file with a 'network_g' section or a network "
                           "dict with 'type', e.g. {type: JUDE, preset: small}")
    return options


def _check_fit(net, state, path):
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    differ = [f'{k}: checkpoint {tuple(v.shape)}, network {tuple(expected[k].shape)}' for k, v in state.items()
              if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k].shape)]
    if not (missing or unexpected or differ):
        return

    def listing(title, items):
        shown = '\n    '.join(items[:10]) + (f'\n    ... and {len(items) - 10} more' if len(items) > 10 else '')
        return f'\n  {len(items)} {title}:\n    {shown}' if items else ''

    raise RestoreError(f'{path}: the weights do not fit the network {type(net).__name__} built from the network '
                       'options; pass the options the model was trained with (--opt)' +
                       listing('keys with different shapes', differ) + listing('keys missing', missing) +
                       listing('unexpected keys', unexpected))


def load_network(model_path, network_opt=None):
    """Build the network a checkpoint was trained as and load its weights.

    Args:
        model_path (str | Path): checkpoint written by training (BasicSR's save_network dict, with
            'network_g' naming the network), any dict of 'params'/'params_ema' or plain state dict, or
            the authors' released checkpoint (converted on the fly, `jude_arch.released`). Loaded with
            `weights_only=True`: tensors and plain containers only.
        network_opt (dict | None): network options ({'type': 'JUDE', 'preset': 'small', ...}); needed
            when the checkpoint has no 'network_g', and used instead of it when given.

    Returns:
        torch.nn.Module: the network with its weights, in eval mode, on the CPU.
    """
    from basicsr.archs import build_network  # jude_arch registered JUDE before this import

    try:
        checkpoint = convert_if_released(read_checkpoint(model_path), model_path)
        state = state_dict_of(checkpoint, model_path)
    except CheckpointError as error:
        raise RestoreError(str(error)) from None
    options = network_opt if network_opt is not None else checkpoint.get('network_g')
    if options is None:
        raise RestoreError(f"{model_path}: the checkpoint does not say which network it holds (training "
                           "checkpoints carry 'network_g'); pass the network options with --opt <options.yml>")
    if not isinstance(options, dict) or 'type' not in options:
        raise RestoreError(f"{model_path}: network options must be a dict with 'type', got {options!r}")
    try:
        net = build_network(deepcopy(options))
    except KeyError as error:
        raise RestoreError(f"network type {options['type']!r} is not registered: {error.args[0]}") from None
    except (TypeError, ValueError) as error:
        raise RestoreError(f'network options {options} do not build a network: {error}') from None
    nonfinite = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if nonfinite:
        raise RestoreError(f'{model_path}: {len(nonfinite)} weight tensor(s) hold NaN or infinite values (e.g. '
                           f'{nonfinite[0]}): the model was saved after training diverged; use an earlier checkpoint')
    _check_fit(net, state, model_path)
    net.load_state_dict(state)
    return net.eval()


# ---------------------------------------------------------------------------------------------- restoring


@dataclass
class Intermediates:
    """What JUDE did to one image.

    With tiles, per-tile quantities (kernels, λ, γ) are kept for every tile, indexed [row, col] of the
    tile grid with each tile's box; maps are cross-faded like the output. Maps are float32 RGB on the CPU.

    Attributes:
        boxes (numpy.ndarray): rows×cols×4 int, (top, bottom, left, right) of each tile (bottom/right
            exclusive); a single tile covering the image when untiled.
        kernels (numpy.ndarray): rows×cols×B×k×k estimated blur kernels (non-negative, each sums to 1).
        lambdas (numpy.ndarray): rows×cols×K×5, λ1..λ5 of each stage.
        gammas (numpy.ndarray): rows×cols×K×3, γ_P, γ_Q, γ_Z of each stage.
        maps (dict[str, Tensor]): 'I' (K×3×H×W: the sharp low-light image after each stage), 'L' and 'R'
            (3×H×W: illumination and reflectance after the last stage), 'L_hat' and 'R_hat' (the
            enhanced illumination and denoised reflectance whose product is the output) and, with
            several basis kernels, 'weight_map' (B×H×W: per pixel, the share of each of its tile's kernels).
    """

    boxes: np.ndarray
    kernels: np.ndarray
    lambdas: np.ndarray
    gammas: np.ndarray
    maps: dict = field(default_factory=dict)


def _select_device(device):
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except RuntimeError:
        raise RestoreError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RestoreError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def default_overlap(net):
    """Tile overlap for a network: two blur-kernel widths rounded up to a multiple of 8 (32 without a kernel)."""
    kernel_size = getattr(net, 'config', {}).get('kernel_size')
    return 32 if kernel_size is None else -(-2 * kernel_size // 8) * 8


class JUDERestorer:
    """Restore images with a trained network (JUDE or any BasicSR network mapping N×3×H×W to N×3×H×W).

    Args:
        network (torch.nn.Module): the network; `load_network` or `from_checkpoint` build it from a
            checkpoint.
        device (str): 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        precision (str): 'fp32', 'bf16', 'fp16' (autocast on the device) or 'auto' (bf16 where the device
            runs it natively, see the module notes).
        tile (int | str): tile side in pixels, 0 for whole images, or 'auto' to fit the device's memory.
        tile_overlap (int | None): smallest overlap of neighbouring tiles; None: two kernel widths.
        memory_fraction (float): share of the free memory that `tile='auto'` plans to use.
    """

    def __init__(self, network, device='auto', precision='fp32', tile='auto', tile_overlap=None,
                 memory_fraction=MEMORY_FRACTION):
        self.device = _select_device(device)
        try:
            self.precision = resolve_precision(precision, self.device, 'precision')
        except ValueError as error:
            raise RestoreError(str(error)) from None
        logger.info(f'{self.device}, precision {self.precision}'
                    + (f' (auto: {auto_precision(self.device)[1]})' if precision == 'auto' else ''))
        self.dtype = PRECISIONS[self.precision]
        self.tile_overlap = default_overlap(network) if tile_overlap is None else int(tile_overlap)
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
        self.has_intermediates = 'return_intermediates' in inspect.signature(self.net.forward).parameters
        self._memory_models = {}

    @classmethod
    def from_checkpoint(cls, model_path, network_opt=None, **kwargs):
        """Restorer for a checkpoint (see `load_network`); keyword arguments go to the constructor."""
        return cls(load_network(model_path, network_opt), **kwargs)

    # ---------------------------------------------------------------------------------------- images

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
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise RestoreError(f'expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {image.shape}')
        if image.dtype == np.uint8 or image.dtype == np.uint16:
            scale = np.iinfo(image.dtype).max
        elif np.issubdtype(image.dtype, np.floating):
            scale = 1.0
        else:
            raise RestoreError(f'unsupported image data type {image.dtype}; use 8- or 16-bit images')
        color = image[..., :3] if image.ndim == 3 else image[..., None]
        rgb = torch.from_numpy(np.ascontiguousarray(color[..., ::-1], dtype=np.float32)).permute(2, 0, 1) / scale
        result = self.restore_tensor(rgb.expand(3, -1, -1), return_intermediates, tile_progress)
        restored, intermediates = result if return_intermediates else (result, None)

        if color.shape[2] == 1:
            restored = sum(w * c for w, c in zip(_LUMA, restored))[None]
        if scale != 1.0:
            restored = restored.mul_(scale).round_()
        restored = restored.flip(0).permute(1, 2, 0).numpy().astype(image.dtype)  # BGR, H×W×C
        if image.ndim == 2:
            restored = restored[..., 0]
        elif image.shape[2] == 4:
            restored = np.concatenate([restored, image[..., 3:]], axis=2)
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
        output = torch.zeros(3, h, w)
        parts = _IntermediatesBuilder(grid, h, w) if return_intermediates else None
        tiles = tqdm(grid, total=len(grid), unit='tile', leave=False, disable=not tile_progress or len(grid) == 1)
        for tile in tiles:
            top, bottom, left, right = tile.box
            result = self._run(image[None, :, top:bottom, left:right].contiguous().to(self.device),
                               return_intermediates)
            restored = (result['output'] if return_intermediates else result)[0].float().cpu()
            if restored.shape != (3, bottom - top, right - left):
                raise RestoreError(f'{type(self.net).__name__} turned a {right - left}×{bottom - top} input into '
                                   f'{tuple(restored.shape)}; the restorer needs a same-size 3-channel network')
            if not torch.isfinite(restored).all():
                raise RestoreError(f'the network produced non-finite values at {self.precision} precision'
                                   + ('; try --precision fp32' if self.dtype is not None else ''))
            output[:, top:bottom, left:right] += tile.weight * restored
            if parts is not None:
                parts.add(tile, result)
        output.clamp_(0, 1)
        return (output, parts.build()) if return_intermediates else output

    def _run(self, x, return_intermediates):
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):
            if return_intermediates:
                return self.net(x, return_intermediates=True)
            return self.net(x)

    # ---------------------------------------------------------------------------------------- memory

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
        base, per_pixel = self.memory_model(with_intermediates)
        budget = free * self.memory_fraction
        if self.device.type == 'cpu':
            host = _HOST_BYTES_PER_PIXEL + (_IntermediatesBuilder.bytes_per_pixel(self.net)
                                            if with_intermediates else 0)
            budget -= host * height * width
        pixels = (budget - base) / per_pixel
        if pixels >= height * width:
            return 0
        tile = math.isqrt(max(int(pixels), 0)) // 16 * 16
        minimum = max(MIN_AUTO_TILE, 3 * self.tile_overlap)
        if tile < minimum:
            why = (f'the {free / 2**30:.1f} GiB free leave room for tiles of only {tile}×{tile} px, below the '
                   f'minimum of {minimum}×{minimum}' if tile > 0 else
                   f'the {free / 2**30:.1f} GiB free do not even hold the image and the network, without any tile')
            raise RestoreError(f'not enough free memory on {self.device} for a {width}×{height} image: {why}; '
                               'free memory, or pass --tile <size> to choose the tile size yourself')
        return tile

    def memory_model(self, with_intermediates=False):
        """Peak tensor memory of one forward pass as (base bytes, bytes per pixel), measured once per setting.

        Measured with `PeakTensorMemory` on two square probe inputs on the restorer's device and precision;
        the line through the two points over-estimates larger inputs, whose padded FFT domain grows more
        slowly than their area.
        """
        if with_intermediates not in self._memory_models:
            peaks = []
            for size in PROBE_SIZES:
                probe = torch.full((1, 3, size, size), 0.5, device=self.device)
                with PeakTensorMemory(self.device) as tracker:
                    self._run(probe, with_intermediates)
                peaks.append(tracker.peak)
            per_pixel = (peaks[1] - peaks[0]) / (PROBE_SIZES[1]**2 - PROBE_SIZES[0]**2)
            base = max(peaks[0] - per_pixel * PROBE_SIZES[0]**2, 0.0)
            self._memory_models[with_intermediates] = (base, max(per_pixel, 1.0))
        return self._memory_models[with_intermediates]


class _IntermediatesBuilder:
    """Collects JUDE's intermediates tile by tile: per-tile kernels and λ/γ, cross-faded maps."""

    MAPS = ('L', 'R', 'L_hat', 'R_hat')

    def __init__(self, grid, height, width):
        self.grid = grid
        self.size = (height, width)
        rows, cols = grid.shape
        self.boxes = np.zeros((rows, cols, 4), np.int64)
        self.kernels = self.lambdas = self.gammas = None
        self.maps = {}

    @staticmethod
    def bytes_per_pixel(net):
        """Host bytes per image pixel of the cross-faded maps."""
        config = getattr(net, 'config', {})
        return 4 * (3 * (config.get('num_stages', 5) + len(_IntermediatesBuilder.MAPS)) + config.get('num_kernels', 1))

    def _accumulate(self, name, tile, value):
        if name not in self.maps:
            self.maps[name] = torch.zeros(*value.shape[:-2], *self.size)
        top, bottom, left, right = tile.box
        self.maps[name][..., top:bottom, left:right] += tile.weight * value.float().cpu()

    def add(self, tile, result):
        if self.kernels is None:
            rows, cols = self.grid.shape
            self.kernels = np.zeros((rows, cols, *result['kernel'].shape[1:]), np.float32)
            self.lambdas = np.zeros((rows, cols, *result['lambdas'].shape[1:]), np.float32)
            self.gammas = np.zeros((rows, cols, *result['gammas'].shape[1:]), np.float32)
        index = tile.row, tile.col
        self.boxes[index] = tile.box
        self.kernels[index] = result['kernel'][0].float().cpu().numpy()
        self.lambdas[index] = result['lambdas'][0].float().cpu().numpy()
        self.gammas[index] = result['gammas'][0].float().cpu().numpy()
        self._accumulate('I', tile, torch.stack([stage[0] for stage in result['I']]))
        self._accumulate('L', tile, result['L'][-1][0])
        self._accumulate('R', tile, result['R'][-1][0])
        self._accumulate('L_hat', tile, result['L_hat'][0])
        self._accumulate('R_hat', tile, result['R_hat'][0])
        if 'weight_map' in result:
            self._accumulate('weight_map', tile, result['weight_map'][0])

    def build(self):
        return Intermediates(self.boxes, self.kernels, self.lambdas, self.gammas, self.maps)
