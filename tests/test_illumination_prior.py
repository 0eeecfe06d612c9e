"""The illumination prior: grey, smooth light costs nothing; coloured or textured light does, at any brightness."""
import pytest
import torch

from jude_arch.losses import IlluminationChromaLoss, IlluminationSmoothnessLoss, IlluminationTargetLoss
from jude_arch.losses.illumination_prior import (illumination_chroma, illumination_gradient_ratio,
                                                 illumination_roughness, scene_light)


@pytest.fixture
def sharp(photo):
    """A dark photo: I, whose edges the light may follow."""
    return 0.2 * photo[..., :64, :64]


def grey_light(value=0.3, ramp=0.0):
    """Grey light: the same value in the three channels, optionally a gentle horizontal ramp."""
    x = torch.linspace(0, 1, 64)
    return (value * (1 + ramp * x)).expand(1, 3, 64, 64).clone()


def test_grey_smooth_light_costs_nothing(sharp):
    light = grey_light()
    assert IlluminationChromaLoss()(light).item() == pytest.approx(0, abs=1e-7)
    assert IlluminationSmoothnessLoss()(light, sharp).item() == pytest.approx(0, abs=1e-7)
    assert illumination_gradient_ratio(light, sharp).item() == pytest.approx(0, abs=1e-7)
    # A grey ramp is still grey; it is only as rough as its slope.
    ramp = grey_light(ramp=0.5)
    assert IlluminationChromaLoss()(ramp).item() == pytest.approx(0, abs=1e-7)
    assert IlluminationSmoothnessLoss()(ramp, sharp).item() < 0.01


def test_coloured_light_costs_at_any_brightness(sharp):
    tinted = grey_light() * torch.tensor([0.6, 0.8, 1.4]).view(1, 3, 1, 1)  # the purple-blue L of the paper recipe
    chroma = IlluminationChromaLoss(loss_weight=2.0)(tinted).item()
    assert chroma > 0.02
    assert IlluminationChromaLoss(loss_weight=2.0)(0.01 * tinted).item() == pytest.approx(chroma, rel=1e-5)
    assert illumination_chroma(sharp).min() > 0  # the photo itself is coloured
    # Green light: one channel only, the most colour light can carry.
    green = torch.zeros(1, 3, 8, 8)
    green[:, 1] = 1
    assert illumination_chroma(green).item() == pytest.approx(2 / 3)


def test_light_with_the_images_texture_is_rough_where_the_image_is_flat(sharp):
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    textured = grey_light() * (1 + 0.5 * noise).expand(1, 3, 64, 64)
    loss = IlluminationSmoothnessLoss()
    assert loss(textured, sharp).item() > 10 * loss(grey_light(ramp=0.5), sharp).item()
    assert loss(0.01 * textured, sharp).item() == pytest.approx(loss(textured, sharp).item(), rel=1e-5)
    # L = I (the unrolling's start) carries all of I's structure.
    assert illumination_gradient_ratio(sharp, sharp).item() == pytest.approx(1)


@pytest.mark.parametrize('transpose', [False, True])
def test_light_may_change_at_the_images_edges_only(transpose):
    def step(column, low, high):
        image = torch.full((1, 3, 32, 64), low)
        image[..., column:] = high
        return image.transpose(-2, -1) if transpose else image

    image = step(32, 0.05, 0.2)  # a dark wall beside a bright one
    along_the_edge, across_flat_wall = step(32, 0.3, 0.6), step(16, 0.3, 0.6)
    assert illumination_roughness(along_the_edge, image).item() < 0.01 * illumination_roughness(
        across_flat_wall, image).item()
    # Blind to the image's edges, the two steps cost about the same (their mean brightness differs a little).
    blind = [illumination_roughness(light, image, edge_weight=0).item() for light in (along_the_edge, across_flat_wall)]
    assert 0.8 < blind[0] / blind[1] < 1.25


def test_no_gradient_reaches_the_image_whose_edges_weigh_the_smoothness(sharp):
    light = grey_light(ramp=0.5).requires_grad_()
    image = sharp.clone().requires_grad_()
    IlluminationSmoothnessLoss()(light, image).backward()
    assert image.grad is None and light.grad is not None


def test_bad_edge_weight_is_a_clear_error():
    with pytest.raises(ValueError, match='edge_weight must be ≥ 0'):
        IlluminationSmoothnessLoss(edge_weight=-1)


def test_a_latent_l_around_zero_costs_as_much_as_its_texture_not_a_division_by_its_mean(sharp):
    """Early in training L is a latent map whose mean may be near or below zero: the terms stay bounded."""
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)).expand(1, 3, 64, 64)
    textured = grey_light() * (1 + 0.5 * noise)
    centred = textured - textured.mean() + 1e-7  # the same texture, mean ~0
    loss = IlluminationSmoothnessLoss()
    assert loss(centred, sharp).item() < 100 * loss(textured, sharp).item()
    assert loss(-textured, sharp).item() == pytest.approx(loss(textured, sharp).item(), rel=1e-5)
    assert illumination_gradient_ratio(centred, sharp).item() < 1000 * illumination_gradient_ratio(textured, sharp).item()


def _srgb(linear):
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def _linear(srgb):
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def test_the_scene_light_is_the_exposure_grey_and_smooth(photo):
    """A photo darkened in linear light by one exposure: the light is grey, at the level of the sRGB ratio, and
    smooth, although the per-channel sRGB ratio of the coloured photo is tinted and textured."""
    gt = photo[..., :64, :64].float()
    low = _srgb(0.05 * _linear(gt))
    light = scene_light(low, gt)
    assert light.shape == gt.shape and illumination_chroma(light).item() < 1e-9
    per_channel = low / gt.clamp_min(1e-3)
    assert illumination_chroma(per_channel).item() > 100 * max(illumination_chroma(light).item(), 1e-9)
    assert illumination_gradient_ratio(light, low).item() < 0.5 * illumination_gradient_ratio(per_channel, low).item()
    grey_ratio = low.mean() / gt.mean()
    assert 0.5 * grey_ratio < light.mean() < 1.5 * grey_ratio
    # A plain scalar darkening (no tone curve) is recovered exactly, everywhere.
    assert torch.allclose(scene_light(0.3 * gt, gt), torch.full_like(gt, 0.3), atol=1e-5)


def test_where_the_ground_truth_is_black_the_frames_own_ratio_stands_in(photo):
    gt = photo[..., :64, :64].float().clone()
    gt[..., :, :32] = 0  # a black half: no evidence of the light there
    light = scene_light(0.3 * gt, gt, window=5)
    assert torch.isfinite(light).all()
    assert torch.allclose(light[..., :, :28], torch.full_like(light[..., :, :28], 0.3), atol=1e-5)
    assert torch.allclose(light[..., :, 40:], torch.full_like(light[..., :, 40:], 0.3), atol=1e-5)


def test_the_target_loss_is_zero_for_the_scene_light_and_positive_for_coloured_or_wrongly_scaled_light(photo):
    gt = photo[..., :64, :64].float()
    low = _srgb(0.05 * _linear(gt))
    target = scene_light(low, gt)
    loss = IlluminationTargetLoss(loss_weight=2.0)
    assert loss(target, low, gt).item() == pytest.approx(0, abs=1e-7)
    tinted = target * torch.tensor([0.6, 0.8, 1.4]).view(1, 3, 1, 1)
    assert loss(tinted, low, gt).item() > 0.02
    assert loss(1e-6 * target, low, gt).item() == pytest.approx(2 * target.mean().item(), rel=1e-3)  # no collapse
    L = target.clone().requires_grad_()
    loss(L * 1.1, low, gt).backward()
    assert L.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, message', [({'window': 4}, 'window must be an odd number'),
                                             ({'floor': 0}, 'floor must be > 0')])
def test_bad_target_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IlluminationTargetLoss(**kwargs)
