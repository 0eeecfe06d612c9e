"""End to end on the CPU: synthesise → LMDB → jude_arch/train.py → --auto_resume → jude_arch/test.py,
and mixing JUDE's parts with stock BasicSR ones (SRModel + JUDELoss, JUDEModel + SwinIR)."""
import re

import lmdb
import pytest
import torch
from basicsr.archs import build_network
from basicsr.train import train_pipeline

from training_helpers import (PYTHON, ROOT, eval_options, pipeline_in_process, run, tiny_lolblur, tiny_options,
                              train_log, write_yaml)

NAME = 'tiny_e2e'


def lmdb_keys(path):
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        return sorted(key.decode() for key in txn.cursor().iternext(values=False))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
    """12 iterations (validation + checkpoint at 6), then --auto_resume to 24: the run the checks share."""
    work = tmp_path_factory.mktemp('e2e')
    opt = tiny_options(data, NAME, total_iter=12, periods=[24])
    first = write_yaml(opt, work / 'train.yml')
    run([PYTHON, ROOT / 'jude_arch' / 'train.py', '-opt', first], cwd=work)
    first_log = train_log(work / 'experiments', NAME)
    opt['train']['total_iter'] = 24
    second = write_yaml(opt, work / 'train_more.yml')
    run([PYTHON, ROOT / 'jude_arch' / 'train.py', '-opt', second, '--auto_resume'], cwd=work)
    return {'work': work, 'opt': opt, 'first_log': first_log, 'log': train_log(work / 'experiments', NAME)}


@pytest.mark.slow
def test_training_validates_and_checkpoints(trained):
    models = trained['work'] / 'experiments' / NAME / 'models'
    assert {'net_g_6.pth', 'net_g_12.pth', 'net_g_latest.pth'} <= {p.name for p in models.iterdir()}
    assert re.search(r'Validation tiny-test\s+# psnr: \d+\.\d+', trained['first_log'])
    assert 'iter:      12' in trained['first_log']
    # validation images are named by the dataset key <video>_<frame>, which carries the video
    vis = trained['work'] / 'experiments' / NAME / 'visualization'
    keys = lmdb_keys(trained['opt']['datasets']['val']['dataroot_lq'])
    assert sorted(p.name for p in vis.iterdir()) == keys


@pytest.mark.slow
def test_auto_resume_continues_from_the_saved_iteration(trained):
    log = trained['log'][len(trained['first_log']):]
    assert 'Resuming training from epoch: 0, iter: 12.' in log
    logged = [int(i) for i in re.findall(r'iter:\s+(\d+),', log)]
    assert logged and min(logged) == 13 and max(logged) == 24
    states = trained['work'] / 'experiments' / NAME / 'training_states'
    assert torch.load(states / '24.state', weights_only=True)['iter'] == 24


@pytest.mark.slow
def test_checkpoint_rebuilds_the_network_on_its_own(trained):
    path = trained['work'] / 'experiments' / NAME / 'models' / 'net_g_latest.pth'
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema', 'network_g'}
    net = build_network(dict(checkpoint['network_g']))
    net.load_state_dict(checkpoint['params_ema'])
    assert net.config['num_stages'] == 2 and net.config['kernel_size'] == 15


@pytest.mark.slow
def test_test_script_writes_metrics_and_images_named_by_video(trained):
    work = trained['work']
    checkpoint = work / 'experiments' / NAME / 'models' / 'net_g_latest.pth'
    opt = write_yaml(eval_options(trained['opt'], 'tiny_e2e_test', checkpoint), work / 'test.yml')
    out = run([PYTHON, ROOT / 'jude_arch' / 'test.py', '-opt', opt], cwd=work)
    assert re.search(r'# psnr: \d+\.\d+', out)
    images = work / 'results' / 'tiny_e2e_test' / 'visualization' / 'tiny-test'
    keys = lmdb_keys(trained['opt']['datasets']['val']['dataroot_lq'])
    assert sorted(p.name for p in images.iterdir()) == [f'{key}_tiny.png' for key in keys]
    assert len({key.split('_')[0] for key in keys}) == 2  # two held-out videos, frame names repeat across them


def train_in_process(opt, work, monkeypatch):
    """BasicSR's train_pipeline in this process (no interpreter start-up): the mixing runs.

    Returns:
        tuple[dict, str]: the latest checkpoint and BasicSR's log messages of the run.
    """
    path = write_yaml(opt, work / f'{opt["name"]}.yml')
    log = pipeline_in_process(train_pipeline, ['train.py', '-opt', path], work, monkeypatch)
    checkpoint = torch.load(work / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth', weights_only=True)
    return checkpoint, log


def test_stock_srmodel_trains_jude_with_judeloss(data, tmp_path, monkeypatch):
    opt = tiny_options(data, 'mix_srmodel', total_iter=4, model='SRModel', val={'save_img': False})
    checkpoint, log = train_in_process(opt, tmp_path, monkeypatch)
    assert 'network_g' not in checkpoint  # a stock BasicSR checkpoint
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(checkpoint['params'])
    assert 'Loss [JUDELoss] is created.' in log and 'Model [SRModel] is created.' in log


def test_judemodel_trains_a_stock_basicsr_arch(data, tmp_path, monkeypatch):
    swinir = {'type': 'SwinIR', 'upscale': 1, 'in_chans': 3, 'img_size': 32, 'window_size': 8, 'img_range': 1.0,
              'depths': [1], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': '',
              'resi_connection': '1conv'}
    opt = tiny_options(data, 'mix_swinir', total_iter=4, network=swinir, val={'save_img': False})
    checkpoint, log = train_in_process(opt, tmp_path, monkeypatch)
    assert 'Model [JUDEModel] is created.' in log and 'Network: SwinIR' in log
    assert checkpoint['network_g'] == swinir  # any arch: the YAML's network options travel with the weights
    net = build_network(dict(checkpoint['network_g']))
    net.load_state_dict(checkpoint['params_ema'])
    assert re.search(r'Validation tiny-test\s+# psnr: \d+\.\d+', log)
