"""What JUDE did to one image, collected tile by tile: per-tile kernels and λ/γ, cross-faded maps."""
from dataclasses import dataclass, field

import numpy as np
import torch


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


class IntermediatesCollector:
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
        """Host bytes per image pixel of the cross-faded maps of a JUDE network."""
        config = net.config
        return 4 * (3 * (config['num_stages'] + len(IntermediatesCollector.MAPS)) + config['num_kernels'])

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
