"""When the train and test entry points let cuDNN autotune convolutions (docs/gpu.md, "cuDNN autotuning").

BasicSR's train and test pipelines set `torch.backends.cudnn.benchmark = True` for the whole run. With it on,
the first convolution of each new shape times cuDNN's candidate algorithms and keeps the fastest, a search that
pays for itself only where a shape repeats many times. Memory is another matter: for the first call of each
shape PyTorch (its cuDNN v8 API path) allocates one workspace as large as the hungriest candidate plan that fits
in the largest free block, with autotuning on or off. On an H200 one 1120×640 fp32 forward peaked at 130 GiB
allocated during its first call either way, 1.8 GiB afterwards: the peak measures that workspace, not JUDE.
Measured there, autotuning bought nothing (fp32 inference 0.122 s both ways; phase 1's bf16 step 0.299 s with,
0.284 s without); phase 1 in fp32, the phase files' precision, is still to be measured (docs/gpu.md).

JUDE's policy, the options' `cudnn` section (both keys optional):

    cudnn:
      benchmark_train: true   # training iterations: fixed-size crops, searched once, then reused every step
      benchmark_val: false    # validation and test.py: whole images whose sizes vary with the data set;
                              # every new size is searched again, and the searches run beside the training state

`install()` puts it in place on BasicSR's BaseModel, which every model's construction and validation pass
through, whatever the entry point (`jude_arch/train.py`, `jude_arch/test.py`, `python -m basicsr.train`
through the import hook): the train and test pipelines build the model right after their
`cudnn.benchmark = True` and before any convolution, so the wrapped `__init__` sets the training value (train)
or the validation value (test) there; `validation` runs under the validation value and restores the one it
found afterwards.
"""
import functools

import torch

OPTION = 'cudnn'
DEFAULTS = {'benchmark_train': True, 'benchmark_val': False}


def cudnn_settings(opt):
    """The options' `cudnn` section over DEFAULTS.

    Raises:
        OptionError: an unknown key (with the closest valid one) or a value that is not true/false.
    """
    from ..option_check import OptionError, check_keys  # the typo check's own wording and hint

    section = opt.get(OPTION)
    if section is None:
        return dict(DEFAULTS)
    if not isinstance(section, dict):
        raise OptionError(f'options: {OPTION} must be a mapping with the keys {", ".join(DEFAULTS)}; got {section!r}')
    check_keys(section, OPTION, tuple(DEFAULTS))
    for key, value in section.items():
        if not isinstance(value, bool):
            raise OptionError(f'options: {OPTION}.{key} must be true or false, not {value!r}')
    return {**DEFAULTS, **section}


def describe(settings):
    """One log line: what the run does with autotuning, and where to change it."""
    on_off = {True: 'on', False: 'off'}
    return (f'cuDNN autotuning (torch.backends.cudnn.benchmark): training {on_off[settings["benchmark_train"]]}, '
            f'validation/test {on_off[settings["benchmark_val"]]} (options: {OPTION}.benchmark_train, '
            f'{OPTION}.benchmark_val)')


def _policy_at_build(init):
    """BaseModel.__init__, after setting cudnn.benchmark for what the model is built for (training: the
    training value; testing: the validation value)."""
    if getattr(init, 'jude_cudnn_policy', False):
        return init

    @functools.wraps(init)
    def init_under_cudnn_policy(self, opt):
        from basicsr.utils import get_root_logger

        settings = cudnn_settings(opt)
        torch.backends.cudnn.benchmark = settings['benchmark_train' if opt.get('is_train') else 'benchmark_val']
        get_root_logger().info(describe(settings))
        init(self, opt)

    init_under_cudnn_policy.jude_cudnn_policy = True
    return init_under_cudnn_policy


def _policy_in_validation(validation):
    """BaseModel.validation under the validation value, the previous value restored afterwards."""
    if getattr(validation, 'jude_cudnn_policy', False):
        return validation

    @functools.wraps(validation)
    def validation_under_cudnn_policy(self, *args, **kwargs):
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn_settings(self.opt)['benchmark_val']
        try:
            return validation(self, *args, **kwargs)
        finally:
            torch.backends.cudnn.benchmark = previous

    validation_under_cudnn_policy.jude_cudnn_policy = True
    return validation_under_cudnn_policy


def install():
    """Wrap BaseModel.__init__ and BaseModel.validation (once)."""
    from basicsr.models.base_model import BaseModel

    BaseModel.__init__ = _policy_at_build(BaseModel.__init__)
    BaseModel.validation = _policy_in_validation(BaseModel.validation)
