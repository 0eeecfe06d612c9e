"""jude_arch.metrics: LPIPS from local weight files, the JUDE paper's pooled SSIM, the optional pyiqa wrapper.

No real LPIPS weights can be downloaded here: the tests write randomly initialised backbones into a temporary
torch hub cache (TORCH_HOME), where torchvision keeps the real files.
"""
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.metrics import calculate_metric
from basicsr.metrics.psnr_ssim import calculate_ssim, calculate_ssim_pt
from basicsr.utils.registry import METRIC_REGISTRY

from jude_arch.metrics import calculate_lpips, calculate_pyiqa, calculate_ssim_pooled, lpips_metric, pyiqa_metric
from jude_arch.metrics.metric_input import uint8_to_tensor
from jude_arch.metrics.pooled_ssim import pooling_factor
from metric_helpers import BACKBONES, add_noise, textured, write_backbone


@pytest.fixture(scope='module')
def weights_home(tmp_path_factory):
    home = tmp_path_factory.mktemp('torch_home')
    for net in BACKBONES:
        write_backbone(home, net)
    return home


@pytest.fixture
def torch_home(weights_home, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(weights_home))
    return weights_home


def reference_lpips(x, y, net, backbone, normalize):
    """LPIPS written out from its definition on torchvision's layers (not through the lpips package)."""
    features = BACKBONES[net][0]()
    state = torch.load(backbone, weights_only=True)
    features.load_state_dict({k.removeprefix('features.'): v for k, v in state.items()})
    lins = torch.load(lpips_metric.linear_layers_file(net), map_location='cpu', weights_only=True)
    shift = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
    scale = torch.tensor([.458, .448, .450])[None, :, None, None]
    if normalize:
        x, y = 2 * x - 1, 2 * y - 1
    h0, h1 = (x - shift) / scale, (y - shift) / scale
    total, taps = 0, BACKBONES[net][1]
    with torch.no_grad():
        for index, layer in enumerate(features):
            h0, h1 = layer(h0), layer(h1)
            if index in taps:
                k = taps.index(index)
                f0 = h0 / (h0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                f1 = h1 / (h1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += F.conv2d((f0 - f1) ** 2, lins[f'lin{k}.model.1.weight']).mean()
                if index == taps[-1]:
                    break
    return total.item()


# ---- LPIPS ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('net', ['vgg', 'alex'])
def test_lpips_is_zero_for_identical_images_and_grows_with_noise(torch_home, net):
    img = textured()
    values = [calculate_lpips(img, add_noise(img, sigma) if sigma else img.copy(), net=net) for sigma in (0, 8, 32)]
    assert values[0] == pytest.approx(0, abs=1e-7)
    assert 0 < values[1] < values[2]


@pytest.mark.parametrize('net', ['vgg', 'alex'])
def test_lpips_is_lpips_and_the_two_scalings_differ(torch_home, net):
    img, noisy = textured(), add_noise(textured(), 16)
    x, y = uint8_to_tensor(img, 'cpu'), uint8_to_tensor(noisy, 'cpu')
    backbone = lpips_metric.backbone_file(net)
    scaled = calculate_lpips(img, noisy, net=net, normalize=True)
    unscaled = calculate_lpips(img, noisy, net=net, normalize=False)
    assert scaled == pytest.approx(reference_lpips(x, y, net, backbone, normalize=True), rel=1e-4)
    assert unscaled == pytest.approx(reference_lpips(x, y, net, backbone, normalize=False), rel=1e-4)
    assert abs(scaled - unscaled) > 0.1 * scaled


def test_lpips_registered_for_yaml(torch_home):
    img, noisy = textured(), add_noise(textured(), 16)
    options = {'type': 'calculate_lpips', 'net': 'vgg', 'normalize': False, 'better': 'lower'}
    assert METRIC_REGISTRY.get('calculate_lpips') is calculate_lpips
    assert calculate_metric({'img': img, 'img2': noisy}, options) == calculate_lpips(img, noisy, normalize=False)


def test_lpips_float_input_scores_the_float_tensors(torch_home):
    img, noisy = textured(), add_noise(textured(), 16)
    x, y = uint8_to_tensor(img, 'cpu'), uint8_to_tensor(noisy, 'cpu')
    beyond = x.clone()
    beyond[..., :8, :8] = 1.5  # an unclamped output: the 8-bit image cannot hold it
    floats = {'img_float': beyond, 'img2_float': y}
    on_float = calculate_lpips(img, noisy, float_input=True, **floats)
    expected = reference_lpips(beyond, y, 'vgg', lpips_metric.backbone_file('vgg'), normalize=True)
    assert on_float == pytest.approx(expected, rel=1e-4)
    assert on_float != pytest.approx(calculate_lpips(img, noisy, **floats), rel=1e-4)  # default: the 8-bit images
    with pytest.raises(ValueError, match='float_input: true needs the float output.*set float_input: false'):
        calculate_lpips(img, noisy, float_input=True)


def test_lpips_reads_weights_from_given_paths(weights_home, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
    img, noisy = textured(), add_noise(textured(), 16)
    backbone = write_backbone(tmp_path / 'elsewhere', 'vgg', seed=3, prefix='')  # the `features` module's own
    lins = tmp_path / 'lins.pth'
    torch.save({f'lin{k}.model.1.weight': torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))},
               lins)
    value = calculate_lpips(img, noisy, backbone_path=str(backbone), lin_path=str(lins))
    x, y = uint8_to_tensor(img, 'cpu'), uint8_to_tensor(noisy, 'cpu')
    monkeypatch.setattr(lpips_metric, 'linear_layers_file', lambda net: lins)
    assert value == pytest.approx(reference_lpips(x, y, 'vgg', backbone, normalize=True), rel=1e-4)


def test_missing_backbone_names_the_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    expected = tmp_path / 'hub' / 'checkpoints' / 'vgg16-397923af.pth'
    with pytest.raises(FileNotFoundError) as error:
        calculate_lpips(textured(), textured())
    message = str(error.value)
    assert '\n' not in message
    assert f'{expected} not found' in message and 'backbone_path' in message
    assert "torchvision.models.vgg16(weights='IMAGENET1K_V1')" in message
    with pytest.raises(FileNotFoundError, match=f'{tmp_path / "mine.pth"} not found'):
        calculate_lpips.prepare(net='alex', backbone_path=str(tmp_path / 'mine.pth'))
    assert not expected.exists()  # nothing was fetched


@pytest.mark.parametrize('case, message', [
    ('alexnet_as_vgg', r"alexnet-owt-7be5be79.pth: no 'features\.\d+\.weight'.*vgg16"),
    ('not_a_checkpoint', 'cannot read the LPIPS vgg backbone weights'),
    ('unknown_net', 'net must be one of'),
])
def test_wrong_weights_are_clear_errors(torch_home, case, message):
    options = {'unknown_net': {'net': 'squeeze'}, 'alexnet_as_vgg': {
        'backbone_path': str(lpips_metric.backbone_file('alex'))}}.get(case, {})
    if case == 'not_a_checkpoint':
        options['backbone_path'] = __file__
    with pytest.raises(ValueError, match=message):
        calculate_lpips(textured(), textured(), **options)


# ---- the JUDE paper's SSIM ----------------------------------------------------------------------------------
@pytest.mark.parametrize('height, width, r', [(640, 1024, 2), (640, 1120, 2), (128, 256, 1), (384, 384, 2),
                                              (896, 1280, 4), (1152, 2048, 4)])
def test_pooling_factor_uses_pythons_round(height, width, r):
    assert pooling_factor(height, width) == r


def reference_ssim(x, y):
    """SSIM as the pytorch_msssim package computes it (data_range 1, 11-tap Gaussian σ 1.5, separable, valid)."""
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    rows, columns = g.view(1, 1, 1, 11).repeat(x.shape[1], 1, 1, 1), g.view(1, 1, 11, 1).repeat(x.shape[1], 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, rows, groups=t.shape[1]), columns, groups=t.shape[1])

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu1, mu2 = blur(x), blur(y)
    s11, s22, s12 = blur(x * x) - mu1 ** 2, blur(y * y) - mu2 ** 2, blur(x * y) - mu1 * mu2
    ssim_map = (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1) * (2 * s12 + c2) / (s11 + s22 + c2)
    return ssim_map.flatten(2).mean(-1).mean().item()


def test_pooled_ssim_pools_then_measures_ssim():
    img, noisy = textured((384, 512)), add_noise(textured((384, 512)), 24)
    x, y = (uint8_to_tensor(i, 'cpu').double() for i in (img, noisy))
    pooled = calculate_ssim_pooled(img, noisy)
    assert pooled == pytest.approx(reference_ssim(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)), abs=1e-9)
    assert pooled == pytest.approx(calculate_ssim_pt(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), 0).item(), abs=1e-9)
    full = calculate_ssim(img, noisy, crop_border=0)
    assert pooled > full + 0.05  # pooling averages the noise away: the numbers are not comparable


def test_pooled_ssim_float_input_is_unclamped():
    img = textured((64, 64))
    x = uint8_to_tensor(img, 'cpu')
    beyond = x * 1.3  # an output past 1 that clamping would hide
    assert calculate_ssim_pooled(img, img) == pytest.approx(1)
    on_float = calculate_ssim_pooled(img, img, float_input=True, img_float=beyond, img2_float=x)
    assert on_float == pytest.approx(reference_ssim(beyond.double(), x.double()), abs=1e-9) and on_float < 0.99


# ---- pyiqa --------------------------------------------------------------------------------------------------
def test_pyiqa_missing_gives_the_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pyiqa', None)  # import pyiqa now raises ImportError, as when not installed
    for call in (lambda: calculate_pyiqa(textured(), metric='musiq'), lambda: calculate_pyiqa.prepare(metric='niqe')):
        with pytest.raises(ImportError) as error:
            call()
        assert str(error.value) == pyiqa_metric.INSTALL_MESSAGE
    assert "pip install 'jude-basicsr[iqa]'" in pyiqa_metric.INSTALL_MESSAGE


class FakeIQA:
    """Stands in for a pyiqa metric: records its input, scores the mean intensity."""

    def __init__(self, name, device, as_loss, **options):
        self.name, self.device, self.options, self.calls = name, device, options, []
        self.metric_mode = 'FR' if name == 'psnr' else 'NR'

    def __call__(self, x, ref=None):
        self.calls.append((x, ref))
        return x.mean(dim=(1, 2, 3)) if ref is None else (x - ref).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def fake_pyiqa(monkeypatch):
    created = []

    def create_metric(name, **kwargs):
        created.append(FakeIQA(name, **kwargs))
        return created[-1]

    module = types.SimpleNamespace(list_models=lambda: ['musiq', 'niqe', 'psnr'], create_metric=create_metric)
    monkeypatch.setitem(sys.modules, 'pyiqa', module)
    monkeypatch.setattr(pyiqa_metric, '_MODELS', {})
    return created


def test_pyiqa_scores_rgb_in_0_1_and_creates_each_metric_once(fake_pyiqa):
    img = textured()
    img[..., 0] = 0  # BGR: the blue channel is black
    options = {'type': 'calculate_pyiqa', 'metric': 'musiq', 'options': {'pretrained': 'koniq'}, 'better': 'higher'}
    first = calculate_metric({'img': img}, options)
    calculate_metric({'img': img}, options)
    assert len(fake_pyiqa) == 1 and fake_pyiqa[0].options == {'pretrained': 'koniq'}
    x, ref = fake_pyiqa[0].calls[0]
    assert ref is None and x.shape == (1, 3, 48, 64) and 0 <= x.min() and x.max() <= 1
    assert x[0, 2].max() == 0 and x[0, 0].max() > 0  # handed over as RGB
    assert first == pytest.approx(img.mean() / 255, rel=1e-6)


def test_pyiqa_full_reference_and_bad_names(fake_pyiqa):
    img, noisy = textured(), add_noise(textured(), 16)
    assert calculate_pyiqa(img, noisy, metric='psnr') == pytest.approx(
        np.abs(img.astype(float) - noisy).mean() / 255, rel=1e-5)
    with pytest.raises(ValueError, match='psnr is a full-reference metric but the dataset has no ground truth'):
        calculate_pyiqa(img, metric='psnr')
    with pytest.raises(ValueError, match="pyiqa has no metric 'muziq'.*musiq, niqe"):
        calculate_pyiqa.prepare(metric='muziq')
