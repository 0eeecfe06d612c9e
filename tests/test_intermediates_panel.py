"""Intermediates: what the restorer returns, the panel, the kernel .npy and the λ/γ JSON, from the CLI too."""
import json

import cv2
import numpy as np
import pytest
import torch
from helpers import load_photo

from jude_arch.archs import JUDE
from jude_arch.restore.cli import main
from jude_arch.restore.restorer import JUDERestorer
from jude_arch.restore.intermediates_panel import CELL, render_panel, save_intermediates


@pytest.fixture(scope='module')
def dark_bgr():
    """A dark 48×64 crop of a real photo, BGR uint8."""
    rgb = load_photo('astronaut', 64)[0, :, 8:56].permute(1, 2, 0).numpy()
    return np.round(rgb[..., ::-1] * 0.25 * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def jude():
    torch.manual_seed(0)
    return JUDE(preset='small')


def _check_files(files, rows, cols, num_kernels, num_stages, kernel_size=31):
    panel_path, kernel_path, params_path = files
    panel = cv2.imread(str(panel_path), cv2.IMREAD_UNCHANGED)
    assert panel is not None and panel.dtype == np.uint8 and panel.shape[2] == 3
    assert panel.shape[0] > 3 * CELL // 2  # image rows and the λ/γ text
    kernels = np.load(kernel_path)
    assert kernels.shape == (rows, cols, num_kernels, kernel_size, kernel_size) and kernels.dtype == np.float32
    assert kernels.min() >= 0
    np.testing.assert_allclose(kernels.sum((-2, -1)), 1, atol=1e-5)
    params = json.loads(params_path.read_text())
    assert params['tile_grid'] == [rows, cols] and params['num_stages'] == num_stages
    assert len(params['tiles']) == rows * cols
    for tile in params['tiles']:
        assert len(tile['stages']) == num_stages
        for stage in tile['stages']:
            assert set(stage) == {'lambda1', 'lambda2', 'lambda3', 'lambda4', 'lambda5', 'gamma_P', 'gamma_Q',
                                  'gamma_Z'} and min(stage.values()) > 0
    return panel, kernels, params


def test_untiled_intermediates_are_the_networks_own(jude, dark_bgr, tmp_path):
    restorer = JUDERestorer(jude, device='cpu', tile=0)
    restored, inter = restorer.restore(dark_bgr, return_intermediates=True)
    np.testing.assert_array_equal(restored, restorer.restore(dark_bgr))  # asking for them changes nothing
    maps = inter.maps
    assert maps['I'].shape == (3, 3, 48, 64) and 'weight_map' not in maps
    # The output is L̂ ⊙ R̂, clamped and quantised.
    product = (maps['L_hat'] * maps['R_hat']).clamp(0, 1).flip(0).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.round(product * 255).astype(np.uint8), restored)
    assert inter.boxes.tolist() == [[[0, 48, 0, 64]]]
    _check_files(save_intermediates(tmp_path / 'photo', dark_bgr, restored, inter), 1, 1, 1, 3)


def test_tiled_intermediates_keep_every_tiles_kernel_and_blend_the_maps(jude, dark_bgr, tmp_path):
    restored, inter = JUDERestorer(jude, device='cpu', tile=40, tile_overlap=8).restore(dark_bgr,
                                                                                        return_intermediates=True)
    rows, cols = inter.kernels.shape[:2]
    assert (rows, cols) == (2, 2)
    assert all(m.shape[-2:] == (48, 64) and torch.isfinite(m).all() for m in inter.maps.values())
    _, kernels, params = _check_files(save_intermediates(tmp_path / 'tiled', dark_bgr, restored, inter), 2, 2, 1, 3)
    assert not np.allclose(kernels[0, 0], kernels[1, 1])  # each tile its own estimate
    assert [t['box_top_bottom_left_right'] for t in params['tiles']] == inter.boxes.reshape(-1, 4).tolist()


def test_several_basis_kernels_add_the_weight_map(dark_bgr, tmp_path):
    torch.manual_seed(0)
    net = JUDE(preset='small', num_kernels=2)
    restored, inter = JUDERestorer(net, device='cpu', tile=40, tile_overlap=8).restore(dark_bgr,
                                                                                       return_intermediates=True)
    weight_map = inter.maps['weight_map']
    assert weight_map.shape == (2, 48, 64)
    torch.testing.assert_close(weight_map.sum(0), torch.ones(48, 64), atol=1e-5, rtol=0)  # shares sum to 1
    _check_files(save_intermediates(tmp_path / 'multi', dark_bgr, restored, inter), 2, 2, 2, 3)
    one_kernel_panel = render_panel(dark_bgr, restored, JUDERestorer(JUDE(preset='small'), device='cpu', tile=0)
                                    .restore(dark_bgr, return_intermediates=True)[1])
    assert render_panel(dark_bgr, restored, inter).shape[1] > one_kernel_panel.shape[1]  # the extra cell


def test_cli_saves_intermediates_beside_the_layout(tmp_path, jude, dark_bgr):
    checkpoint = tmp_path / 'model.pth'
    torch.save({'params': jude.state_dict(), 'network_g': {'type': 'JUDE', **jude.config}}, checkpoint)
    (tmp_path / 'in' / 'night').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'in' / 'night' / 'street.jpg'), dark_bgr)
    out = tmp_path / 'out'
    assert main(['-i', str(tmp_path / 'in'), '-o', str(out), '--model-path', str(checkpoint), '--tile', '0',
                 '--save-intermediates']) == 0
    assert (out / 'night' / 'street.jpg').exists()
    stem = out / 'intermediates' / 'night' / 'street'
    _check_files([stem.with_name('street_panel.png'), stem.with_name('street_kernel.npy'),
                  stem.with_name('street_params.json')], 1, 1, 1, 3)


def test_stage_images_are_drawn_like_the_input(dark_bgr, monkeypatch):
    """A stage's I that equals the input is drawn exactly like the input cell (same channel order and gain): the
    colours the panel shows are the network's, not a display artefact."""
    from jude_arch.restore import intermediates_panel as visualize
    from jude_arch.restore.restorer import Intermediates

    cells, labelled = {}, visualize._labelled

    def record(image, label):
        cells[label] = image
        return labelled(image, label)

    monkeypatch.setattr(visualize, '_labelled', record)
    rgb = torch.from_numpy(dark_bgr[..., ::-1] / 255.).float().permute(2, 0, 1)
    maps = {'I': rgb[None], 'L': rgb, 'R': torch.ones_like(rgb), 'L_hat': rgb, 'R_hat': torch.ones_like(rgb)}
    kernel = np.full((1, 1, 1, 5, 5), 1 / 25, np.float32)
    inter = Intermediates(boxes=np.array([[[0, 48, 0, 64]]]), kernels=kernel, lambdas=np.ones((1, 1, 1, 5)),
                          gammas=np.ones((1, 1, 1, 3)), maps=maps)
    render_panel(dark_bgr, dark_bgr, inter)
    gain = [label for label in cells if label.startswith('input x')][0].split(' x')[1]
    np.testing.assert_array_equal(cells[f'I after stage 1 x{gain}'], cells[f'input x{gain}'])


def _intermediates(dark_bgr, kernels):
    from jude_arch.restore.restorer import Intermediates
    rgb = torch.from_numpy(dark_bgr[..., ::-1] / 255.).float().permute(2, 0, 1)
    maps = {'I': rgb[None], 'L': rgb, 'R': torch.ones_like(rgb), 'L_hat': rgb, 'R_hat': torch.ones_like(rgb)}
    return Intermediates(boxes=np.array([[[0, 48, 0, 64]]]), kernels=kernels.astype(np.float32),
                         lambdas=np.ones((1, 1, 1, 5)), gammas=np.ones((1, 1, 1, 3)), maps=maps)


@pytest.mark.parametrize('kernel, warned', [('uniform', True), ('camera shake', False), ('gaussian', False)])
def test_the_panel_warns_when_the_kernel_is_no_blur(dark_bgr, kernel, warned):
    """A nearly uniform kernel (a model trained on its output only) gets a warning above the panel; a learned
    blur does not."""
    from jude_arch.data.blur_kernels import camera_shake_kernel
    from jude_arch.physics import center_pad, gaussian_kernel
    from jude_arch.restore.intermediates_panel import panel_views
    kernels = {'uniform': np.full((31, 31), 1 / 961) + np.random.default_rng(0).uniform(0, 1e-4, (31, 31)),
               'camera shake': center_pad(torch.from_numpy(camera_shake_kernel(15, np.random.default_rng(3))), 31),
               'gaussian': gaussian_kernel(31, 2.0)}
    inter = _intermediates(dark_bgr, np.asarray(kernels[kernel])[None, None, None])
    warning = panel_views(dark_bgr, dark_bgr, inter).warning
    plain = render_panel(dark_bgr, dark_bgr, _intermediates(dark_bgr, np.asarray(kernels['gaussian'])[None, None,
                                                                                                    None]))
    panel = render_panel(dark_bgr, dark_bgr, inter)
    if warned:
        assert "kernel estimator has not learned a blur" in warning
        assert panel.shape[0] > plain.shape[0]  # the warning's lines above the rows
        amber = np.all(panel[:60] == np.array([80, 170, 255]), axis=-1)
        assert amber.any()
    else:
        assert warning is None
        assert panel.shape == plain.shape
