"""The JUDE network: registry, algebra of the unrolling, shapes, gradients, sizes."""
import re
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from jude_arch.archs import JUDE, blur

ALGORITHM_DOC = Path(__file__).resolve().parents[1] / 'docs' / 'algorithm.md'


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope='module')
def small():
    torch.manual_seed(0)
    return build_network({'type': 'JUDE', 'preset': 'small'})


def test_registered_and_built_from_yaml_style_options():
    assert ARCH_REGISTRY.get('JUDE') is JUDE
    full = build_network({'type': 'JUDE'})
    assert full.config['num_stages'] == 5 and full.config['unet_channels'] == [64, 128, 256, 512]
    assert full.config['kernel_size'] == 31 and full.config['num_kernels'] == 1 and full.config['share_operators']
    small = build_network({'type': 'JUDE', 'preset': 'small', 'num_stages': 2})
    assert small.num_stages == 2 and small.config['unet_channels'] == [16, 32, 64, 128]
    # The stored config rebuilds an identical network.
    rebuilt = build_network({'type': 'JUDE', **small.config})
    assert rebuilt.config == small.config
    rebuilt.load_state_dict(small.state_dict())


@pytest.mark.parametrize('options,message', [
    ({'preset': 'huge'}, 'preset'),
    ({'num_stages': 0}, 'num_stages'),
    ({'unet_channels': [16, 32, 64]}, 'unet_channels'),
    ({'kernel_size': 200}, 'kernel_size'),
    ({'enhancer_input': 'I'}, 'enhancer_input'),
    ({'boundary': 'zeros'}, 'boundary'),
    ({'share_operators': 'yes'}, 'share_operators'),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        JUDE(**{'preset': 'small', **options})


def test_rejects_non_rgb_input(small):
    with pytest.raises(ValueError, match='N×3×H×W'):
        small(torch.rand(1, 1, 8, 8))


def test_unrolling_algebra(small, photo):
    """Exact R- and L-updates keep Γ and Ω at 0, so R = P and L = Q; Δ is the only live multiplier."""
    x = 0.3 * photo[..., :64, :64].float()
    with torch.no_grad():
        out = small(x, return_intermediates=True)
    assert len(out['Gamma']) == small.num_stages
    for t in range(small.num_stages):
        assert out['Gamma'][t].abs().max() <= 1e-5 and out['Omega'][t].abs().max() <= 1e-5
        torch.testing.assert_close(out['R'][t], out['P'][t], rtol=0, atol=1e-5)
        torch.testing.assert_close(out['L'][t], out['Q'][t], rtol=0, atol=1e-5)
        assert out['Delta'][t].abs().max() > 1e-4


def test_intermediates(small):
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        out = small(x, return_intermediates=True)
        plain = small(x)
    K, k = small.num_stages, small.config['kernel_size']
    torch.testing.assert_close(out['output'], plain)
    assert out['kernel'].shape == (2, 1, k, k) and 'weight_map' not in out
    assert out['lambdas'].shape == (2, K, 5) and out['gammas'].shape == (2, K, 3)
    assert (out['lambdas'] > 0).all() and (out['gammas'] > 0).all()
    for name in ('I', 'R', 'L'):
        assert len(out[name]) == K and all(t.shape == x.shape for t in out[name])
    torch.testing.assert_close(out['output'], out['L_hat'] * out['R_hat'])


def test_kernels_and_weight_map_are_normalised():
    torch.manual_seed(1)
    net = JUDE(preset='small', num_kernels=3, kernel_size=21)
    with torch.no_grad():
        out = net(torch.rand(2, 3, 45, 38), return_intermediates=True)
    kernel, weight_map = out['kernel'], out['weight_map']
    assert kernel.shape == (2, 3, 21, 21) and weight_map.shape == (2, 3, 45, 38)
    assert kernel.min() >= 0 and weight_map.min() >= 0
    torch.testing.assert_close(kernel.sum((-2, -1)), torch.ones(2, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(weight_map.sum(1), torch.ones(2, 45, 38), rtol=0, atol=1e-5)


@pytest.mark.parametrize('kernel_size', [3, 8, 33, 40])
def test_any_kernel_size(kernel_size):
    net = JUDE(preset='small', kernel_size=kernel_size, num_stages=1)
    with torch.no_grad():
        kernel, _ = net.kernel_estimator(torch.rand(1, 3, 32, 32))
    assert kernel.shape == (1, 1, kernel_size, kernel_size)


@pytest.mark.parametrize('size', [(1, 1), (7, 9), (37, 53), (100, 70)])
def test_any_size_and_batch(small, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = small(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize('options,dead', [
    ({}, ''),
    # The last stage's Z-update only feeds I_K, which is returned for inspection but never reaches Ŷ:
    # an unshared last D_Z is the one operator without a role in the output.
    ({'num_kernels': 2, 'share_operators': False, 'enhancer_input': 'PQ'}, 'prox_z.2.'),
])
def test_backward_reaches_every_parameter(options, dead):
    torch.manual_seed(2)
    net = JUDE(preset='small', **options).train()
    net(torch.rand(2, 3, 40, 36)).square().mean().backward()
    missing = {name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert missing == {name for name, _ in net.named_parameters() if dead and name.startswith(dead)}


def relative_error(a, b):
    return ((a.float() - b).abs().mean() / b.abs().mean()).item()


def test_bf16_autocast_keeps_the_unrolling_at_fp32_precision(photo, shake_kernel, monkeypatch):
    """Under bf16 autocast only the convolutions lose precision: the FFT data step and the unrolled variables stay
    float32, so every stage's I matches the fp32 run far more closely than bf16 rounding would allow.

    The regime is a trained network's (a real camera-shake kernel, λ5 = 1e-3 ≪ λ1 = 1), where the I-solve is a
    near-deconvolution that amplifies any rounding of its inputs; the kernel estimator and the hyper-parameter
    net are fixed to it so that the test does not depend on untrained weights.
    """
    torch.manual_seed(0)
    net = JUDE(preset='small').eval()
    kernel = shake_kernel.float()
    K = net.num_stages
    lambdas = torch.tensor([1.0, 0.5, 0.5, 0.5, 1e-3]).repeat(1, K, 1)
    gammas = torch.full((1, K, 3), 0.05)
    monkeypatch.setattr(net.kernel_estimator, 'forward', lambda x: (kernel.expand(len(x), -1, -1, -1), None))
    monkeypatch.setattr(net.hyper_net, 'forward',
                        lambda k: (lambdas.expand(len(k), -1, -1), gammas.expand(len(k), -1, -1)))
    x = blur(0.3 * photo[..., :64, :64].float(), kernel, 'replicate')
    with torch.no_grad():
        reference = net(x, return_intermediates=True)
        rounded_observation = net(x.bfloat16().float(), return_intermediates=True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            mixed = net(x, return_intermediates=True)
    tolerance = 5e-4
    # The regime is sensitive: bf16 rounding of the observation alone moves the I's tens of times the tolerance.
    assert min(relative_error(a, b) for a, b in zip(rounded_observation['I'], reference['I'])) > 10 * tolerance
    for t, (a, b) in enumerate(zip(mixed['I'], reference['I'])):
        assert a.dtype == torch.float32 and relative_error(a, b) < tolerance, t
    # The output goes through the bf16 enhancer and denoiser: close at bf16's precision (~0.4% per rounding).
    assert relative_error(mixed['output'], reference['output']) < 0.02


def test_full_preset_sizes_match_the_released_model_and_the_docs():
    net = JUDE()
    assert [count(op) for op in (net.prox_p, net.prox_q, net.prox_z)] == [17_010_624] * 3
    assert count(net.enhancer) == 348_035 and count(net.denoiser) == 48_003
    # Released kernel net 4,991,138 minus its weight-map head (1,539,489), which B = 1 does not build.
    assert count(net.kernel_estimator) == 4_991_138 - 1_539_489
    with_map = JUDE(kernel_size=33, num_kernels=2).kernel_estimator
    assert count(with_map.mask_up) + count(with_map.mask_tail) == 1_539_489 + 145  # + one output channel
    # docs/algorithm.md's parameter table lists every module and the total with these figures.
    table = ALGORITHM_DOC.read_text()
    modules = {
        'Kernel estimator': net.kernel_estimator, 'Hyper-parameter net': net.hyper_net, 'D_P': net.prox_p,
        'D_Q': net.prox_q, 'D_Z': net.prox_z, 'Illumination enhancer': net.enhancer,
        'Reflectance denoiser': net.denoiser, 'Total': net
    }
    for name, module in modules.items():
        assert re.search(rf'\|[^|\n]*{re.escape(name)}[^|\n]*\|[^\n]*{count(module):,}', table), name
