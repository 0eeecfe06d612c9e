"""Shims that let BasicSR 1.4.2 run on today's torch and on machines without CUDA (docs/basicsr_plugin.md).

`apply_import_shims` must run before anything imports basicsr; `jude_arch/__init__.py` calls it first (and the
import hook of `jude_arch/basicsr_hook.py` does when basicsr is imported on its own). `apply_runtime_shims`
patches three BasicSR functions that assume CUDA, loads options files with a safe YAML loader and checks the
options JUDE owns for typos; `import jude_arch` applies it, so `jude_arch/train.py`, `jude_arch/test.py` and,
through the hook, `python -m basicsr.train` all get the fixes.
"""
import os
import sys
from collections import OrderedDict

import yaml

import torch
import torch.distributed as dist

from .basicsr_hook import apply_import_shims
from .checkpoint_io import refusal_message

__all__ = ['apply_import_shims', 'apply_runtime_shims', 'dist_backend', 'load_resume_state', 'ResumeError']


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


class ResumeError(RuntimeError):
    """A training state that cannot be resumed from; the message names it."""


def _read_state(path, device):
    """torch.load of a training state (weights_only); an unreadable file raises ResumeError naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated zip, a refused pickle, an I/O error: the file is named either way
        refused = refusal_message(path, error)
        if refused:
            raise ResumeError(refused) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResumeError(f'{path}: cannot be loaded as a training state ({reason})') from None


def load_resume_state(opt):
    """BasicSR's `load_resume_state` that also works without CUDA and survives a damaged newest state.

    With `--auto_resume` it takes the newest `<iter>.state` in experiments/<name>/training_states under the
    run's root (the working directory for our entry points) that loads and whose `models/net_g_<iter>.pth` is
    there; a newer one that does not (a run killed while saving, a full disk) is skipped with a warning naming
    it. Otherwise it loads `path.resume_state` when set. Tensors are mapped to this process's GPU, or to the CPU
    when there is none.

    Args:
        opt (dict): parsed options (BasicSR's parse_options); `path.resume_state` is filled in on auto-resume.

    Returns:
        dict | None: the training state, or None when starting fresh.
    """
    from basicsr.utils import check_resume, scandir

    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        iters = []
        if os.path.isdir(state_dir):
            iters = [int(name[:-len('.state')]) for name in scandir(state_dir, suffix='.state', recursive=False)
                     if name[:-len('.state')].isdigit()]
        state = None
        for it in sorted(iters, reverse=True):
            path = os.path.join(state_dir, f'{it}.state')
            models = [os.path.join(opt['path']['models'], f'net_{key[len("network_"):]}_{it}.pth')
                      for key in opt if key.startswith('network_')]
            try:
                state = _read_state(path, device)
            except ResumeError as error:
                print(f'warning: skipping {error}; trying the previous state', file=sys.stderr, flush=True)
                continue
            missing = [model for model in models if not os.path.isfile(model)]
            if missing:
                print(f'warning: skipping {path}: its model {missing[0]} is missing; trying the previous state',
                      file=sys.stderr, flush=True)
                state = None
                continue
            break
        if state is None:
            if iters:
                raise ResumeError(f'no training state in {state_dir} can be resumed from (see the warnings); '
                                  'start without --auto_resume, or from a checkpoint with path.pretrain_network_g')
            return None
        opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        if not os.path.isfile(path):
            raise ResumeError(f'resume_state {path} does not exist: fix path.resume_state or use --auto_resume')
        state = _read_state(path, device)
    else:
        return None
    check_resume(opt, state['iter'])
    return state


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
    """BasicSR's parse_options followed by the typo check of `jude_arch.option_check`."""
    if getattr(parse_options, 'jude_checked', False):
        return parse_options

    def parse_and_check(root_path, is_train=True):
        from .option_check import check_options

        opt, args = parse_options(root_path, is_train=is_train)
        check_options(opt)
        return opt, args

    parse_and_check.jude_checked = True
    return parse_and_check


def apply_runtime_shims():
    """Patch BasicSR's distributed init and resume loader (docs/basicsr_plugin.md), its options loading
    (safe YAML, then the typo check) in basicsr.train and basicsr.test, and its network loader (`weights_only=True`
    on every torch version, and the authors' released checkpoint understood)."""
    import basicsr.test
    import basicsr.train
    from basicsr.utils import dist_util, options

    from .checkpoint_io import install_basicsr_loader

    dist_util._init_dist_pytorch = _init_dist_pytorch
    dist_util._init_dist_slurm = _init_dist_slurm
    basicsr.train.load_resume_state = load_resume_state
    install_basicsr_loader()
    options.ordered_yaml = _ordered_yaml
    basicsr.train.parse_options = _checked(basicsr.train.parse_options)
    basicsr.test.parse_options = _checked(basicsr.test.parse_options)
