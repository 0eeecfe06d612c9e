"""Resuming training the way BasicSR's `--auto_resume` means it, also without CUDA and after a crash mid-save.

Installed over `basicsr.train.load_resume_state` by `apply_runtime_shims` (`shims.py`); it runs first in every
training run, so it also clears what killed saves left behind.
"""
import os
import sys

import torch

from ..checkpoint_io import CheckpointError, refusal_message, remove_partial_files, verify_checksums


class ResumeError(RuntimeError):
    """A training state that cannot be resumed from; the message names it."""


def _warn(message):
    # BasicSR's logger must not be created before train_pipeline creates it with the log file.
    print(f'warning: {message}', file=sys.stderr, flush=True)


def _read_state(path, device):
    """torch.load of a training state (weights_only) whose checksums match; an unreadable or damaged file
    raises ResumeError naming it."""
    try:
        verify_checksums(path, 'training state')
    except CheckpointError as error:
        raise ResumeError(str(error)) from None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated zip, a refused pickle, an I/O error: the file is named either way
        refused = refusal_message(path, error)
        if refused:
            raise ResumeError(refused) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResumeError(f'{path}: cannot be loaded as a training state ({reason})') from None


def _model_problem(path):
    """Why the checkpoint `path` of a training state cannot be resumed with (missing, damaged), or None."""
    if not os.path.isfile(path):
        return f'its model {path} is missing'
    try:
        verify_checksums(path)
    except CheckpointError as error:
        return f'its model {error}'
    return None


def remove_interrupted_saves(opt):
    """Remove (and name) the temporary files of saves killed mid-write in this experiment's folder; rank 0 only."""
    folder = opt['path'].get('experiments_root')
    if opt.get('rank', 0) != 0 or not folder or not os.path.isdir(folder):
        return
    for path in remove_partial_files(folder):
        _warn(f'removed {path}, left by a save that was killed before it completed')


def load_resume_state(opt):
    """BasicSR's `load_resume_state` that also works without CUDA and survives a damaged newest state.

    First the temporary files of killed saves are removed from the experiment's folder, with a warning naming
    each. With `--auto_resume` it takes the newest `<iter>.state` in experiments/<name>/training_states under the
    run's root (the working directory for our entry points) that loads, whose checksums match and whose
    `models/net_g_<iter>.pth` is there with matching checksums; a newer one that does not (a run killed while
    saving, a full disk, a flipped bit) is skipped with a warning naming it. Otherwise it loads
    `path.resume_state` when set. Tensors are mapped to this process's GPU, or to the CPU when there is none.

    Args:
        opt (dict): parsed options (BasicSR's parse_options); `path.resume_state` is filled in on auto-resume.

    Returns:
        dict | None: the training state, or None when starting fresh.
    """
    from basicsr.utils import check_resume, scandir

    remove_interrupted_saves(opt)
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        iters = []
        if os.path.isdir(state_dir):
            iters = [int(name[:-len('.state')]) for name in scandir(state_dir, suffix='.state', recursive=False)
                     if name[:-len('.state')].isdigit()]
        state = None
        for it in sorted(iters, reverse=True):
            path = os.path.join(state_dir, f'{it}.state')
            models = [os.path.join(opt['path']['models'], f'net_{key[len("network_"):]}_{it}.pth')
                      for key in opt if key.startswith('network_')]
            problem = next(filter(None, map(_model_problem, models)), None)
            if problem:
                _warn(f'skipping {path}: {problem}; trying the previous state')
                continue
            try:
                state = _read_state(path, device)
            except ResumeError as error:
                _warn(f'skipping {error}; trying the previous state')
                continue
            break
        if state is None:
            if iters:
                raise ResumeError(f'no training state in {state_dir} can be resumed from (see the warnings); '
                                  'start without --auto_resume, or from a checkpoint with path.pretrain_network_g')
            _configure_sampling(opt, None)
            return None
        opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        if not os.path.isfile(path):
            raise ResumeError(f'resume_state {path} does not exist: fix path.resume_state or use --auto_resume')
        state = _read_state(path, device)
    else:
        _configure_sampling(opt, None)
        return None
    check_resume(opt, state['iter'])
    _configure_sampling(opt, state)
    return state


def _configure_sampling(opt, state):
    """Tell the training sampler, built next, the run's seed and where in its epoch the state was saved."""
    from ..data import sampling  # not at import: the data package imports basicsr, which the import hook precedes

    sampling.configure(opt.get('manual_seed'), (state or {}).get('data_position'))
