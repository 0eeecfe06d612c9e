"""JUDEModel: BasicSR's SRModel with what training JUDE (or any restorer) on LOL-Blur needs.

On top of SRModel: the paper's loss by default (JUDELoss), mixed precision (bf16, or fp16 with a gradient
scaler), gradient clipping, EMA that also tracks buffers (JUDE's hyper-parameter net has BatchNorm),
validation that names images by the LOL-Blur video, tiles large frames on request, clamps outputs and shows
input / output / ground truth (and JUDE's estimated kernel) in TensorBoard, checkpoints that carry the network
options (so a checkpoint alone rebuilds the net), written atomically, and CPU / CPU-DDP training.
Nothing here assumes the network is JUDE: any BasicSR arch trains with it.

YAML knobs (all optional):
    train:
      precision: fp32          # fp32 | bf16 | fp16 (fp16 adds a GradScaler) | auto (bf16 where native, see
                               # jude_arch.precision)
      grad_clip: ~             # e.g. {max_norm: 0.1, norm_type: 2}, or a number (max_norm)
      pixel_opt: {type: JUDELoss, fft_weight: 0.1}   # the default when no loss is given
      ema_decay: 0.999         # SRModel's EMA, buffers copied too
      max_nonfinite_steps: 10  # a step whose loss or gradient norm is not finite updates nothing (weights,
                               # EMA, BatchNorm statistics); this many in a row stop training with an error
      # Auxiliary losses on JUDE's physics, all off by default (the paper trains on the output only):
      sharp_opt: ~             # e.g. {type: L1Loss, loss_weight: 0.5}: I_K against `low_sharp`
      kernel_opt: ~            # e.g. {type: KernelLoss, loss_weight: 0.05}: k̂ against the true kernel
      reblur_opt: ~            # e.g. {type: ReblurLoss, light: linear}: blur(low_sharp, k̂) against the blur
      reflectance_opt: ~       # e.g. {type: L1Loss, loss_weight: 0.5}: R_K against the ground truth
    val:
      precision: fp32          # autocast for validation / testing (also auto)
      tile: ~                  # {size: 512, overlap: 64}: tiled validation, seamless blending (jude_arch.tiling);
                               # overlap defaults to two kernel widths
      tb_images: 3             # first N validation images shown in TensorBoard
      physics: {light: linear, max_shift: 4}   # metrics of the physics when the data has low_sharp, low_blur
                               # or kernel (`physics: false`: off): reblur_psnr, kernel_similarity,
                               # kernel_entropy, i_k_psnr (see jude_arch.physics)
    protocol: ~                # testing: a free-form description of the evaluation protocol, written with the
                               # metric values to results/<name>/metrics_<dataset>.json

Metrics get BasicSR's 8-bit images (`img`, `img2`) and, when their function accepts them, the float tensors
`img_float` (the output before clamping and rounding) and `img2_float` (the ground truth), which
`jude_arch.metrics` use with `float_input: true`. A metric function with a `prepare(**options)` attribute is
called before the first image is restored, so that missing weights stop the run at once.
"""
import errno
import inspect
import json
import os
import shutil
import time
from collections import OrderedDict
from contextlib import nullcontext
from os import path as osp

import torch
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import METRIC_REGISTRY, MODEL_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from .. import physics
from ..archs import JUDE
from ..checkpoint_io import atomic_write
from ..metrics.metric_input import FLOAT_KEYS
from ..precision import PRECISIONS, auto_precision
from ..precision import resolve as resolve_precision
from ..restorer import default_overlap
from ..tiling import TileGrid

DEFAULT_LOSS = {'type': 'JUDELoss', 'fft_weight': 0.1}
DEFAULT_MAX_NONFINITE_STEPS = 10
# A resumed run keeps the learning rate saved in its training state; grad_clip and precision come from the YAML.
_DIVERGED_HINT = ('Set train.grad_clip (or train in fp32) and resume with --auto_resume, or lower train.optim_g.lr '
                  'and start a new run from that checkpoint (path.pretrain_network_g)')
# Longest side of a TensorBoard strip; larger validation frames are shrunk for display only.
TB_MAX_WIDTH = 2048
TB_KERNEL_ZOOM = 4
# Items a dataset may add for the physics losses and metrics (LOLBlurDataset's extras, ShakeBlurDataset).
PHYSICS_KEYS = ('low_sharp', 'low_blur', 'kernel')
PHYSICS_LOSSES = ('sharp_opt', 'kernel_opt', 'reblur_opt', 'reflectance_opt')
PHYSICS_DEFAULTS = {'light': 'linear', 'max_shift': 4}


def _plain(value):
    """YAML option trees (OrderedDicts) as plain dicts/lists, loadable with torch.load(weights_only=True)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def image_name(data):
    """Name for a validation image: the dataset's 'key' (`<video>_<frame>`, unique across LOL-Blur videos)
    when present, else the stem of lq_path."""
    if 'key' in data:
        key = data['key']
        return key[0] if isinstance(key, (list, tuple)) else key
    return osp.splitext(osp.basename(data['lq_path'][0]))[0]


def _metric_accepts(metric_opt, key):
    """Whether the metric function of `metric_opt` takes the keyword `key` (by name or through **kwargs)."""
    parameters = inspect.signature(METRIC_REGISTRY.get(metric_opt['type'])).parameters.values()
    return any(p.name == key or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _check_precision(where, precision, device):
    """The precision a setting asks for on this device ('auto' resolved; see `jude_arch.precision`), logged."""
    resolved = resolve_precision(precision, device, where)
    reason = f' (auto: {auto_precision(device)[1]})' if precision == 'auto' else ''
    get_root_logger().info(f'{where}: {resolved}{reason}')
    return resolved


class TrainingStopped(RuntimeError):
    """Training cannot go on without losing or poisoning the model; the message says why and what to do."""


def _payload_bytes(obj):
    """Bytes of the tensors in a checkpoint-like tree: roughly the size torch.save will write."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_payload_bytes(v) for v in obj)
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


def _save_with_retry(obj, path, what):
    """torch.save to a temporary file renamed into place (no half-written checkpoint), retried 3 times as
    BasicSR does. A save that still fails stops training (BasicSR logs "Just ignore it" and goes on, and a
    run can then end without a single checkpoint); a full disk stops it at once. The temporary file is
    removed whatever happens, Ctrl-C included."""
    tmp = f'{path}.tmp'
    needed = _payload_bytes(obj)
    try:
        for attempt in range(3):
            try:
                torch.save(obj, tmp)
                os.replace(tmp, path)
                return
            except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
                reason, disk_full = _save_failure(path, error, needed)
                if disk_full or attempt == 2:
                    message = f'cannot save the {what} {path}: {reason}'
                    get_root_logger().error(message)
                    raise TrainingStopped(message) from error
                get_root_logger().warning(f'Save {what} error: {reason}, remaining retry times: {2 - attempt}')
                time.sleep(1)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


@MODEL_REGISTRY.register()
class JUDEModel(SRModel):
    """Image restoration model for JUDE and any other BasicSR arch (see the module docstring for options)."""

    def __init__(self, opt):
        if opt.get('num_gpu', 0) and not torch.cuda.is_available():
            raise ValueError(f"options ask for num_gpu: {opt['num_gpu']} but CUDA is not available: set num_gpu: "
                             'auto (or 0) in the YAML, or pass --force_yml num_gpu=0')
        super().__init__(opt)
        self.val_precision = _check_precision('val.precision', (opt.get('val') or {}).get('precision', 'fp32'),
                                              self.device)

    # ---- devices -------------------------------------------------------------------------------------------
    def model_to_device(self, net):
        """Move to the device; DDP without device_ids on CPU (BasicSR passes a CUDA device id)."""
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def _autocast(self, precision):
        dtype = PRECISIONS[precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    # ---- training ------------------------------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        if not train_opt.get('pixel_opt') and not train_opt.get('perceptual_opt'):
            train_opt['pixel_opt'] = dict(DEFAULT_LOSS)
            get_root_logger().info(f'No loss given: using the paper\'s loss {DEFAULT_LOSS}.')
        self._init_precision_and_clipping(train_opt)
        super().init_training_settings()
        self._init_physics_losses(train_opt)
        self._check_schedule('the YAML')

    def _init_precision_and_clipping(self, train_opt):
        self.precision = _check_precision('train.precision', train_opt.get('precision', 'fp32'), self.device)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == 'fp16')
        clip = train_opt.get('grad_clip')
        self.grad_clip = {'max_norm': float(clip)} if isinstance(clip, (int, float)) else clip
        if self.grad_clip is not None and not (isinstance(self.grad_clip, dict) and 'max_norm' in self.grad_clip):
            raise ValueError(f'train.grad_clip must be a number or {{max_norm: ..., norm_type: 2}}, got {clip!r}')
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', DEFAULT_MAX_NONFINITE_STEPS))
        if self.max_nonfinite_steps < 1:
            raise ValueError(f'train.max_nonfinite_steps must be at least 1, got {self.max_nonfinite_steps}')
        self.nonfinite_streak, self.nonfinite_iters, self._scaler_skipped = 0, [], False
        self.batch_keys = []

    def _check_schedule(self, source):
        """BasicSR's cosine schedule crashes once the iteration passes sum(periods): say so before training."""
        total_iter = int(self.opt['train']['total_iter'])
        for scheduler in self.schedulers:
            if isinstance(scheduler, CosineAnnealingRestartLR) and scheduler.cumulative_period[-1] < total_iter:
                raise ValueError(f'train.total_iter ({total_iter}) exceeds the cosine schedule from {source}: '
                                 f'sum(periods) = {scheduler.cumulative_period[-1]} (periods {scheduler.periods}); '
                                 'make the periods add up to at least total_iter')

    def feed_data(self, data):
        """SRModel's lq / gt, plus what the physics losses and metrics use (`PHYSICS_KEYS` found in the data),
        and the batch's keys, named in the warning of a skipped step so that a bad sample can be found."""
        super().feed_data(data)
        self.physics_data = {key: data[key].to(self.device) for key in PHYSICS_KEYS if key in data}
        names = data.get('key', data.get('lq_path'))
        self.batch_keys = [names] if isinstance(names, str) else list(names or [])

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        # A non-finite forward pass also poisons BatchNorm's running statistics: kept to be put back on a skip.
        buffers = list(self.get_bare_model(self.net_g).buffers())
        saved_buffers = [b.detach().clone() for b in buffers]
        with self._autocast(self.precision):
            self.output = self._training_forward()
        output = self.output.float()  # losses in float32 (JUDELoss keeps its FFT in float32 anyway)

        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    l_total += value
                    loss_dict[name] = value
        if self.uses_intermediates:
            l_total += self._physics_losses(loss_dict)

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
            for buffer, saved in zip(buffers, saved_buffers):
                buffer.copy_(saved)
            self.optimizer_g.zero_grad(set_to_none=True)
            self.grad_scaler.update()  # fp16: the scale shrinks as after any overflow
            self.log_dict = OrderedDict(nonfinite_steps=float(self.nonfinite_streak))
            return
        self.grad_scaler.step(self.optimizer_g)  # fp16: skips the step itself when the gradients overflowed
        self.grad_scaler.update()
        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0 and not self._scaler_skipped:
            self.model_ema(decay=self.ema_decay)

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
                       f'{self.opt["path"]["models"]} is the last good model. {_DIVERGED_HINT}')
            get_root_logger().error(message)
            raise TrainingStopped(message)
        return True

    @torch.no_grad()
    def model_ema(self, decay=0.999):
        """EMA of the parameters; buffers (BatchNorm statistics) are copied, which BasicSR's EMA forgets."""
        net_g = self.get_bare_model(self.net_g)
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in net_g.named_parameters():
            ema_params[name].lerp_(param.detach(), 1 - decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buffer in net_g.named_buffers():
            ema_buffers[name].copy_(buffer)

    # ---- inference -----------------------------------------------------------------------------------------
    def _tiled(self, net, x, tile):
        """Restore x tile by tile, blending overlaps with weights that sum to one (`jude_arch.tiling`)."""
        if not isinstance(tile, dict) or not isinstance(tile.get('size'), int):
            raise ValueError(f'val.tile must be {{size: <pixels>, overlap: <pixels>}}, got {tile!r}')
        overlap = tile.get('overlap', default_overlap(self.get_bare_model(net)))
        output = None
        for part in TileGrid(x.shape[-2], x.shape[-1], tile['size'], overlap):
            restored = net(x[..., part.top:part.bottom, part.left:part.right]).float()
            if output is None:
                output = restored.new_zeros(*restored.shape[:2], *x.shape[-2:])
            output[..., part.top:part.bottom, part.left:part.right] += part.weight.to(restored.device) * restored
        return output

    def _restore(self, net, x, with_kernel=False):
        """Run net on x, tiled when `val.tile` asks; returns (output, kernel or None). With tiles every tile
        estimates its own kernel, so no single kernel is returned."""
        tile = (self.opt.get('val') or {}).get('tile')
        if tile:
            return self._tiled(net, x, tile), None
        if with_kernel and isinstance(self.get_bare_model(net), JUDE):
            out = net(x, return_intermediates=True)
            self.sharp_estimate = out['I'][-1]  # I_K, for the physics metrics
            return out['output'], out['kernel']
        return net(x), None

    def test(self, with_kernel=False):
        """Restore self.lq into self.output, clamped to [0, 1] (and self.kernel for JUDE when asked)."""
        # The bare network: under DDP only rank 0 validates, and a DDP forward there could wait for the others.
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        self.sharp_estimate = None
        with torch.inference_mode(), self._autocast(self.val_precision):
            output, self.kernel = self._restore(net, self.lq, with_kernel)
            # Checked before clamping: clamped (or cast to 8 bits) a NaN output becomes a plausible black image.
            self.output_finite = bool(torch.isfinite(output).all())
            self.output_unclamped = output.float()  # for metrics with float_input (the JUDE paper's SSIM, LPIPS)
            self.output = self.output_unclamped.clamp(0, 1)
        if was_training:
            net.train()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        metrics = val_opt.get('metrics') or {}
        self.metric_results = {name: 0 for name in metrics}
        if metrics:
            self._prepare_metrics(metrics)
            self._initialize_best_metric_results(dataset_name)
        sizes = {}
        tb_images = val_opt.get('tb_images', 3) if tb_logger else 0
        physics_opt = self._physics_options()
        physics_scores = {}
        pbar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar', False) else None

        count = 0
        for idx, val_data in enumerate(dataloader):
            name = image_name(val_data)
            self.feed_data(val_data)
            with_physics = physics_opt is not None and bool(self.physics_data)
            self.test(with_kernel=idx < tb_images or with_physics)
            result = tensor2img(self.output)
            size = tuple(self.output.shape[-2:])
            sizes[size] = sizes.get(size, 0) + 1
            metric_data = {'img': result, FLOAT_KEYS[0]: self.output_unclamped}
            if 'gt' in val_data:
                metric_data['img2'] = tensor2img(self.gt)
                metric_data[FLOAT_KEYS[1]] = self.gt.float()
            if idx < tb_images:
                self._log_visuals(tb_logger, f'{dataset_name}/{name}', current_iter, 'gt' in val_data)
            if save_img:
                imwrite(result, self._image_path(dataset_name, name, current_iter))
            if not self.output_finite:
                get_root_logger().warning(f'{dataset_name}/{name}: the network output is not finite; its metrics '
                                          'are NaN')
            for metric, metric_opt in metrics.items():
                data = {k: v for k, v in metric_data.items() if k not in FLOAT_KEYS or _metric_accepts(metric_opt, k)}
                self.metric_results[metric] += calculate_metric(data, metric_opt) if self.output_finite else float('nan')
            if with_physics:
                for metric, values in self._physics_scores(physics_opt).items():
                    physics_scores.setdefault(metric, []).extend(values.tolist())
            self.lq = self.output = self.output_unclamped = self.kernel = self.sharp_estimate = None
            self.physics_data = {}
            if 'gt' in val_data:
                del self.gt
            count += 1
            if pbar:
                pbar.update(1)
                pbar.set_description(f'Test {name}')
        if pbar:
            pbar.close()

        if metrics and count:
            for metric in self.metric_results:
                self.metric_results[metric] /= count
                self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
        if physics_scores:
            self._record_metrics(dataset_name, physics_scores, current_iter)
        if (metrics and count) or physics_scores:
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if not self.opt['is_train']:
            self._write_protocol_summary(dataloader.dataset, count, sizes)

    @staticmethod
    def _prepare_metrics(metrics):
        """Run each metric's `prepare` hook (e.g. LPIPS checks its weight files) before any image is restored."""
        for metric_opt in metrics.values():
            options = dict(metric_opt)
            prepare = getattr(METRIC_REGISTRY.get(options.pop('type')), 'prepare', None)
            if prepare is not None:
                prepare(**options)

    @master_only
    def _write_protocol_summary(self, dataset, count, sizes):
        """Write results/<name>/metrics_<dataset>.json: the metric values with everything that defines them
        (the YAML's `protocol` section, input and ground-truth folders, crop, frame count and sizes, network,
        checkpoint, metric options), so that a number never travels without its protocol."""
        dataset_opt = dataset.opt
        path_opt = self.opt['path']
        summary = {
            'protocol': _plain(self.opt.get('protocol')),
            'dataset': {
                'name': dataset_opt['name'], 'type': dataset_opt.get('type'),
                'dataroot_lq': dataset_opt.get('dataroot_lq'), 'dataroot_gt': dataset_opt.get('dataroot_gt'),
                'crop_to_multiple': dataset_opt.get('crop_to_multiple'), 'frames': count,
                'evaluated_sizes': [{'height': h, 'width': w, 'frames': n} for (h, w), n in sorted(sizes.items())],
            },
            'network_g': _plain(self.opt.get('network_g')),
            'checkpoint': path_opt.get('pretrain_network_g'),
            'param_key_g': path_opt.get('param_key_g', 'params'),
            'val': {key: _plain(self.opt['val'].get(key)) for key in ('precision', 'tile')},
            'metrics': {name: {'value': float(self.metric_results[name]), 'options': _plain(opt)}
                        for name, opt in (self.opt['val'].get('metrics') or {}).items()} if count else {},
        }
        path = osp.join(path_opt['results_root'], f"metrics_{dataset_opt['name']}.json")
        text = json.dumps(summary, indent=2, ensure_ascii=False) + '\n'
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))
        get_root_logger().info(f'Metrics and their protocol: {path}')

    def _image_path(self, dataset_name, name, current_iter):
        vis = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(vis, name, f'{name}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(vis, dataset_name, f'{name}_{suffix}.png')

    def _log_visuals(self, tb_logger, tag, current_iter, has_gt):
        """TensorBoard: input | output | ground truth side by side, and the estimated kernel(s) when known."""
        panels = [self.lq.float().clamp(0, 1), self.output]
        if has_gt:
            panels.append(self.gt.float().clamp(0, 1))
        strip = torch.cat([p[:1].cpu() for p in panels], dim=3)
        if strip.shape[-1] > TB_MAX_WIDTH:
            scale = TB_MAX_WIDTH / strip.shape[-1]
            strip = torch.nn.functional.interpolate(strip, scale_factor=scale, mode='area')
        tb_logger.add_image(f'{tag}/input_output_gt', strip[0], current_iter)
        if self.kernel is not None:
            kernels = self.kernel[0].float().cpu()  # B×k×k, shown side by side, each scaled to its maximum
            kernels = kernels / kernels.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            image = torch.cat(list(kernels), dim=1)[None]
            image = image.repeat_interleave(TB_KERNEL_ZOOM, 1).repeat_interleave(TB_KERNEL_ZOOM, 2)
            tb_logger.add_image(f'{tag}/kernel', image, current_iter)

    # ---- physics: auxiliary losses and metrics (optional) ----------------------------------------------------
    def _init_physics_losses(self, train_opt):
        """Build the auxiliary losses given in the YAML (`PHYSICS_LOSSES`); none by default."""
        built = {key: build_loss(train_opt[key]).to(self.device) for key in PHYSICS_LOSSES if train_opt.get(key)}
        self.cri_sharp, self.cri_kernel, self.cri_reblur, self.cri_reflectance = (built.get(key)
                                                                                   for key in PHYSICS_LOSSES)
        self.uses_intermediates = bool(built)
        if built and not isinstance(self.get_bare_model(self.net_g), JUDE):
            raise ValueError(f'train.{", ".join(built)}: these losses need JUDE\'s intermediates (I_K, the kernel), '
                             f'but network_g is {self.opt["network_g"]["type"]}; remove them')

    def _training_forward(self):
        """The network's output; with auxiliary losses, the intermediates are kept for `_physics_losses`."""
        if not self.uses_intermediates:
            return self.net_g(self.lq)
        self.train_intermediates = self.net_g(self.lq, return_intermediates=True)
        return self.train_intermediates['output']

    def _physics_data(self, key, loss):
        if key not in self.physics_data:
            raise ValueError(f"train.{loss} needs '{key}' in the training data: give LOLBlurDataset "
                             f'dataroot_{key} (or train on ShakeBlurDataset), or remove train.{loss}')
        return self.physics_data[key]

    def _physics_losses(self, loss_dict):
        """The auxiliary losses of this step, added to loss_dict; returns their sum."""
        out, self.train_intermediates = self.train_intermediates, None
        kernel = out['kernel']
        if (self.cri_kernel or self.cri_reblur) and kernel.shape[1] != 1:
            raise ValueError(f'train.kernel_opt / reblur_opt compare one kernel per image; this JUDE estimates '
                             f'{kernel.shape[1]} basis kernels (num_kernels); remove them')
        total = 0
        if self.cri_sharp:
            loss_dict['l_sharp'] = self.cri_sharp(out['I'][-1].float(), self._physics_data('low_sharp', 'sharp_opt'))
            total += loss_dict['l_sharp']
        if self.cri_kernel:
            loss_dict['l_kernel'] = self.cri_kernel(kernel, self._physics_data('kernel', 'kernel_opt'))
            total += loss_dict['l_kernel']
        if self.cri_reblur:
            # The noise-free blur where the data has it, else the noisy input itself.
            blurred = self.physics_data.get('low_blur', self.lq)
            loss_dict['l_reblur'] = self.cri_reblur(kernel, self._physics_data('low_sharp', 'reblur_opt'), blurred)
            total += loss_dict['l_reblur']
        if self.cri_reflectance:
            # I = L ⊙ R: with R the scene's reflectance (the normal-light image), L is the illumination I / R.
            loss_dict['l_reflectance'] = self.cri_reflectance(out['R'][-1].float(), self.gt)
            total += loss_dict['l_reflectance']
        return total

    def _physics_options(self):
        """`val.physics` with its defaults, or None when switched off."""
        options = (self.opt.get('val') or {}).get('physics', True)
        if options is False or options is None:
            return None
        options = {} if options is True else dict(options)
        unknown = set(options) - set(PHYSICS_DEFAULTS)
        if unknown:
            raise ValueError(f'val.physics: unknown option(s) {sorted(unknown)}; known: {sorted(PHYSICS_DEFAULTS)}')
        return {**PHYSICS_DEFAULTS, **options}

    def _physics_scores(self, options):
        """Per-image physics metrics of the last `test` (JUDE, untiled), for what the data allows:
        kernel_entropy always, reblur_psnr with low_sharp and low_blur, kernel_similarity with the true kernel,
        i_k_psnr with low_sharp. Every value is a tensor of N scores."""
        if self.kernel is None or self.kernel.shape[1] != 1:
            return {}  # tiled (one kernel per tile) or several basis kernels: no single kernel to score
        kernel, data, scores = self.kernel.float(), self.physics_data, {}
        scores['kernel_entropy'] = physics.kernel_entropy(kernel)[:, 0]
        if 'low_sharp' in data and 'low_blur' in data:
            scores['reblur_psnr'] = physics.reblur_psnr(data['low_sharp'], kernel, data['low_blur'], options['light'])
        if 'kernel' in data:
            scores['kernel_similarity'] = physics.kernel_similarity(kernel, data['kernel'], options['max_shift'])
        if 'low_sharp' in data and self.sharp_estimate is not None:
            scores['i_k_psnr'] = physics.psnr_8bit(self.sharp_estimate.float(), data['low_sharp'])
        return scores

    def _record_metrics(self, dataset_name, scores, current_iter):
        """Average per-image scores into metric_results and keep their best values (logged like val.metrics)."""
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        record = self.best_metric_results.setdefault(dataset_name, {})
        for metric, values in scores.items():
            better = 'lower' if metric == 'kernel_entropy' else 'higher'
            record.setdefault(metric, dict(better=better, val=float('-inf' if better == 'higher' else 'inf'), iter=-1))
            self.metric_results[metric] = sum(values) / len(values)
            self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def network_options(self, net_label='net_g'):
        """Options that rebuild the saved network: {'type': 'JUDE', **net.config} for JUDE, else the YAML's."""
        net = self.get_bare_model(getattr(self, net_label))
        if isinstance(net, JUDE):
            return {'type': 'JUDE', **_plain(net.config)}
        return _plain(self.opt[f'network_{net_label[len("net_"):]}'])

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's {'params', 'params_ema'} checkpoint plus 'network_g' (the options that rebuild the net)."""
        label = 'latest' if current_iter == -1 else current_iter
        save_path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            bad = [name for name, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
            if bad:
                message = (f'not writing {save_path}: {key} holds non-finite values ({bad[0]}, ...); the previous '
                           f'checkpoint in {self.opt["path"]["models"]} is the last good model. {_DIVERGED_HINT}')
                get_root_logger().error(message)
                raise TrainingStopped(message)
            save_dict[key] = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v.cpu())
                                         for k, v in state.items())
        save_dict[f'network_{net_label[len("net_"):]}'] = self.network_options(net_label)
        _save_with_retry(save_dict, save_path, 'model')

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state (plus the fp16 gradient scaler), written atomically."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if self.grad_scaler.is_enabled():
            state['grad_scaler'] = self.grad_scaler.state_dict()
        _save_with_retry(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                         'training state')

    def resume_training(self, resume_state):
        """BasicSR's resume (the saved schedule wins over the YAML) plus the fp16 gradient scaler."""
        super().resume_training(resume_state)
        self._check_schedule('the training state being resumed')
        if 'grad_scaler' in resume_state and self.grad_scaler.is_enabled():
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
