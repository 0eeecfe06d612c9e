"""Reading and writing checkpoints safely: one loader for every `.pth` a user hands the project.

`read_checkpoint` first checks the file's checksums (`verify_checksums`: torch.save writes a zip archive with a
CRC-32 of every record, which torch.load never checks, so a flipped bit would be loaded silently), then loads
with `torch.load(..., weights_only=True)` (tensors and plain containers only, so a malicious file cannot run
code), and turns every failure into a `CheckpointError` that names the file and says what to do. `state_dict_of` adds the layouts users bring: BasicSR's {'params', 'params_ema'}, a bare state dict,
DataParallel's `module.` prefix (the authors' released checkpoint is converted by
`jude_arch.released.convert_if_released`).
BasicSR's `BaseModel.load_network` (`pretrain_network_g`) goes through it too (`jude_arch.basicsr_glue.shims`).
`atomic_write` / `save_atomically` are the one way the project writes a file that must never be seen half-written;
`remove_partial_files` clears what a killed process left of theirs.
"""
import logging
import os
import pickle
import re
import zipfile
import zlib
from pathlib import Path

import torch

logger = logging.getLogger(__name__)
# torch's weights-only unpickler names the object it refuses differently across versions: "Unsupported global:
# GLOBAL os.system" (up to 2.5), "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
# (later), "Unsupported class os.system" (older).
_REFUSED = re.compile(r'(?:GLOBAL|Unsupported class) ([\w.]+)')
# The suffix of `atomic_write`'s temporary files (`.<name>.<pid>.part`, beside the target).
TEMPORARY_SUFFIX = '.part'
_TEMPORARY_NAME = re.compile(r'^\..+\.\d+' + re.escape(TEMPORARY_SUFFIX) + '$')
_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def refusal_message(path, error):
    """'<path>: refused to load: ...' when `error` is a weights-only load refusing a Python object, else None."""
    found = _REFUSED.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if found is None:
        return None
    return (f'{path}: refused to load: it stores Python objects ({found.group(1)}) besides tensors, and '
            'unpickling them could run arbitrary code')


def damage(path):
    """Why the archive torch.save wrote at `path` is damaged, or None when every record matches its CRC-32.

    torch.save's zip archive stores a CRC-32 of every record (the pickle and each tensor's bytes); torch.load
    reads them without checking. Reading the file once more costs about half a torch.load (0.26 s for the
    629 MiB training state of the full model, from the page cache). Files in torch's legacy (non-zip) format
    carry no checksum and are not checked; nor are archives written with CRC computation switched off (every
    CRC 0).

    Raises:
        OSError: the file cannot be read.
    """
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if all(info.CRC == 0 for info in records if info.file_size):
                return None
            for info in records:
                try:
                    with archive.open(info) as record:  # ZipExtFile checks the CRC-32 once it has read the end
                        while record.read(_CHUNK):
                            pass
                except zipfile.BadZipFile as error:
                    what = 'does not match its checksum' if 'CRC' in str(error) else f'is damaged ({error})'
                    return f'its record {info.filename.split("/", 1)[-1]} {what}'
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as error:
        return f'its zip structure is damaged ({error})'
    return None


def verify_checksums(path, what='checkpoint'):
    """Raise CheckpointError naming `path` when its records do not match their checksums (see `damage`)."""
    try:
        found = damage(path)  # a missing file or a folder is not a zip archive: torch.load names those
    except OSError as error:
        raise CheckpointError(f'{path}: cannot be read ({error.strerror or error})') from None
    if found:
        raise CheckpointError(f'{path}: damaged {what}: {found} (the file changed after it was written: a disk or '
                              'copy error); use an earlier one or copy it again')


def read_checkpoint(path):
    """Check the checksums of a checkpoint, then load it as a dict with `weights_only=True`, on the CPU.

    Raises:
        CheckpointError: missing, unreadable, damaged, not a dict, or holding Python objects besides tensors.
    """
    verify_checksums(path)
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


def remove_partial_files(folder):
    """Remove the temporary files that `atomic_write` calls killed mid-write left below `folder` (SIGKILL, power
    loss: nothing ran to remove them). Only the temporary-name pattern `.<name>.<pid>.part` is touched.

    Returns:
        list[Path]: the files removed.
    """
    removed = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if _TEMPORARY_NAME.match(name):
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)
