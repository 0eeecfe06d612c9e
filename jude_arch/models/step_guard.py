"""Which training steps may change the model: a bad step changes nothing, and too many in a row stop training.

A step is bad when its loss or gradient norm is not finite, or, finite, when it throws the model far off its
course (`train.divergence_guard`):
- the update moves the weights by more than `max_update` times their norm, ‖Δw‖ / ‖w‖ over all trained
  parameters: the absolute rule, which also holds for the first steps, before there is any history (Adam's
  first step moves every weight by about the learning rate, so lr = 1000 moves them ~10⁴ times their norm);
- the update per unit learning rate, ‖Δw‖ / (‖w‖ · lr), is more than `update_factor` times its median over the
  last `window` accepted steps (per unit learning rate, so that warm-up, decay and cosine restarts are not
  divergence); needs `min_history` accepted steps;
- the loss is more than `loss_factor` times its median over the same steps.
The defaults come from measurements on the demo and the phase files' settings and on hostile runs (a learning
rate of 10 or 1000, Adam moments of 10³⁴ from a damaged training state); docs/training.md gives the figures.

A bad step updates nothing: not the weights, the optimizer's state, the EMA nor BatchNorm's running statistics
(which a bad forward pass poisons). `train.max_nonfinite_steps` bad steps in a row stop training with
`TrainingStopped`, naming the last checkpoint verified to restore an image with finite values. Under DDP each
decision is all-reduced, so that all ranks skip together (each rank's loss is its own).
"""
import copy
import statistics
from collections import deque

import torch
from basicsr.utils import get_root_logger

from ..option_check import check_keys
from .training_guards import DIVERGED_HINT, TrainingStopped

DEFAULT_MAX_NONFINITE_STEPS = 10
DIVERGENCE_DEFAULTS = {'max_update': 1.0, 'update_factor': 100.0, 'loss_factor': 100.0, 'window': 100,
                       'min_history': 20}


def divergence_options(value):
    """`train.divergence_guard` as a dict of the rule's numbers (absent: the defaults), or None when switched off
    (`false` or `~`)."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f'train.divergence_guard must be a dict of {sorted(DIVERGENCE_DEFAULTS)} or false, got '
                         f'{value!r}')
    check_keys(value, 'train.divergence_guard', tuple(DIVERGENCE_DEFAULTS))
    options = {**DIVERGENCE_DEFAULTS, **value}
    for key, number in options.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
            raise ValueError(f'train.divergence_guard.{key} must be a positive number, got {number!r}')
    options['window'], options['min_history'] = int(options['window']), int(options['min_history'])
    return options


class StepGuard:
    """JUDEModel's part that decides whether a training step may update anything (see the module docstring).

    The model calls `_begin_step` before its forward pass and `_apply_step` with its losses; `_apply_step` runs
    the backward pass, clipping, the optimizer and the EMA, or undoes everything when the step is bad.
    """

    def _init_step_guard(self, train_opt):
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', DEFAULT_MAX_NONFINITE_STEPS))
        if self.max_nonfinite_steps < 1:
            raise ValueError(f'train.max_nonfinite_steps must be at least 1, got {self.max_nonfinite_steps}')
        self.divergence = divergence_options(train_opt.get('divergence_guard', {}))
        window = self.divergence['window'] if self.divergence else 1
        # Accepted steps: update per unit learning rate, and loss (saved with the training state).
        self.step_history = {'update': deque(maxlen=window), 'loss': deque(maxlen=window)}
        self.bad_streak, self.bad_iters, self._scaler_skipped = 0, [], False
        self.last_update = None  # (‖Δw‖/‖w‖, lr, loss) of the last finite step, for the log and the tests
        self.resumed_from = None  # (training state, its iteration) when the run resumed
        self._saved_buffers = []

    # ---- the step --------------------------------------------------------------------------------------------
    def _begin_step(self):
        """Before the forward pass: clear the gradients, keep BatchNorm's statistics to put back on a bad step."""
        self.optimizer_g.zero_grad(set_to_none=True)
        self._saved_buffers = [(b, b.detach().clone()) for b in self.get_bare_model(self.net_g).buffers()]

    def _apply_step(self, current_iter, l_total, loss_dict):
        """Backward, gradient clipping, the optimizer step and the EMA, unless the step is bad (then nothing
        changes); sets self.log_dict."""
        # Backward on every rank whatever the loss: DDP's gradient all-reduce must run everywhere.
        self.grad_scaler.scale(l_total).backward()
        self.grad_scaler.unscale_(self.optimizer_g)  # no-op without fp16
        params = [p for p in self.net_g.parameters() if p.grad is not None]
        if self.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, **self.grad_clip)
            loss_dict['grad_norm'] = grad_norm
        elif params:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad, dtype=torch.float32) for p in params]))
        else:
            grad_norm = torch.zeros((), device=self.device)
        if self._skip_nonfinite_step(current_iter, l_total, grad_norm):
            self.grad_scaler.update()  # fp16: the scale shrinks as after any overflow
            self._undo_step(params, None)
            return
        snapshot = self._snapshot(params)
        self.grad_scaler.step(self.optimizer_g)  # fp16: skips the step itself when the gradients overflowed
        self.grad_scaler.update()
        if self._skip_diverging_step(current_iter, l_total, params, snapshot):
            self._undo_step(params, snapshot)
            return
        self.bad_streak = 0
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0 and not self._scaler_skipped:
            self.model_ema(decay=self.ema_decay)

    def _snapshot(self, params):
        """The weights and the optimizer's state before the update, to undo it (None with the guard off)."""
        if self.divergence is None:
            return None
        state = {p: {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in s.items()}
                 for p, s in self.optimizer_g.state.items()}
        return [p.detach().clone() for p in params], state

    @torch.no_grad()
    def _undo_step(self, params, snapshot):
        """Put back what a bad step changed: BatchNorm's statistics, and the weights and optimizer state when the
        update was applied."""
        for buffer, saved in self._saved_buffers:
            buffer.copy_(saved)
        if snapshot is not None:
            before, state = snapshot
            for param, value in zip(params, before):
                param.copy_(value)
            self.optimizer_g.state.clear()
            self.optimizer_g.state.update(state)
        self.optimizer_g.zero_grad(set_to_none=True)
        self.log_dict = {'bad_steps': float(self.bad_streak)}

    # ---- the decisions ---------------------------------------------------------------------------------------
    def _skip_nonfinite_step(self, current_iter, loss, grad_norm):
        """Whether the loss or the gradients are not finite (then the step must update nothing).

        Non-finite gradients in fp16 are the gradient scaler's normal way of finding its scale: it skips those
        steps and shrinks the scale itself, and they are not counted here.
        """
        loss_ok = torch.isfinite(loss.detach()).all() if torch.is_tensor(loss) else torch.tensor(True)
        grads_ok = torch.isfinite(grad_norm.detach())
        fp16 = self.grad_scaler.is_enabled()
        self._scaler_skipped = bool(fp16 and not grads_ok)
        bad = torch.logical_not(loss_ok if fp16 else loss_ok & grads_ok)
        if not self._all_agree(bad):
            return False
        loss_value = float(loss.detach()) if torch.is_tensor(loss) else loss
        self._count_bad_step(current_iter, f'non-finite step skipped (loss {loss_value}, gradient norm '
                                           f'{float(grad_norm)})')
        return True

    def _skip_diverging_step(self, current_iter, loss, params, snapshot):
        """Whether the update just applied throws the model off its course (see the module docstring)."""
        if snapshot is None or self._scaler_skipped or not params:
            return False
        before = snapshot[0]
        delta = torch.stack([torch.linalg.vector_norm(p.detach().float() - b.float()) for p, b in zip(params, before)])
        weight = torch.stack([torch.linalg.vector_norm(b, dtype=torch.float32) for b in before])
        stats = torch.stack([torch.linalg.vector_norm(delta), torch.linalg.vector_norm(weight),
                             loss.detach().float().reshape(())]).tolist()
        update = stats[0] / max(stats[1], 1e-12)
        lr = max(group['lr'] for group in self.optimizer_g.param_groups)
        self.last_update = (update, lr, stats[2])
        reason = self.divergence_reason(update, lr, stats[2])
        if not self._all_agree(torch.tensor(reason is not None)):
            if lr > 0:
                self.step_history['update'].append(update / lr)
                self.step_history['loss'].append(stats[2])
            return False
        self._count_bad_step(current_iter, f'diverging step skipped ({reason or "on another rank"})')
        return True

    def divergence_reason(self, update, lr, loss):
        """Why a finite step with this update ratio ‖Δw‖/‖w‖, learning rate and loss diverges, or None."""
        rule = self.divergence
        if update > rule['max_update']:
            return (f'it moved the weights by {update:.3g} times their norm; limit train.divergence_guard.max_update '
                    f'= {rule["max_update"]:g}')
        if len(self.step_history['update']) < rule['min_history']:
            return None
        median = statistics.median(self.step_history['update'])
        if lr > 0 and median > 0 and update / lr > rule['update_factor'] * median:
            return (f'its update, {update:.3g} of the weights\' norm, is {update / lr / median:.0f} times the recent '
                    f'median at this learning rate; limit train.divergence_guard.update_factor = '
                    f'{rule["update_factor"]:g}')
        median = statistics.median(self.step_history['loss'])
        if median > 0 and loss > rule['loss_factor'] * median:
            return (f'its loss, {loss:.4g}, is {loss / median:.0f} times the recent median; limit '
                    f'train.divergence_guard.loss_factor = {rule["loss_factor"]:g}')
        return None

    def _all_agree(self, bad):
        """`bad` (a boolean tensor) made the same on every rank: bad anywhere is bad everywhere."""
        bad = bad.to(self.device, torch.float32).view(1)
        if self.opt['dist']:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        return bool(bad.item())

    def _count_bad_step(self, current_iter, what):
        """Log a bad step; stop training at the `train.max_nonfinite_steps`-th in a row."""
        self.bad_streak += 1
        self.bad_iters.append(current_iter)
        get_root_logger().warning(
            f'iter {current_iter}: {what}; weights, optimizer state and EMA not updated; batch: '
            f'{", ".join(map(str, self.batch_keys)) or "?"} ({self.bad_streak} in a row, limit '
            f'train.max_nonfinite_steps = {self.max_nonfinite_steps})')
        if self.bad_streak >= self.max_nonfinite_steps:
            iters = self.bad_iters[-self.bad_streak:]
            suspect = ''
            if self.resumed_from and iters[0] == self.resumed_from[1] + 1:
                suspect = (f' They began with the first step after resuming from {self.resumed_from[0]}: that '
                           'training state may be damaged; move it aside to resume from the one before.')
            message = (f'training stopped: {self.bad_streak} consecutive non-finite or diverging steps (iterations '
                       f'{iters[0]}–{iters[-1]}); they changed nothing.{suspect} {self.verified_sentence()} '
                       f'{DIVERGED_HINT}')
            get_root_logger().error(message)
            raise TrainingStopped(message)

    # ---- resume ----------------------------------------------------------------------------------------------
    def step_guard_state(self):
        """What the guard has learnt, for the training state (a resumed run decides as the uninterrupted one)."""
        return {'update': list(self.step_history['update']), 'loss': list(self.step_history['loss'])}

    def load_step_guard_state(self, state):
        for key, values in (state or {}).items():
            if key in self.step_history:
                self.step_history[key].extend(float(v) for v in values)
