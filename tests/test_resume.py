"""--auto_resume survives a damaged newest training state."""
import pytest
import torch

from jude_arch.basicsr_glue.resume import ResumeError, load_resume_state


def experiment(tmp_path, iters):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in iters:
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
        torch.save({'params': {}}, models / f'net_g_{it}.pth')
    return {'auto_resume': True, 'network_g': {'type': 'JUDE'},
            'path': {'training_states': str(states), 'models': str(models), 'resume_state': None}}


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
