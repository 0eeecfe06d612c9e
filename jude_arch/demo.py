"""`python -m jude_arch.demo`: the demo of `jude_arch/tools/demo.py`, under the short command the README, the
demo's options files and docs name."""
import sys

from .tools.demo import main

if __name__ == '__main__':
    sys.exit(main())
