"""What keeps training from losing or poisoning a model: non-finite steps skipped (and too many in a row stop
training), checkpoints never written with non-finite weights, saves retried and a failed save stopping the run.

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

DEFAULT_MAX_NONFINITE_STEPS = 10
# A resumed run keeps the learning rate saved in its training state; grad_clip and precision come from the YAML.
DIVERGED_HINT = ('Set train.grad_clip (or train in fp32) and resume with --auto_resume, or lower train.optim_g.lr '
                 'and start a new run from that checkpoint (path.pretrain_network_g)')


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


def check_finite_state(state, key, save_path, models_folder):
    """Refuse to write a checkpoint whose weights hold NaN or inf: TrainingStopped names the first such tensor."""
    bad = [name for name, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        message = (f'not writing {save_path}: {key} holds non-finite values ({bad[0]}, ...); the previous '
                   f'checkpoint in {models_folder} is the last good model. {DIVERGED_HINT}')
        get_root_logger().error(message)
        raise TrainingStopped(message)


class NonFiniteStepGuard:
    """JUDEModel's part that decides whether a training step may update anything (`train.max_nonfinite_steps`)."""

    def _init_nonfinite_guard(self, train_opt):
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', DEFAULT_MAX_NONFINITE_STEPS))
        if self.max_nonfinite_steps < 1:
            raise ValueError(f'train.max_nonfinite_steps must be at least 1, got {self.max_nonfinite_steps}')
        self.nonfinite_streak, self.nonfinite_iters, self._scaler_skipped = 0, [], False

    def _skip_nonfinite_step(self, current_iter, loss, grad_norm):
        """Decide whether this step must update nothing, and stop training after too many in a row.

        A non-finite loss always counts. Non-finite gradients count too, except in fp16, where overflowing
        gradients are the gradient scaler's normal way of finding its scale: it skips those steps and shrinks
        the scale itself, and they are not counted here. Under DDP the decision is all-reduced, so that all
        ranks skip together (each rank's loss is its own).
        """
        loss_ok = torch.isfinite(loss.detach()).all() if torch.is_tensor(loss) else torch.tensor(True)
        grads_ok = torch.isfinite(grad_norm.detach())
        fp16 = self.grad_scaler.is_enabled()
        self._scaler_skipped = bool(fp16 and not grads_ok)
        bad = torch.logical_not(loss_ok if fp16 else loss_ok & grads_ok).to(self.device, torch.float32).view(1)
        if self.opt['dist']:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if not bad.item():
            self.nonfinite_streak = 0
            return False
        self.nonfinite_streak += 1
        self.nonfinite_iters.append(current_iter)
        loss_value = float(loss.detach()) if torch.is_tensor(loss) else loss
        get_root_logger().warning(
            f'iter {current_iter}: non-finite step skipped (loss {loss_value}, gradient norm {float(grad_norm)}); '
            f'weights and EMA not updated; batch: {", ".join(map(str, self.batch_keys)) or "?"} '
            f'({self.nonfinite_streak} in a row, limit train.max_nonfinite_steps = {self.max_nonfinite_steps})')
        if self.nonfinite_streak >= self.max_nonfinite_steps:
            iters = self.nonfinite_iters[-self.nonfinite_streak:]
            message = (f'training stopped: {self.nonfinite_streak} consecutive non-finite steps (iterations '
                       f'{iters[0]}–{iters[-1]}); they changed nothing, and the last checkpoint in '
                       f'{self.opt["path"]["models"]} is the last good model. {DIVERGED_HINT}')
            get_root_logger().error(message)
            raise TrainingStopped(message)
        return True
