"""JUDE's options declared once: the JUDEConfig dataclass, its presets, its validation, refine_steps from YAML."""
import dataclasses

import pytest
import torch
from basicsr.archs import build_network

from jude_arch.archs import PRESETS, JUDE, JUDEConfig, JUDEKernelNet

TINY = dict(preset='small', unet_channels=[4, 4, 4, 4])


def test_presets_are_configs_and_the_network_reports_them():
    assert all(isinstance(cfg, JUDEConfig) for cfg in PRESETS.values())
    assert PRESETS['full'] == JUDEConfig()  # the defaults are the paper's model
    assert PRESETS['small'].num_stages == 3 and PRESETS['small'].unet_channels == (16, 32, 64, 128)
    assert PRESETS['released'].boundary == 'released' and PRESETS['released'].kernel_size == 33
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS['full'].num_stages = 3
    net = JUDE(preset='small', num_stages=4)
    assert net.config == dataclasses.replace(PRESETS['small'], num_stages=4).as_dict()
    assert net.config['unet_channels'] == [16, 32, 64, 128]  # plain lists: the config goes into YAML and checkpoints
    # Every option, and nothing else, is in the config: it rebuilds the same network.
    assert sorted(net.config) == sorted(JUDEConfig.option_names())
    assert build_network({'type': 'JUDE', **net.config}).config == net.config


def test_none_keeps_the_presets_value():
    assert JUDE(preset='small', num_stages=None, boundary=None).config == PRESETS['small'].as_dict()


@pytest.mark.parametrize('options, message', [
    ({'num_stage': 3}, "unknown option 'num_stage'; valid options: num_stages, unet_channels, "),
    ({'refine_steps': -1}, 'refine_steps must be an integer ≥ 0, got -1'),
    ({'refine_steps': True}, 'refine_steps must be an integer ≥ 0, got True'),
    ({'unet_channels': 16}, 'unet_channels must be four positive widths'),
    ({'num_stages': 2.0}, 'num_stages must be a positive integer, got 2.0'),
    ({'boundary': 'released', 'num_kernels': 2}, "boundary 'released' takes one kernel"),
    ({'denoiser_input': 'L'}, "denoiser_input must be one of ('R', 'P'), got 'L'"),
])
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match='^JUDE: ' + message.replace('(', r'\(').replace(')', r'\)')):
        JUDE(**{**TINY, **options})


def test_refine_steps_reaches_the_data_step_from_yaml_options():
    torch.manual_seed(0)
    x = 0.4 * torch.rand(1, 3, 24, 28)
    outputs = {}
    for boundary in ('replicate', 'circular'):
        for steps in (0, 2, 5):
            net = build_network({'type': 'JUDE', **TINY, 'boundary': boundary, 'refine_steps': steps})
            assert net.config['refine_steps'] == steps
            if outputs:
                net.load_state_dict(next(iter(outputs.values()))[0].state_dict())
            with torch.no_grad():
                outputs[boundary, steps] = net, net(x, return_intermediates=True)['I'][-1]
    # 2 is the default and refines the band the camera did not observe; 'circular' has no such band.
    assert JUDE(**TINY).config['refine_steps'] == 2
    replicate = [outputs['replicate', steps][1] for steps in (0, 2, 5)]
    assert not torch.equal(replicate[0], replicate[1]) and not torch.equal(replicate[1], replicate[2])
    assert all(torch.equal(outputs['circular', 0][1], outputs['circular', steps][1]) for steps in (2, 5))


def test_kernel_net_takes_its_options_from_the_jude_preset():
    net = JUDEKernelNet(preset='small', kernel_size=21)
    assert net.config == {'kernel_size': 21, 'num_kernels': 1, 'kernel_width': PRESETS['small'].kernel_width,
                          'kernel_statistics': False}
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        JUDEKernelNet(preset='tiny')
    with pytest.raises(ValueError, match='kernel_size must be an integer from 3 to 128, got 0'):
        JUDEKernelNet(preset='small', kernel_size=0)
