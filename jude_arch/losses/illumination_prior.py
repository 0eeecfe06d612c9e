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
"""
import torch
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
