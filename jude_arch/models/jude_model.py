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
      max_nonfinite_steps: 10  # a bad step updates nothing (weights, optimizer state, EMA, BatchNorm statistics);
                               # this many in a row stop training with an error. Bad: a loss or gradient norm
                               # that is not finite, or a step the divergence guard catches:
      divergence_guard: {max_update: 1, update_factor: 100, loss_factor: 100, window: 100, min_history: 20}
                               # (the defaults; false: off) see step_guard.py
      # Auxiliary losses on JUDE's physics, all off by default (the paper trains on the output only):
      sharp_opt: ~             # e.g. {type: L1Loss, loss_weight: 0.5}: I_K against `low_sharp`
      kernel_opt: ~            # e.g. {type: KernelLoss, loss_weight: 0.05}: k̂ against the true kernel
      reblur_opt: ~            # e.g. {type: ReblurLoss, light: linear}: blur(low_sharp, k̂) against the blur
      reflectance_opt: ~       # e.g. {type: L1Loss, loss_weight: 0.5}: R_K against the ground truth
      illumination_opt: ~      # e.g. {type: IlluminationTargetLoss, loss_weight: 0.5}: L_K against the scene's grey light
    val:
      precision: fp32          # autocast for validation / testing (also auto)
      tile: ~                  # {size: 512, overlap: 64}: tiled validation, seamless blending (restore/tiling.py);
                               # overlap defaults to two kernel widths
      tb_images: 3             # first N validation images shown in TensorBoard
      physics: {light: linear, max_shift: 4}   # metrics of the physics when the data has low_sharp, low_blur
                               # or kernel (`physics: false`: off): reblur_psnr, kernel_similarity,
                               # kernel_entropy, i_k_psnr (see jude_arch.physics)
    protocol: ~                # testing: a free-form description of the evaluation protocol, written with the
                               # metric values to results/<name>/metrics_<dataset>.json

The model is this file plus parts by concern: `validation.py` (validation and testing), `physics_terms.py`
(the optional physics losses and metrics), `step_guard.py` (non-finite and diverging steps), `verification.py`
(only checkpoints that restore an image are saved) and `training_guards.py` (safe checkpoint saving). Training
states also hold the data position, the random generators and the step guard's history, so that a resumed run
continues exactly as an uninterrupted one (`jude_arch.data.sampling`).

Metrics get BasicSR's 8-bit images (`img`, `img2`) and, when their function accepts them, the float tensors
`img_float` (the output before clamping and rounding) and `img2_float` (the ground truth), which
`jude_arch.metrics` use with `float_input: true`. A metric function with a `prepare(**options)` attribute is
called before the first image is restored, so that missing weights stop the run at once.
"""
from collections import OrderedDict
from os import path as osp

import torch
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..archs import JUDE
from ..archs.compiling import compile_network, compile_parts
from ..checkpoint_io import plain, strip_module_prefix
from ..data.sampling import data_position, random_states, set_random_states
from ..option_check import OptionError
from ..precision import auto_precision, autocast
from ..precision import resolve as resolve_precision
from .physics_terms import PHYSICS_KEYS, PHYSICS_LOSSES, PhysicsMixin
from .step_guard import StepGuard
from .training_guards import check_finite_state, save_with_retry
from .validation import ValidationMixin
from .verification import VerifiedCheckpoints

DEFAULT_LOSS = {'type': 'JUDELoss', 'fft_weight': 0.1}


def _check_precision(where, precision, device):
    """The precision a setting asks for on this device ('auto' resolved; see `jude_arch.precision`), logged."""
    resolved = resolve_precision(precision, device, where)
    reason = f' (auto: {auto_precision(device)[1]})' if precision == 'auto' else ''
    get_root_logger().info(f'{where}: {resolved}{reason}')
    return resolved


@MODEL_REGISTRY.register()
class JUDEModel(ValidationMixin, PhysicsMixin, StepGuard, VerifiedCheckpoints, SRModel):
    """Image restoration model for JUDE and any other BasicSR arch (see the module docstring for options)."""

    # The top-level, `train` and `val` keys read here on top of SRModel's (the module docstring); the options check
    # (`jude_arch.option_check`) refuses any other key of these sections.
    OPTIONS = ('protocol', )
    TRAIN_OPTIONS = ('precision', 'grad_clip', 'max_nonfinite_steps', 'divergence_guard', 'compile') + PHYSICS_LOSSES
    VAL_OPTIONS = ('precision', 'tile', 'tb_images', 'physics', 'compile')

    def __init__(self, opt):
        if opt.get('num_gpu', 0) and not torch.cuda.is_available():
            raise ValueError(f"options ask for num_gpu: {opt['num_gpu']} but CUDA is not available: set num_gpu: "
                             'auto (or 0) in the YAML, or pass --force_yml num_gpu=0')
        self.data_position = None
        super().__init__(opt)
        self.val_precision = _check_precision('val.precision', (opt.get('val') or {}).get('precision', 'fp32'),
                                              self.device)
        if self.is_train:
            self.verify_start()
        else:  # testing (training compiles in init_training_settings)
            self._compile('val.compile', self.net_g, (opt.get('val') or {}).get('compile', False))

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

    # ---- training ------------------------------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        if not train_opt.get('pixel_opt') and not train_opt.get('perceptual_opt'):
            train_opt['pixel_opt'] = dict(DEFAULT_LOSS)
            get_root_logger().info(f'No loss given: using the paper\'s loss {DEFAULT_LOSS}.')
        self._init_precision_and_clipping(train_opt)
        self._compile('train.compile', self.net_g, train_opt.get('compile', False))
        super().init_training_settings()
        self._init_physics_losses(train_opt)
        self._check_schedule('the YAML')
        if self.ema_decay > 0:  # validation and testing run the EMA network
            self._compile('val.compile', self.net_g_ema, (self.opt.get('val') or {}).get('compile', False))

    def _compile(self, where, net, parts):
        """Compile `net` in place as the option `where` asks (`jude_arch.archs.compiling`), and log it."""
        try:
            parts = compile_parts(parts, where)
        except ValueError as error:
            raise ValueError(f'options: {error}') from None
        if parts:
            compile_network(self.get_bare_model(net), parts)
            get_root_logger().info(f'{where}: torch.compile of the {parts} (the first iterations compile)')

    def _init_precision_and_clipping(self, train_opt):
        self.precision = _check_precision('train.precision', train_opt.get('precision', 'fp32'), self.device)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == 'fp16')
        clip = train_opt.get('grad_clip')
        self.grad_clip = {'max_norm': float(clip)} if isinstance(clip, (int, float)) else clip
        if self.grad_clip is not None and not (isinstance(self.grad_clip, dict) and 'max_norm' in self.grad_clip):
            raise ValueError(f'train.grad_clip must be a number or {{max_norm: ..., norm_type: 2}}, got {clip!r}')
        self._init_step_guard(train_opt)
        self.batch_keys = []

    def _check_schedule(self, source):
        """BasicSR's cosine schedule crashes once the iteration passes sum(periods): say so before training."""
        total_iter = int(self.opt['train']['total_iter'])
        for scheduler in self.schedulers:
            if isinstance(scheduler, CosineAnnealingRestartLR) and scheduler.cumulative_period[-1] < total_iter:
                raise OptionError(f'train.total_iter ({total_iter}) exceeds the cosine schedule from {source}: '
                                  f'sum(periods) = {scheduler.cumulative_period[-1]} (periods {scheduler.periods}); '
                                  'make the periods add up to at least total_iter')

    def feed_data(self, data):
        """SRModel's lq / gt, plus what the physics losses and metrics use (`PHYSICS_KEYS` found in the data),
        and the batch's keys, named in the warning of a skipped step so that a bad sample can be found."""
        super().feed_data(data)
        self.physics_data = {key: data[key].to(self.device) for key in PHYSICS_KEYS if key in data}
        names = data.get('key', data.get('lq_path'))
        self.batch_keys = [names] if isinstance(names, str) else list(names or [])
        if 'draw' in data:  # training data drawn by `jude_arch.data.sampling`: where the epoch is, for resuming
            self.data_position = data_position(data['draw'], self.opt.get('world_size', 1))

    def optimize_parameters(self, current_iter):
        self._begin_step()
        with autocast(self.device, self.precision):
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

        self._apply_step(current_iter, l_total, loss_dict)

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

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def network_options(self, net_label='net_g'):
        """Options that rebuild the saved network: {'type': 'JUDE', **net.config} for JUDE, else the YAML's."""
        net = self.get_bare_model(getattr(self, net_label))
        if isinstance(net, JUDE):
            return {'type': 'JUDE', **plain(net.config)}
        return plain(self.opt[f'network_{net_label[len("net_"):]}'])

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
            check_finite_state(state, key, save_path, self.verified_sentence())
            save_dict[key] = strip_module_prefix(OrderedDict((k, v.cpu()) for k, v in state.items()))
        save_dict[f'network_{net_label[len("net_"):]}'] = self.network_options(net_label)
        save_with_retry(save_dict, save_path, 'model')

    def save(self, epoch, current_iter):
        """SRModel's save, once the networks are verified to restore the probe image (`verification.py`)."""
        label = 'latest' if current_iter == -1 else current_iter
        path = osp.join(self.opt['path']['models'], f'net_g_{label}.pth')
        self.verify_before_saving(path)
        super().save(epoch, current_iter)
        self.verified_checkpoint = path

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the fp16 gradient scaler, the data position, the random generators and
        the step guard's history (a resumed run continues exactly), written atomically."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers],
                 'random_states': random_states(), 'step_guard': self.step_guard_state()}
        if self.data_position is not None:
            state['data_position'] = self.data_position
        if self.grad_scaler.is_enabled():
            state['grad_scaler'] = self.grad_scaler.state_dict()
        save_with_retry(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                        'training state')

    def resume_training(self, resume_state):
        """BasicSR's resume (the saved schedule wins over the YAML) plus the fp16 gradient scaler, the random
        generators and the step guard's history (the data position is the sampler's: `resume.py`)."""
        super().resume_training(resume_state)
        self._check_schedule('the training state being resumed')
        if 'grad_scaler' in resume_state and self.grad_scaler.is_enabled():
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        self.load_step_guard_state(resume_state.get('step_guard'))
        self.resumed_from = (self.opt['path'].get('resume_state'), resume_state['iter'])
        if 'random_states' in resume_state:
            set_random_states(resume_state['random_states'])
