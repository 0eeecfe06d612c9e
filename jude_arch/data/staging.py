"""Outputs that appear complete or not at all: write them in a hidden staging folder, then swap them in."""
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .image_io import ImageDataError


def refuse_existing(out, names, overwrite):
    """Raise ImageDataError naming the first `out/<name>` that exists, unless `overwrite`."""
    if overwrite:
        return
    for name in names:
        if (Path(out) / name).exists():
            raise ImageDataError(f'{Path(out) / name}: already exists; pass --overwrite to replace it')


@contextlib.contextmanager
def staged_outputs(out, names, *, overwrite, prefix):
    """Yield a staging folder inside `out`; when the block ends without error, swap `names` into `out`.

    The names are replaced as a set: each staged `staging/<name>` takes the place of `out/<name>`, and an
    existing `out/<name>` that the block did not stage is removed with the others. An existing output is
    replaced only with `overwrite` (it may have appeared while the block ran). On any error or interruption,
    in the block or during the swap, every output is put back as it was, the staging folder is removed, and
    so is `out` when this created it and it is still empty.

    Args:
        out (str | Path): output folder (created if missing).
        names (Sequence[str]): the file or folder names this run writes in `out`.
        overwrite (bool): allow replacing existing outputs.
        prefix (str): name prefix of the staging folder (start it with '.' to hide it).

    The staging folder's name carries the host and process id (`<prefix><host>-<pid>-<random>`): a run killed
    with SIGKILL (or a power cut) cannot clean up, and the next run removes what such a run left behind.

    Yields:
        Path: the staging folder, on the same file system as `out` (so the swap is a rename).
    """
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out, prefix)
    staging = Path(tempfile.mkdtemp(prefix=f'{prefix}{socket.gethostname()}-{os.getpid()}-', dir=out))
    try:
        yield staging
        _swap_in(staging, out, names, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):  # only if still empty
                out.rmdir()
        raise
    shutil.rmtree(staging)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(out, prefix):
    """Remove the staging folders in `out` of earlier runs on this host whose process is gone; report (on
    stderr) the ones that cannot be told apart from a live run (another host's, or an unrecognised name).

    Args:
        out (str | Path): output folder.
        prefix (str): the staging folders' name prefix.

    Returns:
        list[Path]: the folders removed.
    """
    removed, host = [], socket.gethostname()
    for folder in sorted(Path(out).glob(f'{prefix}*')):
        name_host, _, pid = folder.name[len(prefix):].rpartition('-')[0].rpartition('-')
        if not folder.is_dir():
            continue
        if name_host == host and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            print(f'removed {folder}: staging folder of an interrupted earlier run (process {pid})', file=sys.stderr)
        elif name_host != host or not pid.isdigit():
            print(f'note: {folder} looks like the staging folder of an earlier or concurrent run '
                  f'({"another host" if pid.isdigit() else "no process id in its name"}); remove it if no other '
                  'run is writing here', file=sys.stderr)
    return removed


def _swap_in(staging, out, names, overwrite):
    refuse_existing(out, names, overwrite)  # again: an output may have appeared while the block ran
    replaced = staging / '.replaced'
    replaced.mkdir()
    moved_away, moved_in = [], []
    try:
        for name in names:
            if (out / name).exists():
                (out / name).rename(replaced / name)
                moved_away.append(name)
            if (staging / name).exists():
                (staging / name).rename(out / name)
                moved_in.append(name)
    except BaseException:
        for name in moved_in:
            (out / name).rename(staging / name)
        for name in moved_away:
            (replaced / name).rename(out / name)
        raise
