"""Why a `torch.load(..., weights_only=True)` failed, in words: a refused Python object is named as such.

Kept free of torch and basicsr imports: `jude_arch.compat` uses it before basicsr is imported.
"""
import pickle
import re

# torch's weights-only unpickler names the object it refuses differently across versions: "Unsupported global:
# GLOBAL os.system" (up to 2.5), "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
# (later), "Unsupported class os.system" (older).
_REFUSED = re.compile(r'(?:GLOBAL|Unsupported class) ([\w.]+)')


def refused_global(error):
    """The Python object (e.g. 'posix.system') a weights-only load refused, or None when `error` is not such a
    refusal (a damaged file, an I/O error)."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = _REFUSED.search(str(error))
    return found.group(1) if found else None


def refusal_message(path, error):
    """'<path>: refused to load: ...' when `error` is a weights-only refusal, else None."""
    name = refused_global(error)
    if name is None:
        return None
    return (f'{path}: refused to load: it stores Python objects ({name}) besides tensors, and loading them could '
            'run arbitrary code')
