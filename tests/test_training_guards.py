"""Training that cannot silently lose or poison a model: non-finite steps, failed saves."""
import errno
import gc
import logging
import sys
from collections import namedtuple

import pytest
import torch
from basicsr.data import build_dataloader, build_dataset

import jude_arch.train
from jude_arch.checkpoint_io import TEMPORARY_SUFFIX
from jude_arch.models import training_guards
from jude_arch.models.training_guards import TrainingStopped
from training_helpers import make_model, tiny_lolblur, tiny_options, train_batch, write_yaml


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


@pytest.fixture
def log(caplog):
    """BasicSR's log of the test (its logger does not propagate to pytest's)."""
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def nan_batch(data):
    batch = train_batch(data)
    batch['lq'][0, :, 3, 3] = float('nan')
    batch['key'] = ['0000_0001', '0003_0000']
    return batch


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_a_nonfinite_step_updates_nothing_and_the_limit_stops_training(data, tmp_path, log):
    model, _ = make_model(data, tmp_path, train={'ema_decay': 0.9, 'max_nonfinite_steps': 2})
    net, ema = snapshot(model.net_g), snapshot(model.net_g_ema)
    model.feed_data(nan_batch(data))
    model.optimize_parameters(7)
    # weights, EMA and BatchNorm statistics (a NaN forward pass poisons them) are all as before
    for name, value in model.net_g.state_dict().items():
        assert torch.equal(value, net[name]), name
    for name, value in model.net_g_ema.state_dict().items():
        assert torch.equal(value, ema[name]), name
    assert 'iter 7: non-finite step skipped' in log.text and '0000_0001, 0003_0000' in log.text

    model.feed_data(train_batch(data))  # a good step in between resets the count
    model.optimize_parameters(8)
    assert model.nonfinite_streak == 0 and 'l_pix' in model.log_dict
    model.feed_data(nan_batch(data))
    model.optimize_parameters(9)
    with pytest.raises(TrainingStopped, match='2 consecutive non-finite steps \\(iterations 9–10\\)'):
        model.optimize_parameters(10)


def test_fp16_scaler_overflows_are_not_counted(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'precision': 'fp16', 'ema_decay': 0.9, 'max_nonfinite_steps': 1})
    # A scale so large that the scaled gradients overflow: the scaler's own business (it skips the step and
    # shrinks the scale), not a non-finite step of the model.
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**127)
    net, ema = snapshot(model.net_g), snapshot(model.net_g_ema)
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert model.nonfinite_streak == 0 and model.grad_scaler.get_scale() < 2.0**127
    for name, value in model.net_g_ema.state_dict().items():  # the EMA does not move on a skipped step
        assert torch.equal(value, ema[name]), name
    assert all(torch.equal(p, net[name]) for name, p in model.net_g.named_parameters())
    model.feed_data(nan_batch(data))  # a non-finite loss does count, in fp16 too
    with pytest.raises(TrainingStopped):
        model.optimize_parameters(2)


def test_a_nonfinite_network_is_never_saved(data, tmp_path):
    model, _ = make_model(data, tmp_path)
    with torch.no_grad():
        next(model.net_g.parameters())[0] = float('inf')
    with pytest.raises(TrainingStopped, match='not writing .*net_g_5.pth: params holds non-finite values'):
        model.save(epoch=0, current_iter=5)
    assert not list((tmp_path / 'models').iterdir())


def test_validation_of_a_nonfinite_output_reports_nan(data, tmp_path):
    model, opt = make_model(data, tmp_path)
    with torch.no_grad():
        for param in model.net_g_ema.denoiser.parameters():
            param.fill_(float('nan'))
    dataset_opt = opt['datasets']['val']
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    model.validation(loader, current_iter=1, tb_logger=None, save_img=False)
    assert model.metric_results['psnr'] != model.metric_results['psnr']  # NaN, not the PSNR of a black image


DiskUsage = namedtuple('DiskUsage', 'total used free')


@pytest.mark.parametrize('interrupt', [False, True])
def test_a_failed_save_stops_and_leaves_no_temporary_file(data, tmp_path, monkeypatch, interrupt):
    model, _ = make_model(data, tmp_path)

    def full_disk(obj, path):  # what a full disk does: part of the file written, then an error
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04' * 100)
        if interrupt:
            raise KeyboardInterrupt
        raise RuntimeError('[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file '
                           'data/0: file write failed')

    monkeypatch.setattr(training_guards.torch, 'save', full_disk)
    monkeypatch.setattr(training_guards.shutil, 'disk_usage', lambda folder: DiskUsage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(KeyboardInterrupt if interrupt else TrainingStopped) as error:
        model.save(epoch=0, current_iter=2)
    if not interrupt:
        assert f'no space left on device in {tmp_path / "models"}: needed ~' in str(error.value)
    assert not list(tmp_path.rglob(f'*{TEMPORARY_SUFFIX}')) and not list(tmp_path.rglob('*.pth'))


def test_other_save_errors_are_retried_then_stop(tmp_path, monkeypatch):
    calls = []

    def flaky(obj, path):
        calls.append(path)
        raise OSError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(training_guards.torch, 'save', flaky)
    monkeypatch.setattr(training_guards.time, 'sleep', lambda seconds: None)
    with pytest.raises(TrainingStopped, match='cannot save the model .*x.pth: PermissionError'):
        training_guards.save_with_retry({'w': torch.zeros(3)}, str(tmp_path / 'x.pth'), 'model')
    assert len(calls) == 3


def run_train_main(opt, work, monkeypatch, log):
    """jude_arch/train.py's main() in this process; returns (exit message, log text)."""
    path = write_yaml(opt, work / f'{opt["name"]}.yml')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path)])
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as stop:
        jude_arch.train.main()
    message = str(stop.value.code)
    del stop  # its traceback holds the run's LMDB environments open, which the next run in this process reopens
    gc.collect()
    return message, log.text


def test_training_with_a_huge_lr_stops_and_keeps_only_finite_checkpoints(data, tmp_path, monkeypatch, log):
    opt = tiny_options(data, 'huge_lr', total_iter=20, train={'max_nonfinite_steps': 2},
                       logger={'save_checkpoint_freq': 1, 'print_freq': 1, 'use_tb_logger': False})
    opt['train']['optim_g']['lr'] = 1000
    message, log = run_train_main(opt, tmp_path, monkeypatch, log)
    assert message.startswith('error: training stopped: 2 consecutive non-finite steps (iterations ')
    models = list((tmp_path / 'experiments' / 'huge_lr' / 'models').glob('*.pth'))
    assert models  # the good steps before the first non-finite one were saved
    for path in models:
        checkpoint = torch.load(path, weights_only=True)
        for key in ('params', 'params_ema'):
            assert all(torch.isfinite(v).all() for v in checkpoint[key].values()), (path, key)


def test_training_on_a_full_disk_exits_naming_the_folder(data, tmp_path, monkeypatch, log):
    def enospc(obj, path):
        with open(path, 'wb') as f:
            f.write(b'\0' * 1000)
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(training_guards.torch, 'save', enospc)
    opt = tiny_options(data, 'full_disk', total_iter=2, val={'val_freq': 100})
    message, _ = run_train_main(opt, tmp_path, monkeypatch, log)
    models = tmp_path / 'experiments' / 'full_disk' / 'models'
    assert message.startswith(f'error: cannot save the model {models}') and f'no space left on device in {models}' \
        in message
    assert not list(tmp_path.rglob(f'*{TEMPORARY_SUFFIX}'))
