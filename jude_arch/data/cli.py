"""What the data tools' command lines share: argument types, and errors as one line instead of a traceback."""
import argparse
import signal
import sys

from .image_io import ImageDataError


def positive_int(text):
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be ≥ 1, got {value}')
    return value


def run_tool(work, out, errors=(ImageDataError, OSError)):
    """Run a data tool's `work()` and return its result.

    `kill` (SIGTERM) cleans up like Ctrl-C (the tools remove their staging folders on KeyboardInterrupt).
    An error of the `errors` types ends the program with `error: <message>` (the message names the path) and
    exit status 1; Ctrl-C with a note that `out` was left as it was and exit status 130.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return work()
    except errors as error:
        sys.exit(f'error: {error}')
    except KeyboardInterrupt:
        print(f'interrupted: {out} was left as it was', file=sys.stderr)
        sys.exit(130)
