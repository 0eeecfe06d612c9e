"""The authors' released checkpoint: conversion, exact reproduction of their network, automatic use.

tests/data/released_small.pt is a small instance of the authors' own JUDE class (3 stages, narrow widths, the
released key set and order, seeded perturbed weights) with its checkpoint, inputs, outputs and intermediates,
computed by their code at kc-ml2/jude@572733f on CPU; tests/data/released_keys_full.txt lists every key and
shape of the full released checkpoint. docs/released_model.md describes both.
"""
import copy
import os
import re
from argparse import Namespace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

from jude_arch.checkpoint_io import CheckpointError, read_checkpoint
from jude_arch.restore.cli import main as restore_main
from jude_arch.released import ReleasedCheckpointError, convert_released, is_released
from jude_arch.released import main as released_main
from jude_arch.restore.restorer import JUDERestorer, RestoreError
from training_helpers import PYTHON, ROOT, run, tiny_lolblur, train_log, write_yaml

DATA = Path(__file__).resolve().parent / 'data'
ATOL = 1e-5
# Our λ1..λ5 and γ_P, γ_Q, γ_Z are the release's λ1, λ2, λ4, λ5, λ6 and γ1, γ2, γ3.
LAMBDAS = ('lambda1', 'lambda2', 'lambda4', 'lambda5', 'lambda6')
GAMMAS = ('gamma1', 'gamma2', 'gamma3')
RELEASED_PARAMETERS = 56_501_430


@pytest.fixture(scope='module')
def fixture():
    return torch.load(DATA / 'released_small.pt', weights_only=True)


@pytest.fixture(scope='module')
def converted(fixture):
    return convert_released(fixture['checkpoint'])


def build(converted, **options):
    net = build_network({**converted['network_g'], **options})
    net.load_state_dict(converted['params'])
    return net.eval()


def max_errors(net, fixture, inputs=(0, 1)):
    """Largest absolute difference to the fixture of every compared quantity, for the fixture's `inputs` and
    its extra (100×140) input."""
    errors = {}

    def record(name, ours, theirs):
        errors[name] = max(errors.get(name, 0.0), (ours - theirs).abs().max().item())

    with torch.no_grad():
        for i in inputs:
            x, y, inter = fixture['inputs'][i], fixture['outputs'][i], fixture['intermediates'][i]
            result = net(x, return_intermediates=True)
            record('output', result['output'], y)
            record('kernel', result['kernel'], inter['kernel'])
            for j, name in enumerate(LAMBDAS):
                record('lambdas', result['lambdas'][..., j], inter['hypernet_named'][name])
            for j, name in enumerate(GAMMAS):
                record('gammas', result['gammas'][..., j], inter['hypernet_named'][name])
            for stage, expected in enumerate(inter.get('stages', [])):
                for name in 'PQZI':
                    record(name, result[name][stage], expected[name])
        for x, y, inter in zip(fixture['extra_inputs'], fixture['extra_outputs'], fixture['extra_intermediates']):
            result = net(x, return_intermediates=True)
            record('output', result['output'], y)
            record('kernel', result['kernel'], inter['kernel'])
            record('P', result['P'][-1], inter['P_K'])
            record('Q', result['Q'][-1], inter['Q_K'])
    return errors


def test_sizes_are_read_off_the_weights(converted, fixture):
    config = fixture['config']
    assert converted['network_g'] == {
        'type': 'JUDE', 'preset': 'released', 'num_stages': config['stages'], 'unet_channels': config['resunet_nc'],
        'unet_blocks': config['resunet_nb'], 'kernel_width': config['kernel_net_widths'][0],
        'enhancer_width': config['relight_channel'], 'denoiser_width': config['ircnn_nc']}


def test_converted_network_computes_what_the_authors_network_computes(converted, fixture):
    errors = max_errors(build(converted), fixture)
    assert set(errors) == {'output', 'kernel', 'lambdas', 'gammas', 'P', 'Q', 'Z', 'I'}
    assert max(errors.values()) < ATOL, errors


def test_batch_statistics_mode_reproduces_the_authors_evaluation(converted, fixture):
    plain, batch_stats = build(converted), build(converted, hypernet_batch_stats=True)
    running_mean = batch_stats.hyper_net.features[2].running_mean.clone()
    with torch.no_grad():
        for x, y in zip(fixture['inputs'], fixture['outputs_bn_batch_stats']):
            assert (batch_stats(x) - y).abs().max() < ATOL
            assert (plain(x) - y).abs().max() > 100 * ATOL  # the two modes really differ on this fixture
    assert torch.equal(batch_stats.hyper_net.features[2].running_mean, running_mean)  # inference changes nothing


def _transpose_kernel_head(params):
    params['kernel_estimator.kernel_tail.2.weight'] = params['kernel_estimator.kernel_tail.2.weight'].transpose(-1, -2)


def _swap_hyper_net_slots(params):  # our λ1 and λ2 of stage 0
    for name in ('hyper_net.mlp.4.weight', 'hyper_net.mlp.4.bias'):
        params[name] = params[name][[1, 0] + list(range(2, len(params[name])))]


@pytest.mark.parametrize('perturb, options', [
    (_transpose_kernel_head, {}),
    (_swap_hyper_net_slots, {}),
    (None, {'boundary': 'reflect'}),  # the corrected data step is not what the release computes
    (None, {'enhancer_variant': 'paper'}),
    (None, {'kernel_pad_input': True}),  # the 100×140 input is not a multiple of 32
    (None, {'enhancer_input': 'L'}),
])
def test_a_wrong_conversion_or_option_fails_the_comparison(converted, fixture, perturb, options):
    wrong = copy.deepcopy(converted)
    if perturb:
        perturb(wrong['params'])
    errors = max_errors(build(wrong, **options), fixture, inputs=(0, ))
    assert max(errors.values()) > ATOL, errors  # the comparison of the test above fails


def read_key_list():
    state = {}
    for line in (DATA / 'released_keys_full.txt').read_text().splitlines():
        if line.startswith('module.'):
            key, shape, dtype, _ = line.split('\t')
            state[key] = torch.zeros(yaml.safe_load(shape), dtype=getattr(torch, dtype))
    return state


def test_the_full_release_converts_without_missing_or_unexpected_keys():
    state = read_key_list()
    assert sum(v.numel() for k, v in state.items() if 'running' not in k and 'num_batches' not in k) \
        == RELEASED_PARAMETERS
    converted = convert_released({'state_dict': state})
    assert converted['network_g'] == {'type': 'JUDE', 'preset': 'released', 'num_stages': 5,
                                      'unet_channels': [64, 128, 256, 512], 'unet_blocks': 2, 'kernel_width': 16,
                                      'enhancer_width': 64, 'denoiser_width': 32}
    net = build_network(dict(converted['network_g']))
    result = net.load_state_dict(converted['params'], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # docs/released_model.md: 56,501,430 released = 54,961,291 converted + 1,539,489 weight-map branch
    # + 650 unused hyper-net rows
    assert sum(p.numel() for p in net.parameters()) == 54_961_291 == RELEASED_PARAMETERS - 1_539_489 - 650
    assert net.config['kernel_size'] == 33 and net.config['boundary'] == 'released'


def test_bare_state_dicts_with_or_without_the_prefix_convert_alike(fixture, converted):
    state = fixture['checkpoint']['state_dict']
    for variant in (state, {k[len('module.'):]: v for k, v in state.items()}):
        assert is_released(variant)
        again = convert_released(variant)
        assert again['network_g'] == converted['network_g']
        assert all(torch.equal(again['params'][k], v) for k, v in converted['params'].items())


def test_unexpected_keys_and_other_checkpoints_are_errors(fixture):
    state = dict(fixture['checkpoint']['state_dict'])
    state['module.update_P.extra.weight'] = torch.zeros(1)
    with pytest.raises(ReleasedCheckpointError, match=r'1 unexpected keys: update_P\.extra\.weight'):
        convert_released({'state_dict': state})
    del state['module.update_P.extra.weight'], state['module.update_Q.denoiser.m_tail.weight']
    with pytest.raises(ReleasedCheckpointError, match=r'prox_q\.0\.tail\.weight: missing'):
        convert_released(state)
    assert not is_released({'params': {'head.weight': torch.zeros(1)}})
    with pytest.raises(ReleasedCheckpointError, match="not the authors' released JUDE checkpoint"):
        convert_released({'params': {'head.weight': torch.zeros(1)}})


def test_a_bad_shape_is_named_by_its_key_in_the_release(fixture):
    state = dict(fixture['checkpoint']['state_dict'])
    key = 'module.update_P.denoiser.m_down1.0.res.0.weight'
    state[key] = torch.zeros(*state[key].shape[:2], 5, 5)
    with pytest.raises(ReleasedCheckpointError, match=re.escape(
            'update_P.denoiser.m_down1.0.res.0.weight (as prox_p.0.down.0.0.body.0.weight): converted (8, 8, 5, 5), '
            'network (8, 8, 3, 3)')):
        convert_released(state)


def test_a_release_with_nonfinite_weights_is_not_converted(fixture, tmp_path, capsys):
    state = dict(fixture['checkpoint']['state_dict'])
    key = 'module.reflectance_denoise.model.0.weight'
    state[key] = state[key].clone()
    state[key].view(-1)[3] = float('nan')
    torch.save({'state_dict': state}, tmp_path / 'bownet_best.pth')
    with pytest.raises(SystemExit) as refused:
        released_main([str(tmp_path / 'bownet_best.pth'), str(tmp_path / 'out.pth')])
    assert refused.value.code == 1 and 'released checkpoint: 1 tensor(s) hold NaN or infinite values (e.g. ' \
        'reflectance_denoise.model.0.weight)' in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('how', ['same path', 'symlink', 'hard link'])
def test_the_converter_never_writes_over_its_input(fixture, tmp_path, capsys, how):
    release = tmp_path / 'bownet_best.pth'
    torch.save({'state_dict': fixture['checkpoint']['state_dict']}, release)
    before = release.read_bytes()
    output = {'same path': release, 'symlink': tmp_path / 'link.pth', 'hard link': tmp_path / 'hard.pth'}[how]
    if how == 'symlink':
        output.symlink_to(release)
    elif how == 'hard link':
        os.link(release, output)
    with pytest.raises(SystemExit) as refused:
        released_main([str(release), str(output), '--overwrite'])
    assert refused.value.code == 1 and f'{output} is the input file {release}' in capsys.readouterr().err
    assert release.read_bytes() == before


def test_the_converter_runs_without_a_runpy_warning(tmp_path):
    """`import jude_arch` must not import jude_arch.released, or runpy warns at every `python -m` run."""
    printed = run([PYTHON, '-W', 'error::RuntimeWarning', '-m', 'jude_arch.released', '--help'], cwd=tmp_path)
    assert 'usage: python -m jude_arch.released' in printed and 'RuntimeWarning' not in printed


@pytest.fixture(scope='module')
def released_file(fixture, tmp_path_factory):
    """The fixture's weights saved the way the authors' checkpoint is: {'state_dict': ...} with 'module.'."""
    path = tmp_path_factory.mktemp('release') / 'bownet_best.pth'
    torch.save({'state_dict': fixture['checkpoint']['state_dict']}, path)
    return path


@pytest.mark.slow
def test_cli_converts_once_and_never_overwrites(released_file, converted, tmp_path, capsys):
    out = tmp_path / 'jude_released.pth'
    printed = run([PYTHON, '-m', 'jude_arch.released', released_file, out], cwd=ROOT)
    assert 'dropped 46 tensors' in printed and 'parameters and buffers' in printed
    saved = torch.load(out, weights_only=True)
    assert saved['network_g'] == converted['network_g']
    assert all(torch.equal(saved['params'][k], v) for k, v in converted['params'].items())
    assert [p.name for p in tmp_path.iterdir()] == ['jude_released.pth']  # no temporary file left

    before = out.stat().st_mtime_ns
    with pytest.raises(SystemExit) as refused:
        released_main([str(released_file), str(out)])
    assert refused.value.code == 1 and 'exists; pass --overwrite' in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before
    assert released_main([str(released_file), str(out), '--overwrite']) == 0

    with pytest.raises(SystemExit) as missing:
        released_main([str(tmp_path / 'missing.pth'), str(tmp_path / 'x.pth')])
    assert missing.value.code == 1 and 'missing.pth: no such checkpoint file' in capsys.readouterr().err
    with pytest.raises(SystemExit) as not_released:
        released_main([str(out), str(tmp_path / 'x.pth')])  # already converted
    assert not_released.value.code == 1 and "not the authors' released JUDE checkpoint" in capsys.readouterr().err
    assert not (tmp_path / 'x.pth').exists()


def test_restorer_loads_the_release_directly(released_file, converted, fixture, caplog):
    with caplog.at_level('INFO'):
        restorer = JUDERestorer.from_checkpoint(released_file, device='cpu', tile=0)
    assert "the authors' released checkpoint, converted on the fly" in caplog.text
    x = fixture['extra_inputs'][0]
    with torch.no_grad():
        assert (restorer.net(x) - fixture['extra_outputs'][0]).abs().max() < ATOL


def test_jude_restore_restores_a_folder_with_the_release_and_no_options(released_file, tmp_path):
    src, out = tmp_path / 'photos', tmp_path / 'restored'
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (('a.png', (48, 64)), ('b.jpg', (40, 36))):
        cv2.imwrite(str(src / name), (rng.random((*size, 3)) * 80).astype(np.uint8))
    assert restore_main(['-i', str(src), '-o', str(out), '--model-path', str(released_file), '--device', 'cpu']) == 0
    for stem, size in (('a', (48, 64)), ('b', (40, 36))):
        (path, ) = out.glob(f'{stem}.*')
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (*size, 3)


def test_a_release_with_python_objects_gets_extraction_advice(fixture, tmp_path):
    path = tmp_path / 'bownet_best.pth'
    torch.save({'state_dict': fixture['checkpoint']['state_dict'], 'args': Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match=r"refused to load: .*argparse\.Namespace.*weights_only=False.*"
                                              r"'state_dict'.*weights_only\.pth"):
        read_checkpoint(path)
    with pytest.raises(RestoreError, match='refused to load'):
        JUDERestorer.from_checkpoint(path)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


@pytest.mark.slow
def test_finetune_options_start_from_the_release(released_file, converted, data, tmp_path):
    """options/train_jude_finetune_released.yml, adapted to the tiny data and the fixture's sizes, trains 2
    iterations from the released file with the corrected data step."""
    opt = yaml.safe_load((ROOT / 'options' / 'train_jude_finetune_released.yml').read_text())
    assert opt['network_g']['preset'] == 'released' and opt['network_g']['boundary'] != 'released'
    assert opt['train']['optim_g']['lr'] == 2.5e-5 and opt['datasets']['train']['gt_size'] == 512
    lmdb = data / 'lmdb'
    for split, dataset in opt['datasets'].items():
        name = 'train' if split == 'train' else 'test'
        dataset.update(dataroot_gt=str(lmdb / f'{name}_gt.lmdb'), dataroot_lq=str(lmdb / f'{name}_lq.lmdb'))
    opt['datasets']['train'].update(gt_size=48, batch_size_per_gpu=1, num_worker_per_gpu=0)
    sizes = {k: v for k, v in converted['network_g'].items() if k not in ('type', 'preset')}
    opt['network_g'].update(sizes)
    opt['path']['pretrain_network_g'] = str(released_file)
    opt['num_gpu'] = 0
    opt['train'].update(total_iter=2)
    opt['train']['scheduler']['periods'] = [2]
    opt['val'].update(val_freq=2, metrics={'psnr': opt['val']['metrics']['psnr']})
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    config = write_yaml(opt, tmp_path / 'finetune.yml')
    run([PYTHON, ROOT / 'jude_arch' / 'train.py', '-opt', config], cwd=tmp_path)

    log = train_log(tmp_path / 'experiments', opt['name'])
    assert "the authors' released checkpoint, converted on the fly" in log
    assert re.search(r'iter:\s+2,', log) and re.search(r'# psnr: \d+\.\d+', log)
    saved = torch.load(tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth', weights_only=True)
    assert saved['network_g']['boundary'] == 'replicate' and saved['network_g']['kernel_size'] == 33
    start = converted['params']['prox_p.0.head.weight']
    assert 0 < (saved['params']['prox_p.0.head.weight'] - start).abs().max() < 0.01  # fine-tuned from the release
