"""Train with BasicSR's pipeline and JUDE registered: `python jude_arch/train.py -opt options/train_jude_p1.yml`.

BasicSR's flags: --launcher none|pytorch|slurm, --auto_resume, --debug, --force_yml key:sub=value.
experiments/, tb_logger/ (and relative dataset paths) are under the working directory.
Multi-GPU: `torchrun --nproc_per_node=N jude_arch/train.py -opt ... --launcher pytorch` (CPU: gloo).
cuDNN autotunes the training iterations' convolutions but not validation's (options `cudnn`, docs/gpu.md).
"""
import os
import sys

if __package__ in (None, ''):
    # Run as a script: its folder (jude_arch/) heads sys.path, where `data`, `losses`, ... would shadow
    # top-level names; the package itself is found from the installation or the repository root.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jude_arch  # noqa: E402,F401  (shims + registration before basicsr is used)
from basicsr.train import train_pipeline  # noqa: E402

from jude_arch.errors import USER_ERRORS  # noqa: E402


def main():
    try:
        train_pipeline(os.getcwd())
    except USER_ERRORS as error:  # one line (already in the training log when it has begun), non-zero exit
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
