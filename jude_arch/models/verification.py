"""Checkpoints known to restore an image: nothing is saved, or called good, that restores the probe image with
non-finite values.

Finite weights are not enough: after a step that threw them far off (a learning rate of 1000 moves them to
|w| ≈ 1000), every weight can be finite and every output inf or NaN. So before a checkpoint is written, each
network it holds (`params`, and `params_ema` with an EMA) restores the probe image, in eval mode with the
validation settings (`val.precision`, `val.tile`), and the output must be finite; a checkpoint the run starts or
resumes from is checked alike. The probe is the first frame of the first validation set (its LQ, as validation
feeds it), or, without a validation set or for a dataset type that does not offer its first frame
(`first_input`), a fixed 64×64 image. Messages name the last verified checkpoint.
"""
import torch
from basicsr.utils import get_root_logger

from ..checkpoint_io import CheckpointError
from ..precision import autocast

PROBE_SIZE = 64


def fixed_probe():
    """A fixed, dark 64×64 RGB image with smooth gradients and sharp edges (1×3×64×64, values in [0.02, 0.3])."""
    y, x = torch.meshgrid(torch.linspace(0, 1, PROBE_SIZE), torch.linspace(0, 1, PROBE_SIZE), indexing='ij')
    checker = ((x * 8).floor() + (y * 8).floor()) % 2
    return torch.stack([0.02 + 0.2 * x, 0.02 + 0.15 * y, 0.02 + 0.1 * checker + 0.05 * x * y])[None]


def probe_input(opt):
    """(image 1×C×H×W, description) of the probe for the options `opt` (see the module docstring)."""
    from basicsr.utils.registry import DATASET_REGISTRY

    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if phase.split('_')[0] != 'val':
            continue
        try:
            first_input = getattr(DATASET_REGISTRY.get(dataset_opt['type']), 'first_input', None)
        except KeyError:
            first_input = None
        if first_input is not None:
            image, key = first_input(dataset_opt)
            return image, f'the validation frame {key} of {dataset_opt["name"]}'
        break
    return fixed_probe(), f'a fixed {PROBE_SIZE}×{PROBE_SIZE} probe image'


def _finite(output):
    if torch.is_tensor(output):
        return bool(torch.isfinite(output).all())
    if isinstance(output, (tuple, list)):
        return all(_finite(part) for part in output)
    if isinstance(output, dict):
        return all(_finite(part) for part in output.values())
    return True


class VerifiedCheckpoints:
    """JUDEModel's part that verifies what it saves or starts from (see the module docstring)."""

    verified_checkpoint = None  # the last checkpoint known to restore the probe image with finite values
    _probe = None

    def probe(self):
        """(image on the device, description), found once."""
        if self._probe is None:
            image, what = probe_input(self.opt)
            self._probe = image.to(self.device), what
        return self._probe

    def unrestoring_networks(self):
        """The param keys ('params', 'params_ema') of the networks whose output on the probe is not finite."""
        nets = [('params', self.get_bare_model(self.net_g))]
        if hasattr(self, 'net_g_ema'):
            nets.append(('params_ema', self.net_g_ema))
        image = self.probe()[0]
        bad = []
        for key, net in nets:
            was_training = net.training
            net.eval()
            try:
                with torch.inference_mode(), autocast(self.device, self.val_precision):
                    output, _ = self._restore(net, image)
                if not _finite(output):
                    bad.append(key)
            finally:
                net.train(was_training)
        return bad

    def verify_before_saving(self, path):
        """Stop training (`TrainingStopped`, naming the last verified checkpoint) instead of writing `path` when
        its networks do not restore the probe image with finite values."""
        from .training_guards import DIVERGED_HINT, TrainingStopped

        bad = self.unrestoring_networks()
        if bad:
            message = (f'not writing {path}: its {bad[0]} weights restore {self.probe()[1]} with non-finite values '
                       f'(training diverged). {self.verified_sentence()} {DIVERGED_HINT}')
            get_root_logger().error(message)
            raise TrainingStopped(message)

    def verify_start(self):
        """A run that starts or resumes from a checkpoint (`path.pretrain_network_g`) checks that it restores the
        probe image with finite values; it is then the run's first verified checkpoint."""
        path = self.opt['path'].get('pretrain_network_g')
        if not path:
            return
        bad = self.unrestoring_networks()
        if bad:
            raise CheckpointError(f'{path}: its {bad[0]} weights restore {self.probe()[1]} with non-finite values '
                                  '(saved after training diverged); start from an earlier checkpoint')
        self.verified_checkpoint = path
        get_root_logger().info(f'{path} restores {self.probe()[1]} with finite values.')

    def verified_sentence(self):
        """Where the last good model is, for the stop messages."""
        if self.verified_checkpoint:
            return (f'The last verified checkpoint (it restores {self.probe()[1]} with finite values) is '
                    f'{self.verified_checkpoint}.')
        return 'No checkpoint of this run has been verified yet: it started from random weights.'
