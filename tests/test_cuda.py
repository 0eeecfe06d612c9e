"""CUDA checks (`pytest -m cuda`; `python -m jude_arch.tools.gpu_check` runs them): skipped where torch sees no GPU.

1. the small preset's forward and backward on the GPU in fp32, bf16 and fp16 match the CPU's fp32 result
   within the tolerances below, and the FFT data step stays float32 under autocast;
2. JUDEModel trains 20 iterations in fp32, bf16 and fp16 (gradient scaler), saves, and --auto_resume goes on
   from the saved iteration (both runs in one child process: one interpreter and CUDA start-up);
3. torchrun --nproc_per_node=1 ... --launcher pytorch trains over NCCL and validates;
4. jude-restore --device cuda --tile auto restores a 12 MP photo with the full preset, and a tile at least as
   large as the image gives the untiled output;
5. torch.compile of the small preset gives the eager output.

`JUDE_TEST_DEVICE=cpu python -m pytest -m cuda tests/test_cuda.py` runs the same tests on the CPU, with the
12 MP photo and the full preset scaled down to a CPU's time: a check of the tests themselves on a machine
without a GPU (the GPU-only assertions, NCCL and CUDA memory, are left out there).
"""
import copy
import os
import re
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from helpers import load_photo
from jude_arch.archs import JUDE
from jude_arch.precision import PRECISIONS
from jude_arch.restore.restorer import JUDERestorer
from training_helpers import (PYTHON, ROOT, run, tiny_lolblur, tiny_options, train_log, train_then_resume,
                              write_yaml)

DEVICE = torch.device(os.environ.get('JUDE_TEST_DEVICE', 'cuda'))
ON_GPU = DEVICE.type == 'cuda'
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason='needs a CUDA GPU (torch sees none)'),
]
HALF = ('bf16', 'fp16')
# Largest difference from the CPU's fp32 result, relative to that result's largest magnitude: output, and
# gradient (as the norm of the difference over the norm). fp32 runs without TF32 (see `true_fp32`).
TOLERANCE = {'fp32': (1e-4, 1e-3), 'bf16': (5e-2, 1e-1), 'fp16': (1e-2, 5e-2)}
LOSS_SCALE = 2.0**12  # keeps fp16 gradients of an untrained network's small outputs above underflow


def skip_without(precision):
    if precision == 'bf16' and ON_GPU and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bf16')


@pytest.fixture
def true_fp32():
    """cuDNN and cuBLAS in full fp32 (TF32 off: it keeps 10 mantissa bits, too few for a 1e-4 check)."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def dark_photo(height, width):
    """A dark crop of a real photo, 1×3×H×W float32 in [0, 1]."""
    return (0.3 * load_photo('astronaut', max(height, width))[..., :height, :width]).float()


def forward_backward(net, x, precision):
    """Output and gradients (input, then every parameter) of one step at a precision on x's device."""
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    dtype = PRECISIONS[precision]
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = net(x)
    (output.float().square().mean() * LOSS_SCALE).backward()
    grads = torch.cat([x.grad.flatten()] + [p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return output.detach().float().cpu(), grads.float().cpu() / LOSS_SCALE


@pytest.mark.parametrize('precision', ['fp32', *HALF])
def test_forward_and_backward_match_the_cpu_in_fp32(precision, true_fp32):
    skip_without(precision)
    torch.manual_seed(0)
    net = JUDE('small')
    x = dark_photo(64, 48)
    reference, reference_grads = forward_backward(net, x, 'fp32')
    output, grads = forward_backward(copy.deepcopy(net).to(DEVICE), x.to(DEVICE), precision)
    output_tol, grad_tol = TOLERANCE[precision]
    assert torch.isfinite(output).all() and torch.isfinite(grads).all()
    assert (output - reference).abs().max() <= output_tol * reference.abs().max()
    assert (grads - reference_grads).norm() <= grad_tol * reference_grads.norm()


@pytest.mark.parametrize('precision', HALF)
def test_the_fft_data_step_stays_float32_under_autocast(precision, monkeypatch):
    skip_without(precision)
    seen = []
    for name in ('rfft2', 'irfft2'):
        real = getattr(torch.fft, name)
        monkeypatch.setattr(torch.fft, name, lambda t, *a, real=real, **k: seen.append(t.dtype) or real(t, *a, **k))
    torch.manual_seed(0)
    net = JUDE('small').to(DEVICE).eval()
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=PRECISIONS[precision]):
        out = net(dark_photo(48, 40).to(DEVICE), return_intermediates=True)
    assert seen and set(seen) <= {torch.float32, torch.complex64}
    assert all(t.dtype == torch.float32 for t in out['I']) and out['output'].dtype == torch.float32


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def gpu_options(data, name, total_iter, precision='fp32', autotune=False):
    """Tiny training options on the test device (BasicSR picks CUDA from num_gpu). cuDNN autotuning is off
    unless asked for: each search sizes its trial workspace to the GPU's free memory, for every new shape, a
    cost a 20-iteration run never earns back (the fp32 run keeps JUDE's default, autotuned training)."""
    sections = {} if autotune else {'cudnn': {'benchmark_train': False}}
    return tiny_options(data, name, total_iter=total_iter, periods=[40], num_gpu=1 if ON_GPU else 0,
                        train={'precision': precision}, **sections)


@pytest.mark.parametrize('precision', ['fp32', *HALF])
def test_training_20_iterations_saves_and_resumes(data, tmp_path, precision):
    skip_without(precision)
    name = f'cuda_{precision}'
    opt = gpu_options(data, name, total_iter=20, precision=precision, autotune=precision == 'fp32')
    first_yml = write_yaml(opt, tmp_path / 'train.yml')
    opt['train']['total_iter'] = 24
    # One process trains, then resumes through --auto_resume: one interpreter and CUDA start-up, not two.
    first, log = train_then_resume(first_yml, write_yaml(opt, tmp_path / 'more.yml'), cwd=tmp_path)
    assert f'train.precision: {precision}' in first and 'iter:      20' in first
    assert f"cuDNN autotuning (torch.backends.cudnn.benchmark): training {'on' if precision == 'fp32' else 'off'}" \
        in first
    losses = [float(v) for v in re.findall(r'l_pix: ([-+\d.e]+)', first)]
    assert len(losses) == 20 and np.isfinite(losses).all()
    state = torch.load(tmp_path / 'experiments' / name / 'training_states' / '20.state', weights_only=True)
    assert state['iter'] == 20 and ('grad_scaler' in state) == (precision == 'fp16')

    assert re.search(r'Resuming training from epoch: \d+, iter: 20\.', log)
    logged = [int(i) for i in re.findall(r'iter:\s+(\d+),', log)]
    assert min(logged) == 21 and max(logged) == 24
    assert (tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
    assert 'Resuming training from epoch' in train_log(tmp_path / 'experiments', name)  # the log on disk too


def test_torchrun_trains_over_nccl_and_validates(data, tmp_path):
    name = 'cuda_ddp'
    opt = gpu_options(data, name, total_iter=4)
    out = run([PYTHON, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
               ROOT / 'jude_arch' / 'train.py', '-opt', write_yaml(opt, tmp_path / 'train.yml'), '--launcher',
               'pytorch'], cwd=tmp_path, env={'NCCL_DEBUG': 'INFO'})
    log = train_log(tmp_path / 'experiments', name)
    assert 'World size (gpu number): 1' in log and re.search(r'Validation tiny-test\s+# psnr: \d+\.\d+', log)
    if ON_GPU:
        assert 'NCCL INFO' in out  # the process group ran on NCCL, not gloo
    assert (tmp_path / 'experiments' / name / 'models' / 'net_g_4.pth').is_file()


# ---------------------------------------------------------------------------------------------- restoring


def test_restore_a_12_megapixel_photo_with_automatic_tiles(tmp_path):
    height, width, preset = (3000, 4000, 'full') if ON_GPU else (300, 400, 'small')
    photo = cv2.resize(skimage.data.astronaut()[..., ::-1], (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / 'night.jpg'), np.round(photo * 0.3).astype(np.uint8))
    torch.manual_seed(0)
    net = JUDE(preset)
    state = OrderedDict(net.state_dict())
    torch.save({'params': state, 'network_g': {'type': 'JUDE', **net.config}}, tmp_path / 'jude.pth')

    out = run([PYTHON, '-m', 'jude_arch.restore', '-i', tmp_path / 'night.jpg', '-o', tmp_path / 'restored',
               '--model-path', tmp_path / 'jude.pth', '--device', DEVICE.type, '--tile', 'auto'], cwd=tmp_path,
              timeout=600)
    restored = cv2.imread(str(tmp_path / 'restored' / 'night.jpg'))
    assert restored is not None and restored.shape == (height, width, 3)
    assert 'Restored 1 of 1 image(s)' in out and f'{DEVICE.type}, precision ' in out
    restorer = JUDERestorer(net, device=DEVICE.type, precision='auto', tile='auto')
    assert restorer.tile_size(height, width) >= 0  # sized from the device's free memory
    assert ('tiles of' in out) == (restorer.tile_size(height, width) > 0)
    if ON_GPU:
        assert 'CUDA peak allocated' in out


def test_a_tile_as_large_as_the_image_gives_the_untiled_output():
    torch.manual_seed(0)
    net = JUDE('full' if ON_GPU else 'small')
    image = dark_photo(200, 296)[0]
    untiled = JUDERestorer(net, device=DEVICE.type, precision='fp32', tile=0).restore_tensor(image)
    one_tile = JUDERestorer(net, device=DEVICE.type, precision='fp32', tile=296).restore_tensor(image)
    torch.testing.assert_close(one_tile, untiled, rtol=0, atol=1e-6)


def test_torch_compile_matches_eager(true_fp32):
    torch.manual_seed(0)
    net = JUDE('small').to(DEVICE).eval()
    x = dark_photo(64, 64).to(DEVICE)
    with torch.inference_mode():
        eager = net(x)
        compiled = torch.compile(net)(x)
    assert compiled.shape == eager.shape
    assert (compiled - eager).abs().max() <= 1e-4 * eager.abs().max()
