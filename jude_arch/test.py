"""Test with BasicSR's pipeline and JUDE registered: `python jude_arch/test.py -opt options/test_jude_lolblur.yml`.

Metrics go to the log in results/<name>/ and, with the options' `protocol` section, frame count and metric
settings, to results/<name>/metrics_<dataset>.json; images to results/<name>/visualization/<dataset>/, under the
working directory. cuDNN does not autotune here (options `cudnn.benchmark_val`, docs/gpu.md).
"""
import os
import sys

if __package__ in (None, ''):
    # Run as a script: see jude_arch/train.py.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jude_arch  # noqa: E402,F401  (shims + registration before basicsr is used)
from basicsr.test import test_pipeline  # noqa: E402

from jude_arch.errors import USER_ERRORS  # noqa: E402


def main():
    try:
        test_pipeline(os.getcwd())
    except USER_ERRORS as error:  # one line, non-zero exit
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
