"""Training that cannot silently lose or poison a model: non-finite steps, failed saves, checkpoints that do not
restore an image (diverging steps: test_step_guard.py)."""
import errno
import logging
from collections import namedtuple

import pytest
import torch
from basicsr.data import build_dataloader, build_dataset

from jude_arch.checkpoint_io import TEMPORARY_SUFFIX
from jude_arch.models import training_guards
from jude_arch.models.training_guards import TrainingStopped
from training_helpers import make_model, run_train_main, tiny_lolblur, tiny_options, train_batch


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


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
    assert model.bad_streak == 0 and 'l_pix' in model.log_dict
    model.feed_data(nan_batch(data))
    model.optimize_parameters(9)
    with pytest.raises(TrainingStopped, match='2 consecutive non-finite or diverging steps \\(iterations 9–10\\); '
                                              'they changed nothing. No checkpoint of this run has been verified'):
        model.optimize_parameters(10)


def test_fp16_scaler_overflows_are_not_counted(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'precision': 'fp16', 'ema_decay': 0.9, 'max_nonfinite_steps': 1})
    # A scale so large that the scaled gradients overflow: the scaler's own business (it skips the step and
    # shrinks the scale), not a non-finite step of the model.
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**127)
    net, ema = snapshot(model.net_g), snapshot(model.net_g_ema)
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert model.bad_streak == 0 and model.grad_scaler.get_scale() < 2.0**127
    for name, value in model.net_g_ema.state_dict().items():  # the EMA does not move on a skipped step
        assert torch.equal(value, ema[name]), name
    assert all(torch.equal(p, net[name]) for name, p in model.net_g.named_parameters())
    model.feed_data(nan_batch(data))  # a non-finite loss does count, in fp16 too
    with pytest.raises(TrainingStopped):
        model.optimize_parameters(2)


def test_a_nonfinite_network_is_never_saved(data, tmp_path):
    """Checked by the writer itself too: a non-finite weight that the probe image does not reach would still make
    the checkpoint one that jude-restore refuses."""
    model, _ = make_model(data, tmp_path)
    with torch.no_grad():
        next(model.net_g.parameters())[0] = float('inf')
    with pytest.raises(TrainingStopped, match='not writing .*net_g_5.pth: its params weights restore the validation '
                                              'frame 0002_0000 of tiny-test with non-finite values'):
        model.save(epoch=0, current_iter=5)
    with pytest.raises(TrainingStopped, match='not writing .*net_g_5.pth: params holds non-finite values'):
        model.save_network(model.net_g, 'net_g', 5)
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


def restores_finitely(path, image):
    """Whether both networks of a saved checkpoint restore `image` with finite values (as jude-restore would)."""
    from jude_arch.restore.network_loading import load_network

    checkpoint = torch.load(path, weights_only=True)
    for key in ('params', 'params_ema'):
        torch.save({'params': checkpoint[key], 'network_g': checkpoint['network_g']}, path.with_suffix('.one'))
        with torch.no_grad():
            if not torch.isfinite(load_network(path.with_suffix('.one'))(image)).all():
                return False
    return True


def test_training_with_a_huge_lr_keeps_only_checkpoints_that_restore_an_image(data, tmp_path, monkeypatch, log):
    """lr = 1000: the first step is finite but throws the weights to |w| ≈ 1000 (every output inf). The divergence
    guard skips every step, the checkpoint saved meanwhile holds the starting weights and restores a photo, and
    the stop message names it as verified."""
    from jude_arch.models.verification import fixed_probe

    opt = tiny_options(data, 'huge_lr', total_iter=20, train={'max_nonfinite_steps': 3},
                       logger={'save_checkpoint_freq': 2, 'print_freq': 1, 'use_tb_logger': False})
    opt['train']['optim_g']['lr'] = 1000
    message, log = run_train_main(opt, tmp_path, monkeypatch, log)
    models = tmp_path / 'experiments' / 'huge_lr' / 'models'
    assert message.startswith('error: training stopped: 3 consecutive non-finite or diverging steps (iterations 1–3)')
    assert f'The last verified checkpoint (it restores the validation frame 0002_0000 of tiny-test with finite ' \
           f'values) is {models / "net_g_2.pth"}.' in message
    assert 'diverging step skipped (it moved the weights by' in log
    assert [p.name for p in models.glob('*.pth')] == ['net_g_2.pth']
    assert restores_finitely(models / 'net_g_2.pth', fixed_probe())


def test_a_model_that_does_not_restore_the_probe_is_never_saved(data, tmp_path):
    """Finite weights whose output is not: the save is refused, nothing is written, the message says why."""
    model, _ = make_model(data, tmp_path)
    with torch.no_grad():
        for param in model.net_g_ema.denoiser.parameters():
            param.mul_(1e30)  # finite, but the output overflows
    assert all(torch.isfinite(p).all() for p in model.net_g_ema.parameters())
    with pytest.raises(TrainingStopped, match='not writing .*net_g_4.pth: its params_ema weights restore the '
                                              'validation frame 0002_0000 of tiny-test with non-finite values'):
        model.save(epoch=0, current_iter=4)
    assert not list((tmp_path / 'models').iterdir()) and not list((tmp_path / 'training_states').iterdir())


def test_a_checkpoint_that_does_not_restore_the_probe_is_not_trained_from(data, tmp_path):
    from jude_arch.checkpoint_io import CheckpointError

    model, _ = make_model(data, tmp_path)
    model.save(epoch=0, current_iter=1)
    path = tmp_path / 'models' / 'net_g_1.pth'
    assert model.verified_checkpoint == str(path)
    checkpoint = torch.load(path, weights_only=True)
    for state in (checkpoint['params'], checkpoint['params_ema']):
        for name in state:
            if name.startswith('denoiser.') and state[name].is_floating_point():
                state[name] = state[name] * 1e30
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=f'{path}: its params weights restore the validation frame .* with '
                                              'non-finite values'):
        make_model(data, tmp_path / 'again', path={'pretrain_network_g': str(path)})


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


def test_a_log_file_that_cannot_be_written_is_one_warning(tmp_path, capsys):
    """A full disk: logging would print a 20-line '--- Logging error ---' per message; here one line says so and
    the log goes on in the terminal."""
    import basicsr.utils.logger

    from jude_arch.basicsr_glue.shims import _with_quiet_log_file

    path = tmp_path / 'train.log'
    logger = _with_quiet_log_file(basicsr.utils.logger.get_root_logger)(logger_name='full_disk_log', log_file=path)
    handler = next(h for h in logger.handlers if isinstance(h, logging.FileHandler))

    class FullDisk:
        def write(self, *text):
            raise OSError(errno.ENOSPC, 'No space left on device')

        flush = close = write

    handler.stream = FullDisk()
    logger.info('first')
    logger.error('second')
    err = capsys.readouterr().err
    assert 'Logging error' not in err and 'Traceback' not in err
    assert err.count(f'warning: cannot write the log file {path} (No space left on device); the log goes on in this '
                     'terminal only') == 1
    assert 'second' in err and handler not in logger.handlers


def test_validation_images_are_written_whole_or_not_at_all(data, tmp_path, monkeypatch):
    """Killed between writing a validation image and moving it into place: no truncated PNG, no temporary file."""
    from jude_arch import checkpoint_io

    model, opt = make_model(data, tmp_path)
    dataset_opt = opt['datasets']['val']
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)

    def killed(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        model.validation(loader, current_iter=3, tb_logger=None, save_img=True)
    assert not [p for p in (tmp_path / 'visualization').rglob('*') if p.is_file()]


def test_a_bad_validation_frame_stops_the_run_before_it_starts(data, tmp_path, monkeypatch, log):
    """Validation sets are decoded whole when built: a truncated frame stops the run before iteration 1 (not at
    the first validation, hours in), naming the LMDB and the key."""
    import shutil

    import lmdb

    shutil.copytree(data / 'lmdb', tmp_path / 'lmdb')
    with lmdb.open(str(tmp_path / 'lmdb' / 'test_lq.lmdb'), map_size=2**24) as env, env.begin(write=True) as txn:
        txn.put(b'0004_0001', txn.get(b'0004_0001')[:-300])
    opt = tiny_options(data, 'bad_val', val={'val_freq': 5000})
    for phase, split in (('train', 'train'), ('val', 'test')):
        opt['datasets'][phase].update(dataroot_lq=str(tmp_path / 'lmdb' / f'{split}_lq.lmdb'),
                                      dataroot_gt=str(tmp_path / 'lmdb' / f'{split}_gt.lmdb'))
    message, log = run_train_main(opt, tmp_path, monkeypatch, log)
    assert message.startswith(f'error: {tmp_path / "lmdb" / "test_lq.lmdb"}, key 0004_0001: not a readable image')
    assert 'Model [JUDEModel] is created' not in log and 'Start training' not in log
