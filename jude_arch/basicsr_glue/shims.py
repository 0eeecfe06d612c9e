"""Run-time shims that let BasicSR 1.4.2 run on today's torch and on machines without CUDA (docs/basicsr_plugin.md).

`apply_runtime_shims` patches BasicSR's distributed init (no CUDA assumed, the right GPU per node), its resume
loader (`resume.py`), its options loading (a safe YAML loader, then the typo check of the options JUDE owns),
`BaseModel.load_network` (the project's safe checkpoint reader), its training sampler (`ResumableSampler`: data a
resumed run draws exactly as an uninterrupted one), its log file (a write that fails, on a full disk, is one
warning line instead of a traceback per message) and where cuDNN autotunes (`cudnn.py`). `import jude_arch`
applies it, so
`jude_arch/train.py`, `jude_arch/test.py` and, through the import hook, `python -m basicsr.train` all get the
fixes. The one shim that must run before `import basicsr` is in `import_hook.py`.
"""
import logging
import os
import sys
from collections import OrderedDict

import yaml

import torch
import torch.distributed as dist

from ..checkpoint_io import read_checkpoint, state_dict_of, strip_module_prefix
from . import cudnn
from .resume import load_resume_state

__all__ = ['apply_runtime_shims', 'dist_backend']


def dist_backend():
    """NCCL when CUDA is present, gloo otherwise (BasicSR hard-codes NCCL)."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def _init_dist_pytorch(backend=None, **kwargs):
    """torchrun / `--launcher pytorch`: device from LOCAL_RANK (BasicSR uses RANK, wrong on multi-node, and
    divides by the GPU count, which is 0 on CPU); gloo without CUDA. The `backend` BasicSR passes ('nccl') is
    replaced by the one that fits the machine."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    dist.init_process_group(backend=dist_backend(), **kwargs)


def _init_dist_slurm(backend=None, port=None):
    """slurm / `--launcher slurm`: BasicSR's own setup with the backend chosen by the machine and the CUDA
    calls skipped on CPU nodes."""
    import subprocess

    proc_id = int(os.environ['SLURM_PROCID'])
    num_gpus = torch.cuda.device_count()
    local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % max(num_gpus, 1)))
    if num_gpus:
        torch.cuda.set_device(local_rank % num_gpus)
    node_list = os.environ['SLURM_NODELIST']
    os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = str(local_rank)
    os.environ['RANK'] = str(proc_id)
    dist.init_process_group(backend=dist_backend())


def _basicsr_load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR's `BaseModel.load_network` with `weights_only=True`, checksums checked and the authors' release
    understood."""
    from basicsr.utils import get_root_logger

    # Imported here: `python -m jude_arch.released` must find its module not yet imported by `import jude_arch`.
    from ..released import convert_if_released

    net = self.get_bare_model(net)
    checkpoint = convert_if_released(read_checkpoint(load_path), load_path, get_root_logger().info)
    state = state_dict_of(checkpoint, load_path, param_key) if param_key is not None else \
        strip_module_prefix(checkpoint)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    self._print_different_keys_loading(net, state, strict)
    net.load_state_dict(state, strict=strict)


class OptionsLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """YAML's safe loader with BasicSR's ordered mappings. BasicSR loads options with the full (unsafe)
    loader, on which `!!python/object/apply:os.system [...]` in an options file runs a command."""


def _refuse_python_tag(loader, suffix, node):
    raise yaml.constructor.ConstructorError(
        None, None, f'the tag !!python/{suffix} is refused: options files hold plain values only (a python/ tag '
        'can run code when the file is loaded); remove it', node.start_mark)


OptionsLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              lambda loader, node: OrderedDict(loader.construct_pairs(node)))
OptionsLoader.add_multi_constructor('tag:yaml.org,2002:python/', _refuse_python_tag)


def _ordered_yaml():
    """BasicSR's `ordered_yaml` (returns the Loader and Dumper for options files), with the safe loader."""
    try:
        from yaml import CDumper as Dumper
    except ImportError:
        from yaml import Dumper
    Dumper.add_representer(OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))
    return OptionsLoader, Dumper


def _checked(parse_options):
    """BasicSR's parse_options followed by the typo check of `jude_arch.option_check` and of the `cudnn`
    section (`cudnn.py`), so that a bad key stops the run before anything is built."""
    if getattr(parse_options, 'jude_checked', False):
        return parse_options

    def parse_and_check(root_path, is_train=True):
        from ..option_check import check_options

        opt, args = parse_options(root_path, is_train=is_train)
        check_options(opt)
        cudnn.cudnn_settings(opt)
        return opt, args

    parse_and_check.jude_checked = True
    return parse_and_check


def _quiet_log_file(handler, logger):
    """Make a failing write to the log file (a full disk) one warning line, after which the file is dropped;
    logging would print a 20-line traceback for every message instead, burying the error that follows."""

    def handle_error(record):
        reason = sys.exc_info()[1]
        logger.removeHandler(handler)
        try:
            handler.close()
        except OSError:  # closing flushes what could not be written
            pass
        reason = getattr(reason, 'strerror', None) or reason
        print(f'warning: cannot write the log file {handler.baseFilename} ({reason}); the log goes on in this '
              'terminal only', file=sys.stderr, flush=True)

    handler.handleError = handle_error


def _with_quiet_log_file(get_root_logger):
    """BasicSR's get_root_logger whose log file's write errors are one line (`_quiet_log_file`)."""
    if getattr(get_root_logger, 'jude_quiet', False):
        return get_root_logger

    def get_logger(*args, **kwargs):
        logger = get_root_logger(*args, **kwargs)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and not getattr(handler, 'jude_quiet', False):
                _quiet_log_file(handler, logger)
                handler.jude_quiet = True
        return logger

    get_logger.jude_quiet = True
    return get_logger


def apply_runtime_shims():
    """Patch BasicSR's distributed init and resume loader (docs/basicsr_plugin.md), its options loading
    (safe YAML, then the typo check) and log file in basicsr.train and basicsr.test, its network loader
    (`weights_only=True` on every torch version, checksums checked, the authors' released checkpoint understood)
    and its cuDNN autotuning (the options' `cudnn` section, docs/gpu.md)."""
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util, options

    from ..data.sampling import ResumableSampler

    dist_util._init_dist_pytorch = _init_dist_pytorch
    dist_util._init_dist_slurm = _init_dist_slurm
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.EnlargedSampler = ResumableSampler  # the training sampler (its draws: jude_arch.data.sampling)
    BaseModel.load_network = _basicsr_load_network
    options.ordered_yaml = _ordered_yaml
    basicsr.train.parse_options = _checked(basicsr.train.parse_options)
    basicsr.test.parse_options = _checked(basicsr.test.parse_options)
    cudnn.install()
    # The pipelines' first call creates the log file.
    basicsr.train.get_root_logger = _with_quiet_log_file(basicsr.train.get_root_logger)
    basicsr.test.get_root_logger = _with_quiet_log_file(basicsr.test.get_root_logger)
