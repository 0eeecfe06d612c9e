"""No file a user passes in runs code when it is loaded, and none is used damaged: checkpoints given as
pretrain_network_g, training states, restore checkpoints."""
import os

import pytest
import torch

from jude_arch.basicsr_glue.resume import ResumeError, load_resume_state
from jude_arch.checkpoint_io import CheckpointError, read_checkpoint
from jude_arch.restore.restorer import RestoreError, load_network
from training_helpers import flip_bits, make_model, run_train_main, save_small_checkpoint, tiny_lolblur, tiny_options


class Exploit:
    """Unpickling this calls os.system: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def malicious_checkpoint(path, marker, **extra):
    torch.save({'params': {}, 'note': Exploit(marker), **extra}, path)
    return path


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def test_a_pickled_callable_as_pretrain_network_g_is_refused(data, tmp_path):
    """BasicSR's load_network behind pretrain_network_g (and resume) must load weights only, on every torch
    this package supports (the weights_only=True default of torch >= 2.6 alone would not cover older ones)."""
    marker = tmp_path / 'ran'
    checkpoint = malicious_checkpoint(tmp_path / 'evil.pth', marker)
    with pytest.raises(Exception, match='(?i)weights.only|refused|unsupported global'):
        make_model(data, tmp_path, path={'pretrain_network_g': str(checkpoint), 'strict_load_g': True,
                                         'resume_state': None})
    assert not marker.exists()


def test_a_pickled_callable_in_a_training_state_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    state = malicious_checkpoint(tmp_path / '8.state', marker, iter=8)
    opt = {'auto_resume': False, 'path': {'resume_state': str(state)}}
    with pytest.raises(ResumeError, match=f'{state}: refused'):
        load_resume_state(opt)
    assert not marker.exists()


def test_a_pickled_callable_in_a_restore_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    checkpoint = malicious_checkpoint(tmp_path / 'evil.pth', marker)
    with pytest.raises(RestoreError, match='refused to load: it stores Python objects'):
        load_network(checkpoint)
    assert not marker.exists()


def test_a_damaged_checkpoint_is_refused_wherever_it_is_loaded(data, tmp_path):
    """A flipped bit (same size) in a checkpoint: torch.load reads it silently, every loader here refuses it."""
    path = flip_bits(save_small_checkpoint(tmp_path / 'model.pth'), record='data/1')
    torch.load(path, weights_only=True)  # what would have been used
    message = f'{path}: damaged checkpoint: its record data/1 does not match its checksum'
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    with pytest.raises(RestoreError, match=message):
        load_network(path)
    with pytest.raises(CheckpointError, match=message):
        make_model(data, tmp_path, path={'pretrain_network_g': str(path), 'strict_load_g': False})


@pytest.mark.parametrize('problem', ['missing', 'damaged'])
def test_a_bad_pretrain_network_g_is_a_one_line_error(data, tmp_path, monkeypatch, problem):
    path = tmp_path / 'model.pth'
    if problem == 'damaged':
        flip_bits(save_small_checkpoint(path), record='data/1')
    opt = tiny_options(data, 'bad_start', path={'pretrain_network_g': str(path)})
    message, _ = run_train_main(opt, tmp_path, monkeypatch)
    assert message == f'error: {path}: ' + ('no such checkpoint file' if problem == 'missing' else
                                           'damaged checkpoint: its record data/1 does not match its checksum (the '
                                           'file changed after it was written: a disk or copy error); use an earlier '
                                           'one or copy it again')
