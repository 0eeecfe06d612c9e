"""Building the network of a checkpoint (jude_arch/restore/network_loading.py): options, fit, refusals."""
import argparse
from collections import OrderedDict

import pytest
import torch
import yaml

from jude_arch.archs import JUDE
from jude_arch.restore.network_loading import load_network, read_network_options
from jude_arch.restore.errors import RestoreError


def _save(path, **entries):
    torch.save(entries, path)
    return path


def test_checkpoint_prefers_ema_weights_and_rebuilds_from_network_g(small_jude, tmp_path):
    ema = OrderedDict(small_jude.state_dict())
    params = OrderedDict((k, torch.zeros_like(v)) for k, v in ema.items())
    path = _save(tmp_path / 'net_g_latest.pth', params=params, params_ema=ema,
                 network_g={'type': 'JUDE', **small_jude.config})
    net = load_network(path)
    assert isinstance(net, JUDE) and net.config == small_jude.config
    assert all(torch.equal(v, ema[k]) for k, v in net.state_dict().items())


def test_checkpoint_without_network_options_needs_opt(small_jude, tmp_path):
    state = {f'module.{k}': v for k, v in small_jude.state_dict().items()}  # as saved from a DDP wrapper
    path = _save(tmp_path / 'bare.pth', params=state)
    with pytest.raises(RestoreError, match='--opt'):
        load_network(path)
    options = tmp_path / 'train.yml'
    options.write_text(yaml.safe_dump({'name': 'x', 'network_g': {'type': 'JUDE', 'preset': 'small'}}))
    bare = tmp_path / 'net.yml'
    bare.write_text('{type: JUDE, preset: small}\n')
    for opt in (options, bare):
        net = load_network(path, read_network_options(opt))
        assert all(torch.equal(v, small_jude.state_dict()[k]) for k, v in net.state_dict().items())
    (tmp_path / 'empty.yml').write_text('name: x\n')
    with pytest.raises(RestoreError, match='network_g'):
        read_network_options(tmp_path / 'empty.yml')


def test_checkpoint_that_does_not_fit_names_keys_and_shapes(small_jude, tmp_path):
    state = OrderedDict(small_jude.state_dict())
    state['enhancer.tail.weight'] = torch.zeros(3, 8, 3, 3)
    state['extra.weight'] = torch.zeros(1)
    del state['denoiser.body.0.bias']
    path = _save(tmp_path / 'bad.pth', params=state, network_g={'type': 'JUDE', **small_jude.config})
    with pytest.raises(RestoreError) as error:
        load_network(path)
    message = str(error.value)
    expected = tuple(small_jude.state_dict()['enhancer.tail.weight'].shape)
    assert f'enhancer.tail.weight: checkpoint (3, 8, 3, 3), network {expected}' in message
    assert 'keys missing' in message and 'denoiser.body.0.bias' in message
    assert 'unexpected keys' in message and 'extra.weight' in message


def test_unreadable_or_pickled_checkpoints_are_refused_clearly(tmp_path):
    pickled = _save(tmp_path / 'pickled.pth', params={}, args=argparse.Namespace(lr=1))
    with pytest.raises(RestoreError, match='refused to load: it stores Python objects .argparse.Namespace.'):
        load_network(pickled)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'\x00not a checkpoint' * 10)
    with pytest.raises(RestoreError, match='not a readable PyTorch checkpoint'):
        load_network(garbage)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(pickled.read_bytes()[:300])
    with pytest.raises(RestoreError, match='not a readable PyTorch checkpoint'):
        load_network(truncated)
    with pytest.raises(RestoreError, match='no such checkpoint'):
        load_network(tmp_path / 'missing.pth')
    unknown = _save(tmp_path / 'unknown.pth', params={}, network_g={'type': 'NoSuchNet'})
    with pytest.raises(RestoreError, match="'NoSuchNet' is not registered"):
        load_network(unknown)
