"""JUDEModel's optional physics: auxiliary losses on the intermediates (I_K, the kernel, R_K, L_K) and the
physics metrics of validation (reblur PSNR, kernel similarity and entropy, I_K PSNR, L_K's chroma and
structure), all off unless the YAML asks and the data carries what they need (docs/training.md, "Physics";
docs/physics.md)."""
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger

from .. import physics
from ..archs import JUDE
from ..losses.illumination_prior import illumination_chroma, illumination_gradient_ratio

# Items a dataset may add for the physics losses and metrics (LOLBlurDataset's extras, ShakeBlurDataset).
PHYSICS_KEYS = ('low_sharp', 'low_blur', 'kernel')
# The auxiliary losses' keys under `train:`, with the name each logs under.
PHYSICS_LOSS_NAMES = {'sharp_opt': 'l_sharp', 'kernel_opt': 'l_kernel', 'reblur_opt': 'l_reblur',
                      'reflectance_opt': 'l_reflectance', 'illumination_opt': 'l_illumination',
                      'illumination_chroma_opt': 'l_illum_chroma', 'illumination_smoothness_opt': 'l_illum_smooth'}
PHYSICS_LOSSES = tuple(PHYSICS_LOSS_NAMES)
PHYSICS_DEFAULTS = {'light': 'linear', 'max_shift': 4}
LOWER_IS_BETTER = ('kernel_entropy', 'illumination_chroma', 'illumination_gradient_ratio')


class PhysicsMixin:
    """Auxiliary losses (`train.sharp_opt`, `kernel_opt`, `reblur_opt`, `reflectance_opt`, the illumination
    target `illumination_opt` and prior `illumination_chroma_opt`, `illumination_smoothness_opt`) and metrics
    (`val.physics`)."""

    def _init_physics_losses(self, train_opt):
        """Build the auxiliary losses given in the YAML (`PHYSICS_LOSSES`); none by default."""
        built = {key: build_loss(train_opt[key]).to(self.device) for key in PHYSICS_LOSSES if train_opt.get(key)}
        self.physics_losses = built
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
        losses = self.physics_losses
        if ('kernel_opt' in losses or 'reblur_opt' in losses) and kernel.shape[1] != 1:
            raise ValueError(f'train.kernel_opt / reblur_opt compare one kernel per image; this JUDE estimates '
                             f'{kernel.shape[1]} basis kernels (num_kernels); remove them')
        sharp, illumination = out['I'][-1].float(), out['L'][-1].float()
        # What each loss compares; only the losses the YAML gives are evaluated (and ask for their data).
        arguments = {
            'sharp_opt': lambda: (sharp, self._physics_data('low_sharp', 'sharp_opt')),
            'kernel_opt': lambda: (kernel, self._physics_data('kernel', 'kernel_opt')),
            # The noise-free blur where the data has it, else the noisy input itself.
            'reblur_opt': lambda: (kernel, self._physics_data('low_sharp', 'reblur_opt'),
                                   self.physics_data.get('low_blur', self.lq)),
            # I = L ⊙ R: with R the scene's reflectance (the normal-light image), L is the illumination I / R.
            'reflectance_opt': lambda: (out['R'][-1].float(), self.gt),
            # ... and L the light that darkened the ground truth into low_sharp, grey (IlluminationTargetLoss).
            'illumination_opt': lambda: (illumination, self._physics_data('low_sharp', 'illumination_opt'), self.gt),
            # The Retinex prior: grey light, smooth where the sharp image I_K is flat.
            'illumination_chroma_opt': lambda: (illumination, ),
            'illumination_smoothness_opt': lambda: (illumination, sharp),
        }
        total = 0
        for key, loss in losses.items():
            name = PHYSICS_LOSS_NAMES[key]
            loss_dict[name] = loss(*arguments[key]())
            total += loss_dict[name]
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

    def _physics_scores(self, options, dataset_name=None):
        """Per-image physics metrics of the last `test` (JUDE, untiled), for what the data allows:
        kernel_entropy always, reblur_psnr with low_sharp and low_blur, kernel_similarity with the true kernel,
        i_k_psnr with low_sharp, and L_K's illumination_chroma and illumination_gradient_ratio (against I_K)
        when the network returned them. Every value is a tensor of N scores."""
        if self.kernel is None or self.kernel.shape[1] != 1:
            return {}  # tiled (one kernel per tile) or several basis kernels: no single kernel to score
        kernel, data, scores = self.kernel.float(), self.physics_data, {}
        scores['kernel_entropy'] = physics.kernel_entropy(kernel)[:, 0]
        illumination = getattr(self, 'illumination_estimate', None)
        if illumination is not None and self.sharp_estimate is not None:
            scores['illumination_chroma'] = illumination_chroma(illumination)
            scores['illumination_gradient_ratio'] = illumination_gradient_ratio(illumination, self.sharp_estimate)
        if 'low_sharp' in data and 'low_blur' in data:
            scores['reblur_psnr'] = physics.reblur_psnr(data['low_sharp'], kernel, data['low_blur'], options['light'])
            if dataset_name is not None:
                self._add_kernel_references(dataset_name, kernel.shape[-1], options['light'])
        if 'kernel' in data:
            scores['kernel_similarity'] = physics.kernel_similarity(kernel, data['kernel'], options['max_shift'])
        if 'low_sharp' in data and self.sharp_estimate is not None:
            scores['i_k_psnr'] = physics.psnr_8bit(self.sharp_estimate.float(), data['low_sharp'])
        return scores

    def _add_kernel_references(self, dataset_name, size, light):
        """Score the reference kernels on this batch, on the first validation of `dataset_name` only (the frames
        are the same at every validation: a fixed set, or seeded draws)."""
        if not hasattr(self, 'kernel_references'):
            self.kernel_references, self._pending_references = {}, {}
        if dataset_name in self.kernel_references:
            return
        data = self.physics_data
        pending = self._pending_references.setdefault(dataset_name, {})
        for name, values in physics.reference_reblur_psnr(data['low_sharp'], data['low_blur'], data.get('kernel'),
                                                          size, light).items():
            pending.setdefault(name, []).extend(values.tolist())

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        """The metrics as SRModel logs them, then how the estimate's re-blur PSNR reads against the reference
        kernels' on the same frames (`physics.compare_with_references`); the references also go to TensorBoard."""
        super()._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        pending = getattr(self, '_pending_references', {}).pop(dataset_name, None)
        if pending:
            self.kernel_references[dataset_name] = {name: sum(v) / len(v) for name, v in pending.items()}
        references = getattr(self, 'kernel_references', {}).get(dataset_name)
        if references is None or 'reblur_psnr' not in self.metric_results:
            return
        estimate = self.metric_results['reblur_psnr']
        get_root_logger().info(f'Validation {dataset_name}: re-blur PSNR of the estimated kernels {estimate:.2f} dB: '
                               f'{physics.compare_with_references(estimate, references)}')
        if tb_logger:
            for name, value in references.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/reblur_psnr_{name}', value, current_iter)

    def _record_metrics(self, dataset_name, scores, current_iter):
        """Average per-image scores into metric_results and keep their best values (logged like val.metrics)."""
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        record = self.best_metric_results.setdefault(dataset_name, {})
        for metric, values in scores.items():
            better = 'lower' if metric in LOWER_IS_BETTER else 'higher'
            record.setdefault(metric, dict(better=better, val=float('-inf' if better == 'higher' else 'inf'), iter=-1))
            self.metric_results[metric] = sum(values) / len(values)
            self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
