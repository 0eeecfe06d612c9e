"""The options files: the three phases (paper numbers, phase chaining), the test and demo files."""
import json
import re
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.options import parse_options

from jude_arch.archs import JUDE, PRESETS
from jude_arch.data.lq_noise import parse_lq_noise
from jude_arch.option_check import OptionError, check_options

OPTIONS = Path(__file__).resolve().parents[1] / 'options'
PAIRS = 10_200  # LOL-Blur training pairs
# phase: (crop, total batch, lr, epochs) from the paper (§4.1)
PHASES = {1: (256, 12, 1e-4, 300), 2: (384, 8, 5e-5, 100), 3: (512, 4, 2.5e-5, 100)}


def parse(name, monkeypatch, tmp_path, is_train=True):
    """Parse an options file exactly as jude_arch/train.py (or test.py) does, with tmp_path as root."""
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(OPTIONS / name)])
    opt, _ = parse_options(str(tmp_path), is_train=is_train)
    return opt


@pytest.fixture(scope='module')
def full_net_parameters():
    return sum(p.numel() for p in JUDE(preset='full').parameters())


@pytest.mark.parametrize('phase', sorted(PHASES))
def test_phase_files_hold_the_papers_numbers(phase, monkeypatch, tmp_path, full_net_parameters):
    crop, batch, lr, epochs = PHASES[phase]
    opt = parse(f'train_jude_p{phase}.yml', monkeypatch, tmp_path)
    train_set, train = opt['datasets']['train'], opt['train']

    assert opt['model_type'] == 'JUDEModel' and opt['scale'] == 1
    assert train_set['type'] == 'LOLBlurDataset' and train_set['gt_size'] == crop
    assert train_set['batch_size_per_gpu'] * opt['world_size'] == batch  # one GPU: per-GPU batch = total
    assert train['total_iter'] == epochs * PAIRS // batch == {1: 255_000, 2: 127_500, 3: 255_000}[phase]
    assert train['optim_g'] == {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.99]}
    assert train['scheduler'] == {'type': 'CosineAnnealingRestartLR', 'periods': [train['total_iter']],
                                  'restart_weights': [1], 'eta_min': 1e-7}
    assert train['pixel_opt']['type'] == 'JUDELoss' and train['pixel_opt']['fft_weight'] == 0.1

    net = build_network(dict(opt['network_g']))
    assert isinstance(net, JUDE) and net.config['num_stages'] == 5 and net.config['kernel_size'] == 31
    # Checkpoint only where a step would not fit (phase 3 in fp32 on an 80 GB GPU), not on an H200 (docs/gpu.md)
    assert net.config['checkpoint_stages'] == 'auto' and net.auto_checkpoint is not None
    assert sum(p.numel() for p in net.parameters()) == full_net_parameters


def test_phases_chain_and_only_phase_3_adds_noise(monkeypatch, tmp_path):
    opts = {p: parse(f'train_jude_p{p}.yml', monkeypatch, tmp_path) for p in PHASES}
    assert opts[1]['path']['pretrain_network_g'] is None
    for phase in (2, 3):
        previous = opts[phase - 1]['name']
        assert opts[phase]['path']['pretrain_network_g'] == f'experiments/{previous}/models/net_g_latest.pth'
        assert opts[phase]['network_g'] == opts[phase - 1]['network_g']
    assert len({opt['name'] for opt in opts.values()}) == 3
    for phase in (1, 2):
        assert 'lq_noise' not in opts[phase]['datasets']['train']
    noise = parse_lq_noise(opts[3]['datasets']['train']['lq_noise'])
    assert noise['gaussian_sigma'] == [0, 8] and noise['poisson_scale'] == [0.1, 1.2] and noise['gray_prob'] == 0.3


@pytest.mark.parametrize('name', ['test_jude_lolblur.yml', 'test_jude_lolblur_paper.yml', 'test_jude_real.yml',
                                  'test_jude_demo.yml'])
def test_test_files_parse(name, monkeypatch, tmp_path):
    opt = parse(name, monkeypatch, tmp_path, is_train=False)
    assert opt['model_type'] == 'JUDEModel' and opt['val']['save_img'] and opt['val']['suffix']
    assert isinstance(build_network(dict(opt['network_g'])), JUDE)
    metrics = set(opt['val']['metrics'])
    assert metrics == ({'niqe'} if 'real' in name else {'psnr', 'ssim', 'lpips'} if 'lolblur' in name else
                       {'psnr', 'ssim'})


def test_demo_files_agree(monkeypatch, tmp_path):
    train = parse('train_jude_demo.yml', monkeypatch, tmp_path)
    test = parse('test_jude_demo.yml', monkeypatch, tmp_path, is_train=False)
    assert train['network_g'] == test['network_g'] == {'type': 'JUDE', 'preset': 'small'}
    assert test['path']['pretrain_network_g'] == f'experiments/{train["name"]}/models/net_g_latest.pth'
    assert test['datasets']['test']['dataroot_lq'] == train['datasets']['val']['dataroot_lq']
    assert sum(train['train']['scheduler']['periods']) >= train['train']['total_iter']
    assert train['num_gpu'] == test['num_gpu'] == 0 or torch.cuda.is_available()  # 'auto' on a CPU machine


def parse_checked(opt, monkeypatch, tmp_path, text=None):
    """Parse options through basicsr.train.parse_options as jude_arch/train.py does (JUDE's shims applied)."""
    import basicsr.train
    path = tmp_path / 'options.yml'
    path.write_text(text if text is not None else yaml.safe_dump(opt, sort_keys=False))
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path)])
    return basicsr.train.parse_options(str(tmp_path), is_train=True)[0]


@pytest.mark.parametrize('name', sorted(p.name for p in OPTIONS.glob('*.yml')))
def test_every_options_file_passes_the_typo_check(name, monkeypatch, tmp_path):
    check_options(parse(name, monkeypatch, tmp_path, is_train=name.startswith('train')))


def demo_options(monkeypatch, tmp_path):
    return json.loads(json.dumps(parse('train_jude_demo.yml', monkeypatch, tmp_path)))


@pytest.mark.parametrize('section, typo, message', [
    ('train', 'precison', 'unknown key train.precison; did you mean precision?'),
    ('val', 'tb_image', 'unknown key val.tb_image; did you mean tb_images?'),
    ('datasets.train', 'use_hfilp', 'unknown key datasets.train.use_hfilp; did you mean use_hflip?'),
    ('datasets.train', 'gt_sise', 'unknown key datasets.train.gt_sise; did you mean gt_size?'),
    ('network_g', 'num_stage', 'unknown key network_g.num_stage; did you mean num_stages?'),
    ('train.pixel_opt', 'fft_wieght', 'unknown key train.pixel_opt.fft_wieght; did you mean fft_weight?'),
])
def test_typos_in_judes_sections_are_refused(section, typo, message, monkeypatch, tmp_path):
    opt = demo_options(monkeypatch, tmp_path)
    node = opt
    for part in section.split('.'):
        node = node[part]
    node[typo] = 1
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_checked(opt, monkeypatch, tmp_path)


@pytest.mark.parametrize('section, typo, message', [
    ('train', 'reblur_otp', 'unknown key train.reblur_otp; did you mean reblur_opt?'),
    ('val', 'phyiscs', 'unknown key val.phyiscs; did you mean physics?'),
    ('datasets.train', 'lenght', 'unknown key datasets.train.lenght; did you mean length?'),
])
def test_typos_in_the_kernel_estimators_file_are_refused(section, typo, message, monkeypatch, tmp_path):
    """KernelEstimatorModel and ShakeBlurDataset are checked through the option names their classes declare."""
    opt = json.loads(json.dumps(parse('train_kernel_estimator.yml', monkeypatch, tmp_path)))
    node = opt
    for part in section.split('.'):
        node = node[part]
    node[typo] = 1
    with pytest.raises(OptionError, match=re.escape(message)):
        check_options(opt)


def test_the_checked_names_are_the_ones_the_classes_declare(monkeypatch, tmp_path):
    """Declared once: a key a model or dataset class adds to its declaration is accepted, with no list to edit."""
    from jude_arch.data import LOLBlurDataset
    from jude_arch.models.jude_model import JUDEModel

    opt = demo_options(monkeypatch, tmp_path)
    opt['train']['new_knob'] = opt['val']['new_knob'] = opt['datasets']['train']['new_knob'] = 1
    with pytest.raises(OptionError, match='train.new_knob'):
        check_options(opt)
    monkeypatch.setattr(JUDEModel, 'TRAIN_OPTIONS', JUDEModel.TRAIN_OPTIONS + ('new_knob', ))
    monkeypatch.setattr(JUDEModel, 'VAL_OPTIONS', JUDEModel.VAL_OPTIONS + ('new_knob', ))
    with pytest.raises(OptionError, match='datasets.train.new_knob'):
        check_options(opt)
    monkeypatch.setattr(LOLBlurDataset, 'OPTIONS', LOLBlurDataset.OPTIONS + ('new_knob', ))
    check_options(opt)


def test_network_g_takes_every_jude_option(monkeypatch, tmp_path):
    """JUDE's option names come from its config: every field is accepted (refine_steps included) and builds."""
    opt = demo_options(monkeypatch, tmp_path)
    opt['network_g'].update(PRESETS['small'].as_dict(), refine_steps=1, num_stages=4)
    parsed = parse_checked(opt, monkeypatch, tmp_path)
    net = build_network(dict(parsed['network_g']))
    assert net.config == dict(PRESETS['small'].as_dict(), refine_steps=1, num_stages=4)


@pytest.mark.parametrize('section, typo, message', [
    ('path', 'pretrain_netwrok_g', 'unknown key path.pretrain_netwrok_g; did you mean pretrain_network_g?'),
    ('logger', 'save_checkpiont_freq', 'unknown key logger.save_checkpiont_freq; did you mean save_checkpoint_freq?'),
    ('logger.wandb', 'projcet', 'unknown key logger.wandb.projcet; did you mean project?'),
    ('dist_params', 'bakend', 'unknown key dist_params.bakend; did you mean backend?'),
    ('', 'manual_sead', 'unknown key manual_sead; did you mean manual_seed?'),
    ('val.metrics.psnr', 'test_y_chanel', 'unknown key val.metrics.psnr.test_y_chanel; did you mean test_y_channel?'),
    ('train.optim_g', 'beta', 'unknown key train.optim_g.beta; did you mean betas?'),
    ('train.scheduler', 'period', 'unknown key train.scheduler.period; did you mean periods?'),
])
def test_typos_in_every_section_are_refused(section, typo, message, monkeypatch, tmp_path):
    """Sections BasicSR reads (path, logger, dist_params, the top level, metrics, optimizer and scheduler) are
    checked too: a misspelt pretrain_network_g would train from scratch, a misspelt save_checkpoint_freq is a
    KeyError at iteration 1, a misspelt metric argument is ignored."""
    opt = demo_options(monkeypatch, tmp_path)
    opt['dist_params'] = {'backend': 'nccl', 'port': 29500}
    node = opt
    for part in filter(None, section.split('.')):
        node = node[part]
    node[typo] = 1
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_checked(opt, monkeypatch, tmp_path)


def test_an_unknown_metric_type_is_named_at_once(monkeypatch, tmp_path):
    opt = demo_options(monkeypatch, tmp_path)
    opt['val']['metrics']['psnr']['type'] = 'calculate_pnsr'
    with pytest.raises(OptionError, match="val.metrics.psnr.type: no metric 'calculate_pnsr'; did you mean "
                                          'calculate_psnr?'):
        parse_checked(opt, monkeypatch, tmp_path)


def test_a_key_read_outside_the_model_is_one_declaration(monkeypatch, tmp_path):
    from jude_arch import option_check

    opt = demo_options(monkeypatch, tmp_path)
    opt['new_knob'] = opt['logger']['new_knob'] = 1
    with pytest.raises(OptionError, match='unknown key new_knob'):
        check_options(opt)
    monkeypatch.setattr(option_check, 'PROJECT_KEYS', {'': ('new_knob', ), 'logger': ('new_knob', )})
    check_options(opt)


def test_basicsr_sections_and_keys_stay_accepted(monkeypatch, tmp_path):
    opt = demo_options(monkeypatch, tmp_path)
    opt['datasets']['train'].update(pin_memory=False, persistent_workers=False, num_prefetch_queue=1)
    opt['val']['pbar'] = False
    opt['val']['metrics']['psnr']['better'] = 'higher'
    opt['path'].update(param_key_g='params_ema', ignore_resume_networks=['network_g'])
    opt['dist_params'] = {'backend': 'nccl', 'port': 29500}
    opt['find_unused_parameters'] = False
    opt['train']['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv5_4': 1}}
    opt['train']['optim_g'].update(eps=1e-8, amsgrad=False)
    parse_checked(opt, monkeypatch, tmp_path)
    opt['model_type'] = 'SRModel'  # another model reads the top level, train and val as it likes
    opt['train']['precison'] = 'bf16'
    opt['degradation_knob'] = 1
    parse_checked(opt, monkeypatch, tmp_path)


def test_python_tags_in_an_options_file_are_refused(monkeypatch, tmp_path):
    marker = tmp_path / 'ran'
    text = (OPTIONS / 'train_jude_demo.yml').read_text()
    text += f'\nexploit: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(yaml.YAMLError, match='tag !!python/object/apply:os.system is refused'):
        parse_checked(None, monkeypatch, tmp_path, text=text)
    assert not marker.exists()
    opt = parse_checked(None, monkeypatch, tmp_path, text=(OPTIONS / 'train_jude_demo.yml').read_text())
    assert isinstance(opt['train'], OrderedDict)  # BasicSR's ordered mappings are kept
