"""JUDEModel's optional physics: auxiliary losses on the intermediates (I_K, the kernel, R_K) and the physics
metrics of validation (reblur PSNR, kernel similarity and entropy, I_K PSNR), all off unless the YAML asks and
the data carries what they need (README, "JUDE's physics")."""
from basicsr.losses import build_loss

from .. import physics
from ..archs import JUDE

# Items a dataset may add for the physics losses and metrics (LOLBlurDataset's extras, ShakeBlurDataset).
PHYSICS_KEYS = ('low_sharp', 'low_blur', 'kernel')
PHYSICS_LOSSES = ('sharp_opt', 'kernel_opt', 'reblur_opt', 'reflectance_opt')
PHYSICS_DEFAULTS = {'light': 'linear', 'max_shift': 4}


class PhysicsMixin:
    """Auxiliary losses (`train.sharp_opt`, `kernel_opt`, `reblur_opt`, `reflectance_opt`) and metrics
    (`val.physics`)."""

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
