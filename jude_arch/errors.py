"""Errors that speak to the user: `jude_arch/train.py` and `test.py` print their message as one line (no
traceback) and exit with status 1."""
import yaml

from .basicsr_glue.resume import ResumeError
from .checkpoint_io import CheckpointError
from .data.image_io import ImageDataError
from .models.training_guards import TrainingStopped
from .option_check import OptionError

USER_ERRORS = (TrainingStopped, OptionError, ImageDataError, ResumeError, CheckpointError, yaml.YAMLError)
