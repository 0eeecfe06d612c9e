"""`python -m jude_arch.restore ...` is `jude-restore ...`."""
import sys

from .cli import main

sys.exit(main())
