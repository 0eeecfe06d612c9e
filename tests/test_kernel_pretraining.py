"""Kernel pretraining (KernelEstimatorModel, phase 0) and JUDEModel's optional physics losses and metrics."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from basicsr.losses import build_loss
from basicsr.utils.options import parse_options

from jude_arch.archs import JUDE
from jude_arch.losses import JUDELoss
import training_helpers
from training_helpers import TINY_NET, FakeTensorBoard, tiny_lolblur, tiny_options

OPTIONS = Path(__file__).resolve().parents[1] / 'options'
ESTIMATOR_NET = {'type': 'JUDEKernelNet', 'preset': 'small', 'kernel_size': TINY_NET['kernel_size'],
                 'kernel_width': TINY_NET['kernel_width']}
PHYSICS_LOSSES = {'sharp_opt': {'type': 'L1Loss', 'loss_weight': 0.5},
                  'kernel_opt': {'type': 'KernelLoss', 'loss_weight': 0.1},
                  'reblur_opt': {'type': 'ReblurLoss', 'light': 'linear'},
                  'reflectance_opt': {'type': 'L1Loss', 'loss_weight': 0.5},
                  'illumination_opt': {'type': 'IlluminationTargetLoss', 'loss_weight': 0.5}}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def extras(data, split):
    """LOLBlurDataset options (folders) with low_sharp, low_blur and the true kernels of `split`."""
    root = data / 'lolblur' / split
    return {'dataroot_lq': str(root / 'low_blur_noise'), 'dataroot_gt': str(root / 'high_sharp_scaled'),
            'dataroot_low_sharp': str(root / 'low_sharp'), 'dataroot_low_blur': str(root / 'low_blur'),
            'dataroot_kernel': str(root / 'kernels'), 'io_backend': {'type': 'disk'}}


def make_model(data, work, **sections):
    """`training_helpers.make_model` with the torch seed fixed first, so models built alike start alike."""
    torch.manual_seed(0)
    return training_helpers.make_model(data, work, **sections)


def batch(opt, n=2, seed=0):
    torch.manual_seed(seed)
    dataset = build_dataset(opt['datasets']['train'])
    items = [dataset[i] for i in range(n)]
    return {key: torch.stack([item[key] for item in items]) for key in items[0] if torch.is_tensor(items[0][key])}


def shake_datasets():
    common = {'type': 'ShakeBlurDataset', 'dataroot_gt': 'skimage', 'kernel_size': 21}
    return {'train': {**common, 'name': 'shake', 'gt_size': 48, 'length': 8, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {**common, 'name': 'shake-val', 'gt_size': 64, 'length': 2}}


def pretraining(data, work, **train):
    return make_model(data, work, network=ESTIMATOR_NET, model='KernelEstimatorModel', datasets=shake_datasets(),
                      train={'pixel_opt': None, 'kernel_opt': {'type': 'KernelLoss', 'loss_weight': 0.05}, **train})


def test_pretraining_learns_and_its_weights_start_phase_1(data, tmp_path):
    model, opt = pretraining(data, tmp_path / 'p0', optim_g={'type': 'Adam', 'lr': 3e-3})
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    train = batch(opt)
    for step in range(1, 4):
        model.feed_data(train)
        model.optimize_parameters(step)
        if step == 1:
            first = model.log_dict['l_reblur'] + model.log_dict['l_kernel']
    assert model.log_dict['l_reblur'] + model.log_dict['l_kernel'] < first
    model.save(epoch=0, current_iter=3)
    checkpoint = torch.load(tmp_path / 'p0' / 'models' / 'net_g_3.pth', weights_only=True)
    assert checkpoint['network_g'] == ESTIMATOR_NET
    assert all(key.startswith('kernel_estimator.') for key in checkpoint['params'])
    assert any(not torch.equal(start[k], v) for k, v in checkpoint['params'].items())

    # Phase 1: JUDE starts from the estimator's weights; everything else is JUDE's own initialisation.
    fresh, _ = make_model(data, tmp_path / 'fresh')
    phase1, _ = make_model(data, tmp_path / 'p1', path={'pretrain_network_g': str(tmp_path / 'p0/models/net_g_3.pth'),
                                                        'strict_load_g': False, 'resume_state': None})
    assert isinstance(phase1.net_g, JUDE)
    for key, value in phase1.net_g.state_dict().items():
        if key.startswith('kernel_estimator.'):
            assert torch.equal(value, checkpoint['params'][key]), key
        else:
            assert torch.equal(value, fresh.net_g.state_dict()[key]), key


def test_pretraining_validation_logs_kernel_metrics(data, tmp_path):
    model, opt = pretraining(data, tmp_path, val={'val_freq': 1, 'tb_images': 1})
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0, dist=False)
    tb = FakeTensorBoard()
    model.validation(loader, current_iter=1, tb_logger=tb, save_img=False)
    assert set(model.metric_results) == {'reblur_psnr', 'kernel_similarity', 'kernel_entropy'}
    assert model.metric_results['kernel_entropy'] > 0.99  # untrained: near uniform
    assert {'metrics/shake-val/reblur_psnr', 'metrics/shake-val/kernel_similarity'} <= set(tb.scalars)
    assert tb.images['shake-val/000/kernel_estimated_true'].shape == (1, 4 * 21, 8 * 21)


class RecordingLogger:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def test_validation_reads_against_reference_kernels_computed_once_per_set(data, tmp_path, monkeypatch):
    """The estimate's re-blur PSNR is logged beside the uniform, best-Gaussian and true kernels' on the same
    frames; those are computed on the first validation of a set only."""
    from jude_arch import physics
    from jude_arch.models import physics_terms
    model, opt = pretraining(data, tmp_path, val={'val_freq': 1, 'tb_images': 0})
    calls, logger = [], RecordingLogger()
    reference = physics.reference_reblur_psnr
    monkeypatch.setattr(physics, 'reference_reblur_psnr', lambda *a, **k: calls.append(1) or reference(*a, **k))
    monkeypatch.setattr(physics_terms, 'get_root_logger', lambda: logger)
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0, dist=False)
    tb = FakeTensorBoard()
    for step in (1, 2):
        model.validation(loader, current_iter=step, tb_logger=tb, save_img=False)
    assert len(calls) == 2  # the set's two frames, once: not again at the second validation
    references = model.kernel_references['shake-val']
    assert set(references) == {'uniform', 'best_gaussian', 'true'}
    assert references['true'] > references['best_gaussian'] > references['uniform']
    # The values are those of the frames themselves.
    items = [loader.dataset[i] for i in range(2)]
    expected = physics.reference_reblur_psnr(*(torch.stack([item[key] for item in items])
                                               for key in ('low_sharp', 'low_blur', 'kernel')),
                                            size=ESTIMATOR_NET['kernel_size'])
    for name, values in expected.items():
        assert references[name] == pytest.approx(values.mean().item(), abs=1e-4)
    estimate = model.metric_results['reblur_psnr']
    gap = references['best_gaussian'] - estimate
    assert len(logger.lines) == 2 and f'{abs(gap):.2f} dB {"below" if gap > 0 else "above"} the best isotropic ' \
        f'Gaussian ({references["best_gaussian"]:.2f} dB, an oracle)' in logger.lines[-1]
    assert f'true kernel {references["true"]:.2f}' in logger.lines[-1]
    assert tb.scalars['metrics/shake-val/reblur_psnr_best_gaussian'] == references['best_gaussian']


@pytest.mark.parametrize('key, message', [('pixel_opt', 'no image output'), ('sharp_opt', 'no image output')])
def test_pretraining_rejects_image_losses(data, tmp_path, key, message):
    with pytest.raises(ValueError, match=message):
        pretraining(data, tmp_path, **{key: {'type': 'L1Loss'}})


def test_papers_recipe_is_unchanged_without_the_new_options(data, tmp_path):
    """Without sharp_opt / kernel_opt / reblur_opt a step is exactly Adam on JUDELoss(net(lq), gt), and the
    forward pass skips the intermediates."""
    model, opt = make_model(data, tmp_path, train={'ema_decay': 0})
    assert not model.uses_intermediates
    reference = copy.deepcopy(model.net_g)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3, betas=(0.9, 0.99))
    loss = JUDELoss()
    calls = []
    forward = model.net_g.forward
    model.net_g.forward = lambda x, **kwargs: calls.append(kwargs) or forward(x, **kwargs)
    for step in (1, 2):
        data_batch = batch(opt, seed=step)
        model.feed_data(data_batch)
        model.optimize_parameters(step)
        optimizer.zero_grad()
        loss(reference(data_batch['lq']), data_batch['gt']).backward()
        optimizer.step()
    assert calls == [{}, {}]
    assert set(model.log_dict) == {'l_pix'}
    for (name, ours), theirs in zip(model.net_g.named_parameters(), reference.parameters()):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize('losses', [['kernel_opt'], ['reblur_opt'], list(PHYSICS_LOSSES)])
def test_physics_losses_train_the_kernel_estimator(data, tmp_path, losses):
    datasets = {'train': {**tiny_options(data, 'x')['datasets']['train'], **extras(data, 'train'), 'kernel_size': 21}}
    grads = {}
    for name, train in (('paper', {}), ('physics', {key: PHYSICS_LOSSES[key] for key in losses})):
        model, opt = make_model(data, tmp_path / name, datasets=datasets, train={'ema_decay': 0, **train})
        model.feed_data(batch(opt))
        model.optimize_parameters(1)
        grads[name] = torch.stack([p.grad.norm() for p in model.net_g.kernel_estimator.parameters()]).norm()
    names = {'sharp_opt': 'l_sharp', 'kernel_opt': 'l_kernel', 'reblur_opt': 'l_reblur',
             'reflectance_opt': 'l_reflectance', 'illumination_opt': 'l_illumination'}
    assert set(model.log_dict) == {'l_pix'} | {names[key] for key in losses}
    assert grads['physics'] > 100 * grads['paper']  # the paper's loss barely reaches the estimator


@pytest.mark.parametrize('key, missing', [('sharp_opt', 'low_sharp'), ('kernel_opt', 'kernel')])
def test_physics_losses_without_their_data_are_clear_errors(data, tmp_path, key, missing):
    model, opt = make_model(data, tmp_path, train={key: PHYSICS_LOSSES[key]})
    model.feed_data(batch(opt))
    with pytest.raises(ValueError, match=f"train.{key} needs '{missing}' in the training data"):
        model.optimize_parameters(1)


@pytest.mark.parametrize('physics', [None, False])
def test_validation_logs_physics_metrics_beside_the_output_metrics(data, tmp_path, physics):
    val = {'tb_images': 1, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    if physics is not None:
        val['physics'] = physics
    model, opt = make_model(data, tmp_path, val=val)
    dataset_opt = {'name': 'tiny-test', 'type': 'LOLBlurDataset', 'phase': 'val', 'scale': 1, 'kernel_size': 21,
                   **extras(data, 'test')}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    tb = FakeTensorBoard()
    model.validation(loader, current_iter=2, tb_logger=tb, save_img=False)
    physics_metrics = {'reblur_psnr', 'kernel_similarity', 'kernel_entropy', 'i_k_psnr', 'illumination_chroma',
                       'illumination_gradient_ratio'}
    if physics is False:
        assert set(model.metric_results) == {'psnr'}
        return
    assert set(model.metric_results) == {'psnr'} | physics_metrics
    assert {f'metrics/tiny-test/{name}' for name in physics_metrics} <= set(tb.scalars)
    assert 0 < model.metric_results['kernel_similarity'] <= 1 and model.metric_results['reblur_psnr'] > 10
    # The data has true kernels: the reference kernels were scored on the same frames, and go to TensorBoard.
    assert set(model.kernel_references['tiny-test']) == {'uniform', 'best_gaussian', 'true'}
    assert 'metrics/tiny-test/reblur_psnr_true' in tb.scalars
    assert model.metric_results['illumination_chroma'] > 0


def parse(name, monkeypatch, tmp_path):
    """Parse an options file exactly as jude_arch/train.py does, with tmp_path as root."""
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(OPTIONS / name)])
    return parse_options(str(tmp_path), is_train=True)[0]


def test_options_files_chain_phase_0_into_jude(monkeypatch, tmp_path):
    phase0 = parse('train_kernel_estimator.yml', monkeypatch, tmp_path)
    assert phase0['model_type'] == 'KernelEstimatorModel' and phase0['network_g']['type'] == 'JUDEKernelNet'
    assert phase0['datasets']['train']['type'] == phase0['datasets']['val']['type'] == 'ShakeBlurDataset'
    assert sum(phase0['train']['scheduler']['periods']) >= phase0['train']['total_iter']
    for key in ('reblur_opt', 'kernel_opt'):
        build_loss(dict(phase0['train'][key]))
    # Its estimator is the full JUDE's: the same parameter names and shapes.
    estimator = build_network(dict(phase0['network_g'])).state_dict()
    full = {key: value.shape for key, value in JUDE(preset='full').state_dict().items()}
    assert {key: value.shape for key, value in estimator.items()} == {k: full[k] for k in estimator}

    # The demo's physics recipe: its phase 0 (the held-out frames never drawn), then JUDE from its estimator.
    demo_p0 = parse('train_kernel_estimator_demo.yml', monkeypatch, tmp_path)
    demo = parse('train_jude_demo_physics.yml', monkeypatch, tmp_path)
    assert demo['path']['pretrain_network_g'] == f'experiments/{demo_p0["name"]}/models/net_g_latest.pth'
    assert demo['path']['strict_load_g'] is False
    assert 'train' in demo_p0['datasets']['train']['dataroot_gt'] and 'test' in demo_p0['datasets']['val']['dataroot_lq']
    assert not any('test' in source for source in demo_p0['datasets']['train']['extra_sources'])
    estimator = build_network(dict(demo_p0['network_g'])).state_dict()
    jude = build_network(dict(demo['network_g'])).state_dict()
    assert {key: value.shape for key, value in estimator.items()} == {k: jude[k].shape for k in estimator}
    for key in PHYSICS_LOSSES:
        assert demo['train'][key]['type'] == PHYSICS_LOSSES[key]['type']
        build_loss(dict(demo['train'][key]))
    # The illumination target is on, the scale-free prior off (it cost output PSNR, docs/physics.md).
    assert demo['train']['illumination_opt']['window'] == 5
    assert demo['train']['illumination_chroma_opt'] is None and demo['train']['illumination_smoothness_opt'] is None
    train = demo['datasets']['train']
    assert {'dataroot_low_sharp', 'dataroot_low_blur', 'dataroot_kernel'} <= set(train)


def test_reflectance_loss_compares_r_k_with_the_ground_truth(data, tmp_path):
    model, opt = make_model(data, tmp_path, train={'ema_decay': 0,
                                                   'reflectance_opt': PHYSICS_LOSSES['reflectance_opt']})
    train = batch(opt)
    with torch.no_grad():
        r_k = model.net_g(train['lq'], return_intermediates=True)['R'][-1]
    model.feed_data(train)
    model.optimize_parameters(1)
    expected = 0.5 * (r_k - train['gt']).abs().mean()
    assert model.log_dict['l_reflectance'] == pytest.approx(expected.item(), rel=1e-5)


def test_illumination_target_compares_l_k_with_the_scene_light_of_low_sharp_and_the_ground_truth(data, tmp_path):
    from jude_arch.losses.illumination_prior import scene_light
    datasets = {'train': {**tiny_options(data, 'x')['datasets']['train'], **extras(data, 'train')}}
    model, opt = make_model(data, tmp_path, datasets=datasets,
                            train={'ema_decay': 0, 'illumination_opt': PHYSICS_LOSSES['illumination_opt']})
    train = batch(opt)
    with torch.no_grad():
        l_k = model.net_g(train['lq'], return_intermediates=True)['L'][-1]
    model.feed_data(train)
    model.optimize_parameters(1)
    expected = 0.5 * (l_k - scene_light(train['low_sharp'], train['gt'])).abs().mean()
    assert model.log_dict['l_illumination'] == pytest.approx(expected.item(), rel=1e-5)


def test_illumination_prior_is_computed_on_l_k_against_i_k(data, tmp_path):
    from jude_arch.losses.illumination_prior import illumination_chroma, illumination_roughness
    prior = {'illumination_chroma_opt': {'type': 'IlluminationChromaLoss', 'loss_weight': 2.0},
             'illumination_smoothness_opt': {'type': 'IlluminationSmoothnessLoss', 'loss_weight': 0.5,
                                             'edge_weight': 5}}
    model, opt = make_model(data, tmp_path, train={'ema_decay': 0, **prior})
    assert model.uses_intermediates
    train = batch(opt)
    with torch.no_grad():
        out = model.net_g(train['lq'], return_intermediates=True)
    model.feed_data(train)
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix', 'l_illum_chroma', 'l_illum_smooth'}
    assert model.log_dict['l_illum_chroma'] == pytest.approx(2 * illumination_chroma(out['L'][-1]).mean().item(),
                                                             rel=1e-4)
    expected = 0.5 * illumination_roughness(out['L'][-1], out['I'][-1], 5).mean().item()
    assert model.log_dict['l_illum_smooth'] == pytest.approx(expected, rel=1e-4)
