"""A Retinex prior on JUDE's illumination L: light is grey and smooth, the colours and the texture are the
reflectance's (in the spirit of Retinex-Net's and KinD's illumination terms). Registered in LOSS_REGISTRY.

JUDE only couples its factors through L ⊙ R ≈ I, so any per-pixel, per-channel factor can move between them.
These terms take that freedom away without touching the paper's loss:
- `IlluminationChromaLoss`: the fraction of L's energy that is colour, `illumination_chroma`: 0 when its three
  channels are equal (white light), whatever its brightness.
- `IlluminationSmoothnessLoss`: L's gradient where the sharp image I is flat, `illumination_roughness`: 0 for
  a constant L; an edge of I lets L change there (light may stop at an object's border).
Both are invariant to L's scale (the product fixes L only up to a factor that R takes back), so neither can be
met by shrinking L. The measures are also what docs/physics.md reports, with `illumination_gradient_ratio`.

Where the data carries the dark sharp frame (`low_sharp`) and the normally exposed one (the ground truth), the
light itself is known, and `IlluminationTargetLoss` asks L for it (`scene_light`): the ratio of the two frames'
grey levels, averaged over a window, the same in all three channels. Measured in docs/physics.md, the scale-free
prior alone let L_K collapse towards zero (JUDE ties L to I and R only through its soft updates), while the
target fixes L's level too. Why grey and not the per-channel ratio low_sharp / gt: the data darkens in linear
light by one exposure factor, but sRGB's tone curve is not a power law, so the per-channel sRGB ratio of a
coloured pixel is tinted by the pixel's own colour (an orange pixel at exposure 0.05: 0.24, 0.19, 0.06) even
though the light was white. The grey ratio keeps R ⊙ L's grey level equal to I's.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

_EPS = 1e-6


def illumination_chroma(L):
    """Chroma energy of illumination maps: Σ (L_c − mean_c L)² / Σ L_c² per image (0: grey; at most 2/3 for a
    non-negative L, light of one primary colour).

    Args:
        L (Tensor): N×3×H×W illumination.

    Returns:
        Tensor: N values.
    """
    L = L.float()
    chroma = (L - L.mean(1, keepdim=True)).square().flatten(1).sum(1)
    return chroma / L.square().flatten(1).sum(1).clamp_min(_EPS)


def _gradients(x):
    """Forward differences of N×C×H×W images along x and y, both N×C×(H−1)×(W−1)."""
    return x[..., :-1, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, :-1]


def _brightness_normalised_grey(x):
    """The channel mean of N×C×H×W images divided by its mean magnitude: N×1×H×W, scale-free.

    The magnitude, not the signed mean: early in training JUDE's L is a latent map whose mean may be near or
    below zero, and dividing by it (or by a tiny floor) would blow the terms up or flip their sign. For light
    (L ≥ 0) the two are the same."""
    grey = x.float().mean(1, keepdim=True)
    return grey / grey.abs().mean((2, 3), keepdim=True).clamp_min(_EPS)


def illumination_roughness(L, image, edge_weight=10.0):
    """Mean |∇L| (brightness-normalised) weighted by exp(−edge_weight · |∇I|) (brightness-normalised), per image:
    L's texture where the image is flat (0 for a constant L).

    Args:
        L (Tensor): N×3×H×W illumination.
        image (Tensor): N×3×H×W sharp image I whose edges L may follow (no gradient flows into it).
        edge_weight (float): how fast an edge of I releases L (Retinex-Net uses 10).

    Returns:
        Tensor: N values.
    """
    gx, gy = _gradients(_brightness_normalised_grey(L))
    ix, iy = _gradients(_brightness_normalised_grey(image.detach()))
    rough = gx.abs() * torch.exp(-edge_weight * ix.abs()) + gy.abs() * torch.exp(-edge_weight * iy.abs())
    return rough.flatten(1).mean(1)


def illumination_gradient_ratio(L, image):
    """Σ ‖∇L‖² / Σ ‖∇I‖², both brightness-normalised, per image: how much of I's structure L carries (0: a
    constant light; 1: as much as the image, e.g. L = I).

    Args:
        L (Tensor): N×3×H×W illumination.
        image (Tensor): N×3×H×W sharp image I.

    Returns:
        Tensor: N values.
    """
    energy = [sum(g.square().flatten(1).sum(1) for g in _gradients(_brightness_normalised_grey(x)))
              for x in (L, image)]
    return energy[0] / energy[1].clamp_min(_EPS)


@LOSS_REGISTRY.register()
class IlluminationChromaLoss(nn.Module):
    """`illumination_chroma` of L, averaged over the batch: grey (white) light.

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, L):
        """
        Args:
            L (Tensor): N×3×H×W illumination (JUDE's L_K).
        """
        return self.loss_weight * illumination_chroma(L).mean()


@LOSS_REGISTRY.register()
class IlluminationSmoothnessLoss(nn.Module):
    """`illumination_roughness` of L against the sharp image, averaged over the batch: smooth light that may
    change at the image's edges.

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        edge_weight (float): how fast an edge of the image releases L. Default: 10.
    """

    def __init__(self, loss_weight=1.0, edge_weight=10.0):
        super().__init__()
        if not edge_weight >= 0:
            raise ValueError(f'IlluminationSmoothnessLoss: edge_weight must be ≥ 0, got {edge_weight!r}')
        self.loss_weight = loss_weight
        self.edge_weight = edge_weight

    def forward(self, L, image):
        """
        Args:
            L (Tensor): N×3×H×W illumination (JUDE's L_K).
            image (Tensor): N×3×H×W sharp image whose edges L may follow (JUDE's I_K; not differentiated).
        """
        return self.loss_weight * illumination_roughness(L, image, self.edge_weight).mean()


def _check_light_settings(window, floor):
    if window < 1 or window % 2 == 0:
        raise ValueError(f'scene_light: window must be an odd number of pixels, got {window!r}')
    if not floor > 0:
        raise ValueError(f'scene_light: floor must be > 0, got {floor!r}')


def scene_light(low, gt, window=5, floor=0.02):
    """The illumination that darkened `gt` into `low`, as a smooth grey map: the ratio of their channel means,
    each averaged over a `window`-pixel square (replicate padding), repeated on three channels.

    Where the ground truth is black the ratio says nothing about the light; there (window mean of gt's grey
    below `floor`) the map blends into the frame's own ratio, mean(low) / mean(gt), in proportion.

    Args:
        low (Tensor): N×3×H×W dark frame (sRGB, [0, 1]), e.g. `low_sharp`.
        gt (Tensor): N×3×H×W normally exposed frame (sRGB, [0, 1]).
        window (int): odd side of the averaging window, in pixels.
        floor (float): grey level below which the local ratio gives way to the frame's.

    Returns:
        Tensor: N×3×H×W, non-negative, no gradient.
    """
    _check_light_settings(window, floor)
    with torch.no_grad():
        grey = [x.float().clamp_min(0).mean(1, keepdim=True) for x in (low, gt)]
        local = [F.avg_pool2d(F.pad(g, [window // 2] * 4, mode='replicate'), window, stride=1) for g in grey]
        frame = grey[0].mean((2, 3), keepdim=True) / grey[1].mean((2, 3), keepdim=True).clamp_min(_EPS)
        trust = (local[1] / floor).clamp(max=1)
        light = trust * local[0] / local[1].clamp_min(floor) + (1 - trust) * frame
        return light.expand(-1, 3, -1, -1)


@LOSS_REGISTRY.register()
class IlluminationTargetLoss(nn.Module):
    """L1 of L against `scene_light(low_sharp, gt)`: L is the light the data was darkened with, grey and smooth,
    at its level (the colours go to R).

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        window (int): `scene_light`'s averaging window, odd, in pixels. Default: 5.
        floor (float): `scene_light`'s grey level below which the frame's own ratio is used. Default: 0.02.
    """

    def __init__(self, loss_weight=1.0, window=5, floor=0.02):
        super().__init__()
        _check_light_settings(window, floor)
        self.loss_weight = loss_weight
        self.window = window
        self.floor = floor

    def forward(self, L, low, gt):
        """
        Args:
            L (Tensor): N×3×H×W illumination (JUDE's L_K).
            low (Tensor): N×3×H×W dark sharp frame (`low_sharp`).
            gt (Tensor): N×3×H×W ground truth.
        """
        return self.loss_weight * (L.float() - scene_light(low, gt, self.window, self.floor)).abs().mean()
