"""JUDEModel in process: checkpoints, EMA, precision, clipping, schedule checks, validation on full frames."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset

from jude_arch.checkpoint_io import TEMPORARY_SUFFIX
from jude_arch.models.validation import image_name
from jude_arch.restore.restorer import JUDERestorer
from training_helpers import TINY_NET, FakeTensorBoard, make_model, tiny_lolblur, train_batch


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def test_checkpoint_carries_network_options_and_loads_weights_only(data, tmp_path):
    model, _ = make_model(data, tmp_path)
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    model.save(epoch=0, current_iter=1)

    checkpoint = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema', 'network_g'}
    assert checkpoint['network_g'] == {'type': 'JUDE', **model.net_g.config}
    net = build_network(dict(checkpoint['network_g'])).eval()
    net.load_state_dict(checkpoint['params_ema'])
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        assert torch.equal(net(x), model.net_g_ema(x))
    state = torch.load(tmp_path / 'training_states' / '1.state', weights_only=True)
    assert state['iter'] == 1 and len(state['optimizers']) == 1
    assert not list(tmp_path.rglob(f'*{TEMPORARY_SUFFIX}'))  # written to a temporary file, renamed when complete


def test_ema_averages_parameters_and_copies_buffers(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'ema_decay': 0.9})
    before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    net, ema = model.net_g.state_dict(), model.net_g_ema.state_dict()
    buffers = [name for name, _ in model.net_g.named_buffers()]
    assert any('running_mean' in name for name in buffers)  # JUDE's hyper-parameter net has BatchNorm
    for name in buffers:
        assert torch.equal(ema[name], net[name]), name
    changed = 0
    for name, _ in model.net_g.named_parameters():
        assert torch.allclose(ema[name], 0.9 * before[name] + 0.1 * net[name], atol=1e-6), name
        changed += not torch.equal(net[name], before[name])
    assert changed


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_mixed_precision_steps(data, tmp_path, precision):
    model, _ = make_model(data, tmp_path, train={'precision': precision, 'ema_decay': 0})
    assert model.grad_scaler.is_enabled() == (precision == 'fp16')
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert np.isfinite(model.log_dict['l_pix'])
    assert any(not torch.equal(v, start[k]) for k, v in model.net_g.state_dict().items())
    model.save_training_state(epoch=0, current_iter=1)
    state = torch.load(tmp_path / 'training_states' / '1.state', weights_only=True)
    assert ('grad_scaler' in state) == (precision == 'fp16')
    resumed, _ = make_model(data, tmp_path, train={'precision': precision, 'ema_decay': 0})
    resumed.resume_training(state)
    if precision == 'fp16':
        assert resumed.grad_scaler.get_scale() == model.grad_scaler.get_scale()


def test_gradient_clipping(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'grad_clip': {'max_norm': 1e-3}, 'ema_decay': 0})
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert model.log_dict['grad_norm'] > 1e-3  # the norm before clipping is logged
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.net_g.parameters()]))
    assert clipped <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize('sections, message', [
    ({'total_iter': 20, 'train': {'total_iter': 20, 'scheduler': {
        'type': 'CosineAnnealingRestartLR', 'periods': [10], 'restart_weights': [1], 'eta_min': 1e-7}}},
     'exceeds the cosine schedule'),
    ({'train': {'precision': 'fp8'}}, 'precision must be one of'),
    ({'train': {'grad_clip': 'yes'}}, 'grad_clip must be'),
])
def test_bad_options_are_clear_errors(data, tmp_path, sections, message):
    with pytest.raises(ValueError, match=message):
        make_model(data, tmp_path, **sections)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error shown on machines without CUDA')
def test_asking_for_a_gpu_without_cuda_is_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match='CUDA is not available'):
        make_model(data, tmp_path, num_gpu=1)


def test_default_loss_is_the_papers(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'pixel_opt': None})
    assert type(model.cri_pix).__name__ == 'JUDELoss' and model.cri_pix.fft_weight == 0.1


def test_image_names_carry_the_video():
    assert image_name({'key': ['0003_0001'], 'lq_path': ['x/0003/0001.png']}) == '0003_0001'
    assert image_name({'lq_path': ['lmdb_key_0007']}) == 'lmdb_key_0007'


@pytest.fixture(scope='module')
def full_frame(tmp_path_factory):
    """One LOL-Blur-sized (1120×640) pair in the folder layout: video 0007, frame 0001."""
    root = tmp_path_factory.mktemp('full_frame')
    rng = np.random.default_rng(0)
    gt = cv2.resize((rng.random((40, 70, 3)) * 255).astype(np.uint8), (1120, 640), interpolation=cv2.INTER_CUBIC)
    for folder, image in (('gt', gt), ('lq', (gt * 0.2).astype(np.uint8))):
        (root / folder / '0007').mkdir(parents=True)
        cv2.imwrite(str(root / folder / '0007' / '0001.png'), image)
    return root


@pytest.mark.parametrize('tile', [None, {'size': 512, 'overlap': 64}])
def test_validation_on_a_full_frame(data, tmp_path, full_frame, tile):
    val = {'tile': tile, 'tb_images': 1, 'save_img': True,
           'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    model, _ = make_model(data, tmp_path, val=val)
    dataset_opt = {'name': 'full', 'type': 'LOLBlurDataset', 'dataroot_lq': str(full_frame / 'lq'),
                   'dataroot_gt': str(full_frame / 'gt'), 'io_backend': {'type': 'disk'}, 'phase': 'val', 'scale': 1}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    tb = FakeTensorBoard()
    model.validation(loader, current_iter=3, tb_logger=tb, save_img=True)

    saved = cv2.imread(str(tmp_path / 'visualization' / '0007_0001' / '0007_0001_3.png'))
    assert saved.shape == (640, 1120, 3)
    assert np.isfinite(model.metric_results['psnr']) and 'metrics/full/psnr' in tb.scalars
    strip = tb.images['full/0007_0001/input_output_gt']
    assert strip.shape[0] == 3 and strip.shape[2] / strip.shape[1] == pytest.approx(3 * 1120 / 640, rel=0.01)
    assert 0 <= strip.min() and strip.max() <= 1
    kernel = tb.images.get('full/0007_0001/kernel')
    if tile is None:  # one kernel for the frame, enlarged for display
        assert kernel.shape == (1, 4 * TINY_NET['kernel_size'], 4 * TINY_NET['kernel_size'])
        assert kernel.max() == 1
    else:  # every tile estimates its own kernel
        assert kernel is None


def test_test_outputs_are_clamped(data, tmp_path):
    model, _ = make_model(data, tmp_path)
    model.lq = torch.rand(1, 3, 24, 24) * 4  # far outside [0, 1]: a raw output would leave it too
    model.test()
    assert model.output.min() >= 0 and model.output.max() <= 1


def test_tiled_validation_is_jude_restores_tiling(data, tmp_path):
    """`val.tile` and `jude-restore --tile` run the one tiled forward, with the overlap the network asks for."""
    model, _ = make_model(data, tmp_path, network={**TINY_NET, 'kernel_size': 21}, val={'tile': {'size': 144}})
    x = torch.rand(1, 3, 150, 200)
    model.lq = x
    model.test()
    net = model.net_g_ema if hasattr(model, 'net_g_ema') else model.net_g
    assert net.tile_overlap() == 48  # 21×21 kernels; not the 32 px of networks without a kernel
    restorer = JUDERestorer(net, device='cpu', tile=144)
    torch.testing.assert_close(model.output[0], restorer.restore_tensor(x[0]), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_training_does_not_load_the_inference_stack():
    code = 'import sys, jude_arch; print(sorted(m for m in sys.modules if m.startswith("jude_arch.restore.")))'
    loaded = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    # Shared with validation (its tiles, and the one atomic image writer); not the restorer, the CLI or the app.
    assert loaded.strip() == "['jude_arch.restore.photo_io', 'jude_arch.restore.tiling']"
