"""Reading and writing checkpoints safely: one loader for every `.pth` a user hands the project.

`read_checkpoint` loads with `torch.load(..., weights_only=True)` (tensors and plain containers only, so a
malicious file cannot run code) and turns every failure into a `CheckpointError` that names the file and says
what to do. `state_dict_of` adds the layouts users bring: BasicSR's {'params', 'params_ema'}, a bare state dict,
DataParallel's `module.` prefix (the authors' released checkpoint is converted by
`jude_arch.released.convert_if_released`).
BasicSR's `BaseModel.load_network` (`pretrain_network_g`) goes through it too (`jude_arch.basicsr_glue.shims`).
`atomic_write` / `save_atomically` are the one way the project writes a file that must never be seen half-written.
"""
import logging
import os
import pickle
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)
# torch's weights-only unpickler names the object it refuses differently across versions: "Unsupported global:
# GLOBAL os.system" (up to 2.5), "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
# (later), "Unsupported class os.system" (older).
_REFUSED = re.compile(r'(?:GLOBAL|Unsupported class) ([\w.]+)')
# The suffix of `atomic_write`'s temporary files (`.<name>.<pid>.part`, beside the target).
TEMPORARY_SUFFIX = '.part'


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def refusal_message(path, error):
    """'<path>: refused to load: ...' when `error` is a weights-only load refusing a Python object, else None."""
    found = _REFUSED.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if found is None:
        return None
    return (f'{path}: refused to load: it stores Python objects ({found.group(1)}) besides tensors, and '
            'unpickling them could run arbitrary code')


def read_checkpoint(path):
    """Load a checkpoint dict with `weights_only=True`, on the CPU.

    Raises:
        CheckpointError: missing, unreadable, not a dict, or holding Python objects besides tensors.
    """
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f'{path}: no such checkpoint file') from None
    except IsADirectoryError:
        raise CheckpointError(f'{path}: is a folder, not a checkpoint file') from None
    except pickle.UnpicklingError as error:
        refused = refusal_message(path, error)
        if refused:
            raise CheckpointError(
                f'{refused}. If you trust the file, extract its weights once into a file that holds tensors only, '
                'then use that file: python -c "import torch; '
                f"c = torch.load('{path}', map_location='cpu', weights_only=False); "
                "torch.save({k: c[k] for k in ('state_dict', 'params', 'params_ema', 'network_g') if k in c}, "
                "'weights_only.pth')\"") from None
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint (corrupt, truncated or another format)') \
            from None
    except Exception as error:  # torch.load reports damaged files with several exception types
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({reason})') from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path}: holds a {type(checkpoint).__name__}, expected a dict of weights')
    return checkpoint


def strip_module_prefix(state):
    """State dict without the `module.` prefix that DataParallel / DistributedDataParallel add to every key."""
    return type(state)((k[len('module.'):] if isinstance(k, str) and k.startswith('module.') else k, v)
                       for k, v in state.items())


def state_dict_of(checkpoint, path, param_key=None):
    """The weights of a (converted) checkpoint, without `module.`.

    Args:
        checkpoint (dict): a loaded checkpoint.
        path: its file, for messages.
        param_key (str | None): 'params' or 'params_ema' to prefer; None takes 'params_ema' when present
            (the EMA weights training keeps), else 'params', else the dict itself as a state dict.
    """
    keys = [param_key, 'params'] if param_key else ['params_ema', 'params']
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            if key != keys[0]:
                logger.info(f'{path}: has no {keys[0]!r}, loading {key!r}')
            return strip_module_prefix(checkpoint[key])
    state = {k: v for k, v in checkpoint.items() if k != 'network_g'}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no weights found: expected 'params_ema' or 'params' (BasicSR's "
                              f'save_network) or a state dict; found keys {sorted(checkpoint)[:8]}')
    return strip_module_prefix(state)


def plain(value):
    """Option trees (BasicSR's OrderedDicts) as plain dicts and lists, loadable with torch.load(weights_only=True)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def save_atomically(obj, path):
    """torch.save to a temporary file beside `path`, renamed into place; nothing is left behind on failure."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write(path, write):
    """Call write(tmp) for a temporary path beside `path`, then rename it into place (atomic on one
    filesystem); parent folders are created, and the temporary file is removed on any failure, Ctrl-C too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}')
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
