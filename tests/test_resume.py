"""--auto_resume survives a damaged newest training state, clears what killed saves left, and continues exactly."""
import pytest
import torch

from jude_arch.basicsr_glue.resume import ResumeError, load_resume_state
from training_helpers import flip_bits, run_train_main, tiny_lolblur, tiny_options


def experiment(tmp_path, iters):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in iters:
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': [], 'moments': torch.full((64, ), 1e-3)},
                   states / f'{it}.state')
        torch.save({'params': {'w': torch.full((64, ), 0.1)}}, models / f'net_g_{it}.pth')
    return {'auto_resume': True, 'network_g': {'type': 'JUDE'},
            'path': {'experiments_root': str(tmp_path), 'training_states': str(states), 'models': str(models),
                     'resume_state': None}}


def test_a_truncated_newest_state_falls_back_to_the_previous_one(tmp_path, capsys):
    opt = experiment(tmp_path, [4, 8, 12])
    newest = tmp_path / 'training_states' / '12.state'
    newest.write_bytes(newest.read_bytes()[:100])  # killed while saving
    (tmp_path / 'models' / 'net_g_8.pth').unlink()  # and a state whose model is gone
    state = load_resume_state(opt)
    assert state['iter'] == 4
    assert opt['path']['resume_state'] == str(tmp_path / 'training_states' / '4.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_4.pth')
    err = capsys.readouterr().err
    assert f'warning: skipping {newest}: cannot be loaded as a training state' in err
    assert 'net_g_8.pth is missing' in err


def test_no_usable_state_is_an_error_naming_the_folder(tmp_path):
    opt = experiment(tmp_path, [4])
    (tmp_path / 'training_states' / '4.state').write_bytes(b'garbage')
    with pytest.raises(ResumeError, match=f'no training state in {tmp_path / "training_states"} can be resumed'):
        load_resume_state(opt)
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(tmp_path / 'training_states' / '4.state')
    with pytest.raises(ResumeError, match='4.state: cannot be loaded as a training state'):
        load_resume_state(opt)


def test_a_fresh_experiment_starts_from_scratch(tmp_path):
    assert load_resume_state(experiment(tmp_path, [])) is None


def test_a_bit_flipped_newest_state_is_skipped_like_a_truncated_one(tmp_path, capsys):
    """Same size, a few bits flipped: torch.load would load it without a word (its moments 1e35 instead of 1e-3);
    the zip's checksums give it away."""
    opt = experiment(tmp_path, [4, 8, 12])
    newest = flip_bits(tmp_path / 'training_states' / '12.state')
    assert torch.load(newest, weights_only=True)['moments'].max() > 1e30  # what would have been trained from
    flip_bits(tmp_path / 'models' / 'net_g_8.pth')  # and a state whose model is damaged
    state = load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'] == str(tmp_path / 'training_states' / '4.state')
    err = capsys.readouterr().err
    assert f'warning: skipping {newest}: damaged training state: its record data/0 does not match its checksum' in err
    assert f'warning: skipping {tmp_path / "training_states" / "8.state"}: its model ' \
           f'{tmp_path / "models" / "net_g_8.pth"}: damaged checkpoint' in err


def test_the_files_of_killed_saves_are_removed_and_named(tmp_path, capsys):
    opt = experiment(tmp_path, [4])
    parts = [tmp_path / 'training_states' / '.8.state.4242.part', tmp_path / 'models' / '.net_g_8.pth.4242.part',
             tmp_path / 'visualization' / '0002_0000' / '.0002_0000_8.png.4242.part']
    parts[2].parent.mkdir(parents=True)
    for part in parts:
        part.write_bytes(b'PK\x03\x04')
    kept = tmp_path / 'models' / 'notes.part'  # not a temporary file of ours
    kept.write_text('mine')
    assert load_resume_state(opt)['iter'] == 4
    assert not any(part.exists() for part in parts) and kept.exists()
    err = capsys.readouterr().err
    for part in parts:
        assert f'warning: removed {part}, left by a save that was killed before it completed' in err


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def resume_options(data, total_iter):
    """12 items an epoch (6 iterations), random crops, flips and phase-3 noise, an EMA: everything resuming must
    bring back."""
    return tiny_options(data, 'resumed', total_iter=total_iter, periods=[10],
                        datasets={'train': {**tiny_options(data, 'x')['datasets']['train'], 'dataset_enlarge_ratio': 2,
                                            'lq_noise': {}}},
                        val={'val_freq': 100, 'save_img': False, 'metrics': {}},
                        logger={'print_freq': 1, 'save_checkpoint_freq': 4, 'use_tb_logger': False})


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(data, tmp_path, monkeypatch):
    """Stopped at iteration 4 (mid-epoch) and resumed to 10 (across an epoch boundary), bit for bit the weights
    and EMA of a run that went to 10 at once: the same batches, crops, flips and noise, in the same order."""
    whole, split = tmp_path / 'whole', tmp_path / 'split'
    whole.mkdir(), split.mkdir()
    assert run_train_main(resume_options(data, 10), whole, monkeypatch)[0] is None
    assert run_train_main(resume_options(data, 4), split, monkeypatch)[0] is None
    assert run_train_main(resume_options(data, 10), split, monkeypatch, args=['--auto_resume'])[0] is None
    for name in ('net_g_8.pth', 'net_g_latest.pth'):
        a, b = (torch.load(root / 'experiments' / 'resumed' / 'models' / name, weights_only=True)
                for root in (whole, split))
        for key in ('params', 'params_ema'):
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), (name, key)
    state = torch.load(split / 'experiments' / 'resumed' / 'training_states' / '8.state', weights_only=True)
    assert state['data_position'] == {'epoch': 1, 'next': 4} and len(state['step_guard']['update']) == 8
