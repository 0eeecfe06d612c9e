"""A one-image panel of what JUDE did, plus its kernels (.npy) and per-stage λ/γ (.json).

Panel rows, every cell labelled:
1. the input, the output, the estimated blur kernel(s) enlarged (each scaled to its own maximum) and,
   with several basis kernels, the weight map (each kernel's share coloured like its kernel's frame);
2. the sharp low-light image I after each unrolled stage, next to the input at the same display gain;
3. the Retinex factors: illumination L and reflectance R after the last stage, and the enhanced
   illumination L̂ and denoised reflectance R̂ whose product is the output;
4. λ1..λ5 and γ_P, γ_Q, γ_Z of each stage.
When the kernels are nearly uniform (`physics_warning`), a warning above the rows says that the model's kernel
estimator has not learned a blur: its stages of I and its L, R are latent maps, not images of the scene.
The input and the stages of I are shown at one common display gain, so the stages stay comparable;
only the product of the Retinex factors is fixed (L·R = I, L̂·R̂ = output, any scale can move between
the two), so each factor is scaled to its own 99.5th percentile. Every gain is printed in its label.
With tiles, the tile boxes are drawn on the input, the kernel cell is a
mosaic of every tile's kernels in the tiles' layout, the maps are cross-faded like the output and the
λ/γ rows are tile means (every tile's values are in the JSON file).
"""
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..physics import kernel_entropy
from .photo_io import write_bytes, write_image

CELL = 320  # longest side of an image cell, in pixels
_LABEL_HEIGHT = 22
_GAP = 6
_BACKGROUND = 32
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR colours of basis kernels 1, 2, ... (frames in the kernel cell, hues in the weight map).
_PALETTE = np.array([(255, 128, 0), (0, 200, 255), (80, 220, 80), (220, 80, 220), (80, 80, 255), (255, 255, 80)],
                    np.float32)
_WARNING_COLOUR = (80, 170, 255)  # BGR: amber
# Kernel entropy (fraction of the uniform kernel's) above which an estimate is no blur: a model trained on its
# output only (the paper's recipe) keeps its estimator near 1.0; a learned camera-shake estimate lies near 0.5.
UNIFORM_ENTROPY = 0.9
LAMBDA_NAMES = ('lambda1', 'lambda2', 'lambda3', 'lambda4', 'lambda5')
GAMMA_NAMES = ('gamma_P', 'gamma_Q', 'gamma_Z')


def _bgr_float(image):
    """An image as read or restored (grey/BGR/BGRA, 8/16-bit or float) → H×W×3 float32 BGR in [0, 1]."""
    image = image.astype(np.float32) / (np.iinfo(image.dtype).max if image.dtype.kind == 'u' else 1.0)
    if image.ndim == 2:
        image = image[..., None]
    return image[..., :3] if image.shape[2] >= 3 else np.repeat(image, 3, axis=2)


def _to_u8(image, gain=1.0):
    """Float BGR image in [0, 1] → uint8, multiplied by `gain` and clipped."""
    return np.clip(np.round(image * (255 * gain)), 0, 255).astype(np.uint8)


def _rgb_map(tensor):
    """3×H×W RGB float tensor → H×W×3 BGR float array."""
    return tensor.permute(1, 2, 0).flip(2).numpy()


def _fit(image, size):
    """Resize so that the longer side is `size` pixels."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _stack(images, axis, gap):
    """Images side by side (axis=1) or top to bottom (axis=0), `gap` pixels apart, aligned top-left."""
    across = max(image.shape[1 - axis] for image in images)
    parts = []
    for image in images:
        missing = across - image.shape[1 - axis]
        parts.append(cv2.copyMakeBorder(image, 0, missing if axis == 1 else 0, 0, missing if axis == 0 else 0,
                                        cv2.BORDER_CONSTANT, value=(_BACKGROUND, ) * 3))
        gap_shape = (across, gap, 3) if axis == 1 else (gap, across, 3)
        parts.append(np.full(gap_shape, _BACKGROUND, np.uint8))
    return np.concatenate(parts[:-1], axis=axis)


def _kernel_image(kernels, pixel):
    """B×k×k kernels side by side, each scaled to its maximum, `pixel` screen pixels per kernel entry.

    With several kernels each gets a frame in its palette colour.
    """
    images = []
    for b, kernel in enumerate(kernels):
        gray = np.round(255 * kernel / max(float(kernel.max()), 1e-12)).astype(np.uint8)
        big = cv2.resize(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), None, fx=pixel, fy=pixel,
                         interpolation=cv2.INTER_NEAREST)
        if len(kernels) > 1:
            big = cv2.copyMakeBorder(big, 2, 2, 2, 2, cv2.BORDER_CONSTANT,
                                     value=[float(v) for v in _PALETTE[b % len(_PALETTE)]])
        images.append(big)
    return _stack(images, 1, 2)


def _kernel_cell(kernels, size=CELL):
    """The kernel cell: the kernels of one input untiled, a mosaic in the tiles' layout when tiled."""
    rows, cols, num_kernels, k, _ = kernels.shape
    pixel = max(1, size // (max(rows, cols * num_kernels) * (k + 2)))
    return _stack([_stack([_kernel_image(kernels[r, c], pixel) for c in range(cols)], 1, 4) for r in range(rows)],
                  0, 4)


def _weight_map_cell(weight_map, size):
    """B×H×W weights → BGR image: each pixel the weight-mixed palette colours of its basis kernels."""
    weights = weight_map.permute(1, 2, 0).numpy()
    colours = _PALETTE[np.arange(weights.shape[2]) % len(_PALETTE)]
    return _fit(np.clip(weights @ colours, 0, 255).astype(np.uint8), size)


def _labelled(image, label):
    bar = np.full((_LABEL_HEIGHT, max(image.shape[1], 8 * len(label) + 8), 3), _BACKGROUND, np.uint8)
    cv2.putText(bar, label, (4, _LABEL_HEIGHT - 7), _FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return _stack([bar, image], 0, 0)


def _text_rows(lines, colour=(235, 235, 235)):
    line_height = 18
    width = max(8 * len(line) for line in lines) + 8
    image = np.full((line_height * len(lines) + 6, width, 3), _BACKGROUND, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (4, line_height * (i + 1)), _FONT, 0.42, colour, 1, cv2.LINE_AA)
    return image


def _wrapped(text, width=110):
    """Words of `text` in lines of at most `width` characters."""
    lines = ['']
    for word in text.split():
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append('')
        lines[-1] = f'{lines[-1]} {word}'.strip()
    return lines


def physics_warning(kernels):
    """A warning for the panel and the app when the estimated kernels are not a blur, else None.

    Args:
        kernels (numpy.ndarray): …×k×k estimated kernels (e.g. `Intermediates.kernels`, rows×cols×B×k×k).

    Returns:
        str | None: the warning (with the kernels' mean entropy), or None when it is at most `UNIFORM_ENTROPY`
        of the uniform kernel's.
    """
    entropy = float(kernel_entropy(torch.from_numpy(np.asarray(kernels, np.float32))).mean())
    if entropy <= UNIFORM_ENTROPY:
        return None
    return (f"This model's kernel estimator has not learned a blur: its kernel is nearly uniform (entropy "
            f'{entropy:.2f} of a uniform kernel\'s). The stages of I and the factors L, R are latent maps, not '
            'images of the scene; train with the physics recipe (docs/physics.md) to make them meaningful.')


def to_display(image, max_side=None):
    """An image as read or restored (grey/BGR/BGRA, 8/16-bit) → 8-bit BGR for a screen.

    Args:
        image (numpy.ndarray): the image.
        max_side (int | None): shrink it so that its longer side is at most this many pixels.
    """
    shown = _to_u8(_bgr_float(image))
    return shown if max_side is None or max(shown.shape[:2]) <= max_side else _fit(shown, max_side)


def display_gain(image):
    """Brightening that shows a dark image legibly: mean brightness to 0.35, between ×1 and ×32."""
    return float(np.clip(0.35 / max(float(_bgr_float(image).mean()), 1e-6), 1, 32))


@dataclass
class PanelViews:
    """The panel's pictures, each a (label, BGR uint8 image) pair, and its λ/γ table.

    Attributes:
        overview (list): input (tile boxes drawn when tiled), output, kernel(s) and, with several basis
            kernels, the weight map.
        stages (list): the input and the sharp low-light image I after each stage, at one display gain.
        retinex (list): L, R, L̂, R̂, each scaled to its own 99.5th percentile.
        names (tuple[str]): the hyper-parameters' names (λ1..λ5, γ_P, γ_Q, γ_Z).
        table (numpy.ndarray): K×8, each stage's λ and γ (means over tiles when tiled).
        tiled (bool): whether the image went through the network in several tiles.
        warning (str | None): `physics_warning` of the kernels.
    """

    overview: list
    stages: list
    retinex: list
    names: tuple
    table: np.ndarray
    tiled: bool
    warning: str = None


def panel_views(image, restored, intermediates, size=CELL):
    """The pictures and numbers of the panel, separately (`render_panel` lays them out; the web app shows them).

    Args:
        image (numpy.ndarray): the input as read (grey/BGR/BGRA, 8/16-bit).
        restored (numpy.ndarray): the restored image, same layout.
        intermediates (Intermediates): from `JUDERestorer.restore(..., return_intermediates=True)`.
        size (int): longest side of each picture, in pixels.

    Returns:
        PanelViews: labelled pictures (every display gain in its label) and the per-stage λ/γ.
    """
    maps = intermediates.maps
    rows, cols = intermediates.kernels.shape[:2]
    num_kernels, k = intermediates.kernels.shape[2:4]
    tiled = rows * cols > 1
    gain = display_gain(image)

    shown = _fit(_to_u8(_bgr_float(image)), size)
    scale = shown.shape[1] / image.shape[1]
    if tiled:
        for top, bottom, left, right in intermediates.boxes.reshape(-1, 4):
            cv2.rectangle(shown, (round(left * scale), round(top * scale)),
                          (round((right - 1) * scale), round((bottom - 1) * scale)), (0, 255, 255), 1)
    tiles_note = f' ({rows}x{cols} tiles)' if tiled else ''
    kernel_label = (f'kernels {k}x{k} per tile' if tiled else f'blur kernel{"s" if num_kernels > 1 else ""} {k}x{k}')
    overview = [('input' + tiles_note, shown), ('output', _fit(_to_u8(_bgr_float(restored)), size)),
                (kernel_label + ' (each to its max)', _kernel_cell(intermediates.kernels, size))]
    if 'weight_map' in maps:
        overview.append((f'weight map of the {num_kernels} kernels', _weight_map_cell(maps['weight_map'], size)))

    def cell(bgr, label, scale):
        return (f'{label} x{scale:.3g}' if scale != 1 else label), _fit(_to_u8(bgr, scale), size)

    def factor(name, label):
        bgr = _rgb_map(maps[name])
        return cell(bgr, label, 1 / max(float(np.percentile(bgr, 99.5)), 1e-6))

    stages = [cell(_bgr_float(image), 'input', gain)]
    stages += [cell(_rgb_map(stage), f'I after stage {t + 1}', gain) for t, stage in enumerate(maps['I'])]
    retinex = [factor('L', 'illumination L'), factor('R', 'reflectance R'), factor('L_hat', 'enhanced illum. L^'),
               factor('R_hat', 'denoised reflect. R^')]
    table = np.concatenate([intermediates.lambdas.mean((0, 1)), intermediates.gammas.mean((0, 1))], axis=1)
    return PanelViews(overview, stages, retinex, LAMBDA_NAMES + GAMMA_NAMES, table, tiled,
                      physics_warning(intermediates.kernels))


def render_panel(image, restored, intermediates):
    """Draw the panel for one image.

    Args:
        image (numpy.ndarray): the input as read (grey/BGR/BGRA, 8/16-bit).
        restored (numpy.ndarray): the restored image, same layout.
        intermediates (Intermediates): from `JUDERestorer.restore(..., return_intermediates=True)`.

    Returns:
        numpy.ndarray: the panel, BGR uint8.
    """
    views = panel_views(image, restored, intermediates)
    lines = [f'per-stage hyper-parameters{" (mean over tiles)" if views.tiled else ""}:']
    for t, values in enumerate(views.table):
        lines.append(f'stage {t + 1}: ' + '  '.join(f'{n}={v:.4g}' for n, v in zip(views.names, values)))
    rows = [_stack([_labelled(picture, label) for label, picture in row], 1, _GAP)
            for row in (views.overview, views.stages, views.retinex)] + [_text_rows(lines)]
    if views.warning:
        rows.insert(0, _text_rows(_wrapped('Warning: ' + views.warning), _WARNING_COLOUR))
    panel = _stack(rows, 0, _GAP)
    return cv2.copyMakeBorder(panel, _GAP, _GAP, _GAP, _GAP, cv2.BORDER_CONSTANT, value=(_BACKGROUND, ) * 3)


def hyperparameters(intermediates):
    """The per-tile, per-stage λ and γ as a JSON-ready dict (tiles row by row, each with its box)."""
    rows, cols = intermediates.kernels.shape[:2]
    tiles = []
    for r in range(rows):
        for c in range(cols):
            stages = [dict(zip(LAMBDA_NAMES + GAMMA_NAMES, map(float, [*lam, *gam])))
                      for lam, gam in zip(intermediates.lambdas[r, c], intermediates.gammas[r, c])]
            tiles.append({'row': r, 'col': c, 'box_top_bottom_left_right': intermediates.boxes[r, c].tolist(),
                          'stages': stages})
    return {'tile_grid': [rows, cols], 'kernel_size': int(intermediates.kernels.shape[-1]),
            'num_kernels': int(intermediates.kernels.shape[2]), 'num_stages': int(intermediates.lambdas.shape[2]),
            'tiles': tiles}


def save_intermediates(stem, image, restored, intermediates):
    """Write `<stem>_panel.png`, `<stem>_kernel.npy` and `<stem>_params.json`.

    Args:
        stem (str | Path): output path without extension, e.g. results/intermediates/photo.
        image (numpy.ndarray): the input as read.
        restored (numpy.ndarray): the restored image.
        intermediates (Intermediates): the restorer's intermediates for this image.

    Returns:
        list[Path]: the three files. The .npy holds the kernels as float32 rows×cols×B×k×k (tile grid,
        basis kernels, kernel), each non-negative and summing to 1.
    """
    stem = Path(stem)
    panel, kernel, params = (stem.with_name(stem.name + suffix) for suffix in ('_panel.png', '_kernel.npy',
                                                                             '_params.json'))
    write_image(panel, render_panel(image, restored, intermediates))
    buffer = io.BytesIO()
    np.save(buffer, intermediates.kernels.astype(np.float32))
    write_bytes(kernel, buffer.getvalue())
    write_bytes(params, (json.dumps(hyperparameters(intermediates), indent=1) + '\n').encode())
    return [panel, kernel, params]
