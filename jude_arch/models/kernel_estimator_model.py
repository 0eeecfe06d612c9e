"""KernelEstimatorModel: pretraining of JUDE's kernel estimator on its own ("phase 0").

Trained end to end inside JUDE, the estimator gets almost no gradient (the kernel reaches the output only through
a softmax over k² taps, the hyper-net and the data steps) and stays near uniform. Here it learns from the physics
directly: the dark sharp image blurred with the estimated kernel must give the observed blurred image
(`ReblurLoss`), and, where the true kernel is known (synthetic data), the kernel must match it up to a translation
(`KernelLoss`). The network is `JUDEKernelNet`, whose weights are named as inside JUDE (`kernel_estimator.*`):
phase 1 starts from them with `pretrain_network_g: <this run>/models/net_g_latest.pth` and `strict_load_g: false`.

YAML (see options/train_kernel_estimator.yml):
    train:
      reblur_opt: {type: ReblurLoss, light: linear}   # the default; blurred target: low_blur, else lq
      kernel_opt: ~            # e.g. {type: KernelLoss, loss_weight: 1, max_shift: 4}; needs the true kernels
      precision, grad_clip, ema_decay, optim_g, scheduler: as for JUDEModel
    val:
      physics: {light: linear, max_shift: 4}   # reblur_psnr, kernel_similarity, kernel_entropy are logged
      tb_images: 3             # estimated | true kernel shown in TensorBoard for the first N images
"""
from collections import OrderedDict

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from ..archs import JUDEKernelNet
from ..physics import center_pad
from ..precision import autocast
from .jude_model import JUDEModel
from .validation import TB_KERNEL_ZOOM

DEFAULT_REBLUR = {'type': 'ReblurLoss', 'light': 'linear'}


@MODEL_REGISTRY.register()
class KernelEstimatorModel(JUDEModel):
    """Train a `JUDEKernelNet` with the re-blur loss (and the kernel loss where true kernels are known)."""

    def __init__(self, opt):
        super().__init__(opt)
        net = self.get_bare_model(self.net_g)
        if not isinstance(net, JUDEKernelNet):
            raise ValueError(f"KernelEstimatorModel trains network_g type JUDEKernelNet, got "
                             f"{opt['network_g']['type']}")
        if net.config['num_kernels'] != 1:
            raise ValueError(f"KernelEstimatorModel: num_kernels must be 1 (one kernel per image), got "
                             f"{net.config['num_kernels']}")

    def init_training_settings(self):
        train_opt = self.opt['train']
        for key in ('pixel_opt', 'perceptual_opt', 'sharp_opt'):
            if train_opt.get(key):
                raise ValueError(f'train.{key}: the kernel estimator has no image output; use reblur_opt and '
                                 'kernel_opt')
        self._init_precision_and_clipping(train_opt)
        self.cri_reblur = build_loss(dict(train_opt.get('reblur_opt') or DEFAULT_REBLUR)).to(self.device)
        self.cri_kernel = build_loss(dict(train_opt['kernel_opt'])).to(self.device) if train_opt.get('kernel_opt') \
            else None
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            self.model_ema(0)  # starts as the (possibly pretrained) network
            self.net_g_ema.eval()
        self.net_g.train()
        self.setup_optimizers()
        self.setup_schedulers()
        self._check_schedule('the YAML')

    def optimize_parameters(self, current_iter):
        self._begin_step()
        with autocast(self.device, self.precision):
            kernel, _ = self.net_g(self.lq)
        kernel = kernel.float()
        self.kernel = kernel.detach()
        loss_dict = OrderedDict()
        sharp = self._physics_data('low_sharp', 'reblur_opt')
        # The noise-free blur where the data has it (ShakeBlurDataset, LOL-Blur's low_blur), else the input.
        loss_dict['l_reblur'] = self.cri_reblur(kernel, sharp, self.physics_data.get('low_blur', self.lq))
        l_total = loss_dict['l_reblur']
        if self.cri_kernel:
            loss_dict['l_kernel'] = self.cri_kernel(kernel, self._physics_data('kernel', 'kernel_opt'))
            l_total = l_total + loss_dict['l_kernel']
        self._apply_step(current_iter, l_total, loss_dict)  # bad steps are skipped as JUDEModel's are

    def test(self, with_kernel=True):
        """Estimate the kernels of self.lq into self.kernel (N×1×k×k)."""
        with self.evaluation() as net:
            self.kernel = net(self.lq)[0].float()
        self.sharp_estimate = None

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        options = self._physics_options()
        if options is None:  # val.physics: false leaves the estimator nothing to measure
            return
        tb_images = self.opt['val'].get('tb_images', 3) if tb_logger else 0
        scores = {}
        for idx, val_data in enumerate(dataloader):
            self.feed_data(val_data)
            self.test()
            for metric, values in self._physics_scores(options, dataset_name).items():
                scores.setdefault(metric, []).extend(values.tolist())
            if idx < tb_images:
                self._log_kernels(tb_logger, f'{dataset_name}/{idx:03d}', current_iter)
            self.lq = self.kernel = None
            self.physics_data = {}
        self.metric_results = {}
        if scores:
            self._record_metrics(dataset_name, scores, current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _log_kernels(self, tb_logger, tag, current_iter):
        """TensorBoard: the estimated kernel beside the true one (when known), each scaled to its maximum."""
        kernels = [self.kernel[0, 0].cpu()]
        if 'kernel' in self.physics_data:
            true = self.physics_data['kernel'][0, 0].float().cpu()
            size = max(true.shape[-1], kernels[0].shape[-1])
            kernels = [center_pad(k, size) for k in kernels + [true]]
        image = torch.cat([k / k.max().clamp_min(1e-12) for k in kernels], dim=1)[None]
        image = image.repeat_interleave(TB_KERNEL_ZOOM, 1).repeat_interleave(TB_KERNEL_ZOOM, 2)
        tb_logger.add_image(f'{tag}/kernel_estimated_true', image, current_iter)
