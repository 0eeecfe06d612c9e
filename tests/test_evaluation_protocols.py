"""The two LOL-Blur evaluation protocols (the JUDE paper's, the standard one), from their options files, on
synthetic frames in LOL-Blur's folder layout; JUDEModel's float outputs for metrics and its protocol summary."""
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from basicsr.metrics import calculate_metric
from basicsr.models import build_model
from basicsr.utils import tensor2img
from basicsr.utils.registry import METRIC_REGISTRY

from metric_helpers import add_noise, textured, write_backbone
from jude_arch.released import convert_released
from training_helpers import PYTHON, ROOT, run, tiny_options, write_yaml

OPTIONS = ROOT / 'options'
PAPER, STANDARD = OPTIONS / 'test_jude_lolblur_paper.yml', OPTIONS / 'test_jude_lolblur.yml'


def lolblur_test_split(root, size, videos=('0003', '0012')):
    """datasets/LOL-Blur/test/ below `root`: one frame per video (W×H `size`), GT textured, low_blur a dark
    version, low_blur_noise the same plus noise."""
    for index, video in enumerate(videos):
        gt = textured(size[::-1], seed=index)
        low = (gt * 0.3).astype(np.uint8)
        for folder, image in (('high_sharp_scaled', gt), ('low_blur', low), ('low_blur_noise', add_noise(low, 6))):
            path = root / 'datasets' / 'LOL-Blur' / 'test' / folder / video / '0001.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
    return root


def options(path):
    return yaml.safe_load(path.read_text())


def dataset_options(path, root, **extra):
    """The options file's test dataset options, its relative folders resolved under `root`."""
    dataset_opt = dict(options(path)['datasets']['test'], phase='test', scale=1, **extra)
    for key in ('dataroot_lq', 'dataroot_gt'):
        dataset_opt[key] = str(root / dataset_opt[key])
    return dataset_opt


def protocol_dataset(path, root, **extra):
    return build_dataset(dataset_options(path, root, **extra))


@pytest.fixture(scope='module')
def full_frames(tmp_path_factory):
    return lolblur_test_split(tmp_path_factory.mktemp('lolblur_full'), (1120, 640), videos=('0007',))


def test_paper_protocol_evaluates_1024x640_and_pools_before_ssim(full_frames):
    paper, standard = protocol_dataset(PAPER, full_frames), protocol_dataset(STANDARD, full_frames)
    paper_item, standard_item = paper[0], standard[0]
    assert paper.opt['dataroot_lq'].endswith('test/low_blur') and paper.opt['crop_to_multiple'] == 128
    assert standard.opt['dataroot_lq'].endswith('test/low_blur_noise') and 'crop_to_multiple' not in standard.opt
    assert paper_item['lq'].shape == paper_item['gt'].shape == (3, 640, 1024)
    assert standard_item['lq'].shape == standard_item['gt'].shape == (3, 640, 1120)
    gt = cv2.imread(paper_item['gt_path'])
    np.testing.assert_array_equal(tensor2img(paper_item['gt']), gt[:640, :1024])  # the top-left region

    # Both protocols' SSIM on the same pair (the cropped GT and a restoration with residual noise), scored as
    # JUDEModel passes them to the metrics.
    gt = paper_item['gt'][None]
    output = add_noise(tensor2img(gt), 12)
    output_float = torch.from_numpy(output[..., ::-1].transpose(2, 0, 1) / 255.).float()[None]
    data = {'img': output, 'img2': tensor2img(gt), 'img_float': output_float, 'img2_float': gt}
    paper_ssim = calculate_metric(data, options(PAPER)['val']['metrics']['ssim'])
    standard_ssim = calculate_metric(data, options(STANDARD)['val']['metrics']['ssim'])
    pool = torch.nn.functional.avg_pool2d
    pooled = calculate_metric({'img': tensor2img(pool(output_float, 2)), 'img2': tensor2img(pool(gt, 2))},
                              options(STANDARD)['val']['metrics']['ssim'])
    assert paper_ssim > standard_ssim + 0.05  # pooling averages the noise away: not comparable numbers
    assert paper_ssim == pytest.approx(pooled, abs=2e-3)  # SSIM of the 512×320 pooled images (float vs 8-bit)


def test_protocol_options():
    paper, standard = options(PAPER), options(STANDARD)
    assert paper['network_g'] == {'type': 'JUDE', 'preset': 'released', 'hypernet_batch_stats': True}
    assert paper['val']['tile'] is None and standard['val']['tile'] is None
    assert paper['val']['metrics']['psnr'] == standard['val']['metrics']['psnr'] == {
        'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}
    assert paper['val']['metrics']['lpips'] == {'type': 'calculate_lpips', 'net': 'vgg', 'normalize': False,
                                                'float_input': True, 'better': 'lower'}
    assert standard['val']['metrics']['lpips'] == {'type': 'calculate_lpips', 'net': 'vgg', 'normalize': True,
                                                   'better': 'lower'}
    assert paper['val']['metrics']['ssim'] == {'type': 'calculate_ssim_pooled', 'float_input': True}
    assert standard['val']['metrics']['ssim']['type'] == 'calculate_ssim'
    for opt in (paper, standard):
        assert {'name', 'input', 'crop', 'psnr', 'ssim', 'lpips'} <= set(opt['protocol'])


@pytest.fixture(scope='module')
def torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp('torch_home')
    write_backbone(home, 'vgg')
    return home


@pytest.mark.slow
def test_paper_protocol_runs_end_to_end(tmp_path, torch_home):
    """options/test_jude_lolblur_paper.yml through jude_arch/test.py on a file laid out like the authors'
    release ({'state_dict': ...} with 'module.' keys): the small instance of their network in
    tests/data/released_small.pt (the real file cannot be downloaded here), so network_g keeps `preset: released`
    and `hypernet_batch_stats: true` and only gets the small sizes; frames 300×136 are cut to 256×128. A pyiqa
    that fails on import sits on the path: the run must never import it (pyiqa is optional, non-commercial)."""
    work = lolblur_test_split(tmp_path, (300, 136))
    (work / 'fake_packages' / 'pyiqa').mkdir(parents=True)
    (work / 'fake_packages' / 'pyiqa' / '__init__.py').write_text('raise RuntimeError("pyiqa was imported")\n')
    release = torch.load(Path(__file__).resolve().parent / 'data' / 'released_small.pt', weights_only=True)
    checkpoint = work / 'bownet_best.pth'
    torch.save({'state_dict': release['checkpoint']['state_dict']}, checkpoint)
    opt = options(PAPER)
    assert opt['network_g'] == {'type': 'JUDE', 'preset': 'released', 'hypernet_batch_stats': True}
    sizes = convert_released(release['checkpoint'])['network_g']
    opt['network_g'].update({k: v for k, v in sizes.items() if k not in ('type', 'preset')})
    opt['path']['pretrain_network_g'] = str(checkpoint)
    opt['val']['pbar'] = False
    run([PYTHON, ROOT / 'jude_arch' / 'test.py', '-opt', write_yaml(opt, work / 'paper.yml')], cwd=work,
        env={'TORCH_HOME': str(torch_home),
             'PYTHONPATH': os.pathsep.join([str(work / 'fake_packages'), os.environ.get('PYTHONPATH', '')])})

    results = work / 'results' / opt['name']
    summary = json.loads((results / 'metrics_LOL-Blur-test-low_blur.json').read_text())
    assert summary['protocol'] == opt['protocol']
    assert summary['dataset'] == {
        'name': 'LOL-Blur-test-low_blur', 'type': 'LOLBlurDataset', 'dataroot_lq': 'datasets/LOL-Blur/test/low_blur',
        'dataroot_gt': 'datasets/LOL-Blur/test/high_sharp_scaled', 'crop_to_multiple': 128, 'frames': 2,
        'evaluated_sizes': [{'height': 128, 'width': 256, 'frames': 2}]}
    assert summary['checkpoint'] == str(checkpoint) and summary['network_g'] == opt['network_g']
    metrics = summary['metrics']
    assert {name: m['options'] for name, m in metrics.items()} == opt['val']['metrics']
    assert all(math.isfinite(m['value']) for m in metrics.values()) and metrics['lpips']['value'] > 0

    # PSNR is on the saved 8-bit frames against the GT's top-left 256×128.
    psnrs = []
    for video in ('0003', '0012'):
        saved = cv2.imread(str(results / 'visualization' / 'LOL-Blur-test-low_blur' / f'{video}_0001_JUDE.png'))
        gt = cv2.imread(str(work / 'datasets/LOL-Blur/test/high_sharp_scaled' / video / '0001.png'))
        assert saved.shape == (128, 256, 3)
        psnrs.append(calculate_metric({'img': saved, 'img2': gt[:128, :256]}, opt['val']['metrics']['psnr']))
    assert metrics['psnr']['value'] == pytest.approx(np.mean(psnrs), abs=1e-9)


# ---- JUDEModel: float outputs for the metrics that take them, weights checked before restoring ----------------
class Brighten(torch.nn.Module):
    """A stand-in network whose output leaves [0, 1] (×5); counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 5 * x


SEEN = {}


def _records_everything(img, img2, **kwargs):
    SEEN['kwargs'] = kwargs
    return 0.0


def _takes_images_only(img, img2, crop_border=0):
    return 0.0


@pytest.fixture
def recording_metrics():
    names = ['_records_everything', '_takes_images_only']
    for function in (_records_everything, _takes_images_only):
        METRIC_REGISTRY._do_register(function.__name__, function)
    yield names
    for name in names:
        METRIC_REGISTRY._obj_map.pop(name)


def stub_model(tmp_path, frames, metrics):
    """A test-mode JUDEModel (as jude_arch/test.py builds it) whose network is `Brighten`, and a loader."""
    opt = tiny_options(frames, 'unit', val={'save_img': False, 'metrics': metrics})
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    opt['path'].update(results_root=str(tmp_path), log=str(tmp_path), visualization=str(tmp_path / 'visualization'))
    model = build_model(opt)
    model.net_g = Brighten()
    dataset_opt = dataset_options(STANDARD, frames)
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    return model, loader


@pytest.fixture(scope='module')
def small_frames(tmp_path_factory):
    return lolblur_test_split(tmp_path_factory.mktemp('lolblur_small'), (40, 32), videos=('0001',))


def test_metrics_get_the_unclamped_float_output_when_they_take_it(tmp_path, small_frames, recording_metrics):
    metrics = {name: {'type': name} for name in recording_metrics}
    model, loader = stub_model(tmp_path, small_frames, metrics)
    model.validation(loader, current_iter='unit', tb_logger=None, save_img=False)  # no TypeError from the strict one

    lq = loader.dataset[0]['lq'][None]
    torch.testing.assert_close(SEEN['kwargs']['img_float'], 5 * lq)  # unclamped: the 8-bit image stops at 255
    torch.testing.assert_close(SEEN['kwargs']['img2_float'], loader.dataset[0]['gt'][None])
    assert SEEN['kwargs']['img_float'].max() > 1
    summary = json.loads((tmp_path / 'metrics_LOL-Blur-test.json').read_text())
    assert summary['dataset']['frames'] == 1 and set(summary['metrics']) == set(recording_metrics)


def test_missing_lpips_weights_stop_before_anything_is_restored(tmp_path, small_frames, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
    model, loader = stub_model(tmp_path, small_frames, options(STANDARD)['val']['metrics'])
    with pytest.raises(FileNotFoundError, match='vgg16-397923af.pth not found'):
        model.validation(loader, current_iter='unit', tb_logger=None, save_img=False)
    assert model.net_g.calls == 0
    assert not Path(tmp_path / 'metrics_LOL-Blur-test.json').exists()


def test_crop_to_multiple_keeps_the_top_left_region(small_frames):
    item = protocol_dataset(STANDARD, small_frames, crop_to_multiple=16)[0]
    assert item['lq'].shape == item['gt'].shape == (3, 32, 32)  # 40×32 → 32×32
    np.testing.assert_array_equal(tensor2img(item['gt']), cv2.imread(item['gt_path'])[:32, :32])
    with pytest.raises(ValueError, match=r'0001/0001.png: a 40×32 frame has no 64×64 region.*crop_to_multiple'):
        protocol_dataset(STANDARD, small_frames, crop_to_multiple=64)[0]
    for bad in (0, -128, 12.5, True, '128'):
        with pytest.raises(ValueError, match='crop_to_multiple must be a positive integer'):
            protocol_dataset(STANDARD, small_frames, crop_to_multiple=bad)
