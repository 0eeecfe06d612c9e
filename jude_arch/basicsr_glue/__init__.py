"""The BasicSR glue, all of it: what makes BasicSR 1.4.2 run JUDE on today's torch (docs/basicsr_plugin.md).

- `import_hook.py`: the finder that imports `jude_arch` right after `basicsr` (BasicSR's own entry points), and
  the one shim that must run before `import basicsr` (torchvision's removed module). It imports only `os` and
  `sys`: the `.pth` line setup.py installs loads this file by path at every interpreter start-up.
- `shims.py`: the run-time shims (`apply_runtime_shims`): distributed init without CUDA, safe options loading
  plus the typo check, and `BaseModel.load_network` through the project's safe checkpoint reader.
- `resume.py`: `--auto_resume` without CUDA and past a damaged newest training state.
- `cudnn.py`: where cuDNN autotunes convolutions (the options' `cudnn` section): training on, validation off.

A package rather than one module because the hook must stay importable by path without torch, yaml or the
package itself, while the run-time shims need all three.
"""
from .import_hook import apply_import_shims
from .resume import ResumeError, load_resume_state
from .shims import apply_runtime_shims, dist_backend

__all__ = ['apply_import_shims', 'apply_runtime_shims', 'dist_backend', 'load_resume_state', 'ResumeError']
