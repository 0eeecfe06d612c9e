"""CPU distributed training: torchrun --nproc_per_node=2 jude_arch/train.py ... --launcher pytorch (gloo)."""
import re

import pytest
import torch

from training_helpers import PYTHON, ROOT, run, tiny_lolblur, tiny_options, train_log, write_yaml

NAME = 'tiny_ddp'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def torchrun(options, cwd, *flags):
    return run([PYTHON, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                ROOT / 'jude_arch' / 'train.py', '-opt', options, '--launcher', 'pytorch', *flags], cwd=cwd,
               env={'OMP_NUM_THREADS': '1'})


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason='this torch has no torch.distributed')
def test_two_processes_train_validate_on_rank_0_and_resume(data, tmp_path):
    # No EMA: rank 0 validates with the trained network itself, which DDP wraps.
    opt = tiny_options(data, NAME, total_iter=4, periods=[8], val={'save_img': True}, train={'ema_decay': 0})
    opt['datasets']['train']['batch_size_per_gpu'] = 1  # total batch 2 over the two processes
    opt['network_g']['checkpoint_stages'] = True  # as in the phase files: checkpointing under DDP
    torchrun(write_yaml(opt, tmp_path / 'train.yml'), tmp_path)
    first = train_log(tmp_path / 'experiments', NAME)
    assert 'World size (gpu number): 2' in first
    # rank 0 alone validates (one result per validation) and writes checkpoints
    assert len(re.findall(r'Validation tiny-test', first)) == 2 + 1  # at 2, at 4, and the final one
    models = tmp_path / 'experiments' / NAME / 'models'
    assert {'net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'} <= {p.name for p in models.iterdir()}
    assert torch.load(models / 'net_g_4.pth', weights_only=True)['network_g']['type'] == 'JUDE'
    vis = tmp_path / 'experiments' / NAME / 'visualization'
    assert all(len(list(folder.iterdir())) == 3 for folder in vis.iterdir())  # iterations 2, 4 and the final

    opt['train']['total_iter'] = 8
    torchrun(write_yaml(opt, tmp_path / 'train_more.yml'), tmp_path, '--auto_resume')
    log = train_log(tmp_path / 'experiments', NAME)[len(first):]
    assert 'Resuming training from epoch: 0, iter: 4.' in log
    logged = [int(i) for i in re.findall(r'iter:\s+(\d+),', log)]
    assert min(logged) == 5 and max(logged) == 8
    assert (models / 'net_g_8.pth').is_file()
