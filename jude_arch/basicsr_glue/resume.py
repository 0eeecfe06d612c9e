"""Resuming training the way BasicSR's `--auto_resume` means it, also without CUDA and after a crash mid-save.

Installed over `basicsr.train.load_resume_state` by `apply_runtime_shims` (`shims.py`).
"""
import os
import sys

import torch

from ..checkpoint_io import refusal_message


class ResumeError(RuntimeError):
    """A training state that cannot be resumed from; the message names it."""


def _read_state(path, device):
    """torch.load of a training state (weights_only); an unreadable file raises ResumeError naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated zip, a refused pickle, an I/O error: the file is named either way
        refused = refusal_message(path, error)
        if refused:
            raise ResumeError(refused) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResumeError(f'{path}: cannot be loaded as a training state ({reason})') from None


def load_resume_state(opt):
    """BasicSR's `load_resume_state` that also works without CUDA and survives a damaged newest state.

    With `--auto_resume` it takes the newest `<iter>.state` in experiments/<name>/training_states under the
    run's root (the working directory for our entry points) that loads and whose `models/net_g_<iter>.pth` is
    there; a newer one that does not (a run killed while saving, a full disk) is skipped with a warning naming
    it. Otherwise it loads `path.resume_state` when set. Tensors are mapped to this process's GPU, or to the CPU
    when there is none.

    Args:
        opt (dict): parsed options (BasicSR's parse_options); `path.resume_state` is filled in on auto-resume.

    Returns:
        dict | None: the training state, or None when starting fresh.
    """
    from basicsr.utils import check_resume, scandir

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
            try:
                state = _read_state(path, device)
            except ResumeError as error:
                print(f'warning: skipping {error}; trying the previous state', file=sys.stderr, flush=True)
                continue
            missing = [model for model in models if not os.path.isfile(model)]
            if missing:
                print(f'warning: skipping {path}: its model {missing[0]} is missing; trying the previous state',
                      file=sys.stderr, flush=True)
                state = None
                continue
            break
        if state is None:
            if iters:
                raise ResumeError(f'no training state in {state_dir} can be resumed from (see the warnings); '
                                  'start without --auto_resume, or from a checkpoint with path.pretrain_network_g')
            return None
        opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        if not os.path.isfile(path):
            raise ResumeError(f'resume_state {path} does not exist: fix path.resume_state or use --auto_resume')
        state = _read_state(path, device)
    else:
        return None
    check_resume(opt, state['iter'])
    return state
