"""What keeps saving from losing or poisoning a model: checkpoints never written with non-finite weights, saves
retried and a failed save stopping the run (bad steps: `step_guard.py`; checkpoints that must restore an image:
`verification.py`).

`TrainingStopped` carries the one-line message `jude_arch/train.py` prints; BasicSR alone would log "Just ignore
it" after a failed save, train on after NaN steps and save the poisoned weights.
"""
import errno
import shutil
import time
from os import path as osp

import torch
from basicsr.utils import get_root_logger

from ..checkpoint_io import save_atomically

# A resumed run keeps the learning rate saved in its training state; grad_clip and precision come from the YAML.
DIVERGED_HINT = ('Set train.grad_clip (or train in fp32) and resume with --auto_resume, or lower train.optim_g.lr '
                 'and start a new run (from the verified checkpoint with path.pretrain_network_g)')


class TrainingStopped(RuntimeError):
    """Training cannot go on without losing or poisoning the model; the message says why and what to do."""


def payload_bytes(obj):
    """Bytes of the tensors in a checkpoint-like tree: roughly the size torch.save will write."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0


def _save_failure(path, error, needed):
    """Why a save failed, in plain words, and whether the disk is full (named as such, with the space needed).

    Returns:
        tuple[str, bool]: (reason, disk full).
    """
    folder = osp.dirname(path) or '.'
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    # torch.save reports a full disk as a RuntimeError ("file write failed") without errno: ask the disk.
    if getattr(error, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < needed):
        free_text = '' if free is None else f', {free / 2**20:.1f} MB free'
        return (f'no space left on device in {folder}: needed ~{needed / 2**20:.1f} MB{free_text}; free some space '
                '(or move the experiment to a larger disk), then resume with --auto_resume'), True
    return f'{type(error).__name__}: {error}', False


def save_with_retry(obj, path, what):
    """Save `obj` atomically (`checkpoint_io.save_atomically`: no half-written checkpoint, no temporary file left,
    Ctrl-C included), retried 3 times as BasicSR does. A save that still fails stops training (BasicSR logs "Just
    ignore it" and goes on, and a run can then end without a single checkpoint); a full disk stops it at once."""
    needed = payload_bytes(obj)
    for attempt in range(3):
        try:
            save_atomically(obj, path)
            return
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            reason, disk_full = _save_failure(path, error, needed)
            if disk_full or attempt == 2:
                message = f'cannot save the {what} {path}: {reason}'
                get_root_logger().error(message)
                raise TrainingStopped(message) from error
            get_root_logger().warning(f'Save {what} error: {reason}, remaining retry times: {2 - attempt}')
            time.sleep(1)


def check_finite_state(state, key, save_path, verified):
    """Refuse to write a checkpoint whose weights hold NaN or inf: TrainingStopped names the first such tensor and
    (`verified`, a sentence) the last verified checkpoint."""
    bad = [name for name, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        message = f'not writing {save_path}: {key} holds non-finite values ({bad[0]}, ...). {verified} {DIVERGED_HINT}'
        get_root_logger().error(message)
        raise TrainingStopped(message)
