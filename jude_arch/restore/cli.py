"""jude-restore: restore dark, shaky photos with a trained JUDE.

    python -m jude_arch.restore -i <file or folder> -o <folder> --model-path <checkpoint> [options]

(also installed as the `jude-restore` command). Folders are walked recursively and their layout is
kept under the output folder; an input is never overwritten; a file that cannot be read or restored
is reported and skipped. Exit status: 0 when every image was restored, 1 when some failed, 2 when the
run could not start (arguments, checkpoint, no images). All restoring is `JUDERestorer` (`restorer.py`).
`jude-restore --web --model-path <checkpoint>` starts the web app instead (`app.py`, `jude-app`).
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..precision import CHOICES as PRECISION_CHOICES
from .errors import RestoreError
from .intermediates_panel import save_intermediates
from .memory import hold_freed_memory, peak_rss_bytes
from .network_loading import read_network_options
from .photo_io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, is_image_file, output_extension, read_photo, write_image
from .restorer import JUDERestorer

logger = logging.getLogger('jude_arch')
INTERMEDIATES_DIR = 'intermediates'


def _tile(value):
    if value == 'auto':
        return value
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 (no tiling) or a tile size in pixels, got {value!r}")
    return size


def _megapixels(value):
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if not limit >= 0:
        raise argparse.ArgumentTypeError(f'expected a number of megapixels ≥ 0 (0: no limit), got {value!r}')
    return limit


def build_parser():
    parser = argparse.ArgumentParser(prog='jude-restore',
                                     description='Restore dark, blurry photos with a trained JUDE model.',
                                     epilog='jude-restore --web --model-path <checkpoint> starts the web app '
                                     'instead (see jude-app --help).')
    parser.add_argument('-i', '--input', required=True, type=Path, help='image file or folder (walked recursively)')
    parser.add_argument('-o', '--output', required=True, type=Path, help='output folder (created if needed)')
    parser.add_argument('--model-path', required=True, type=Path,
                        help='checkpoint (.pth) saved by training, or any BasicSR params/params_ema file')
    parser.add_argument('--opt', type=Path,
                        help="network options when the checkpoint carries none: a BasicSR options YAML (its "
                        "network_g) or a YAML network dict such as '{type: JUDE, preset: small}'")
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                        help='auto (default): CUDA when available, else CPU')
    parser.add_argument('--precision', default='auto', choices=PRECISION_CHOICES,
                        help='auto (default): bf16 where the device runs it natively (CUDA with bf16, CPUs with AMX '
                        'or AVX512-BF16), fp16 on other GPUs, fp32 on other CPUs; or fp32, bf16, fp16')
    parser.add_argument('--tile', default='auto', type=_tile,
                        help="tile side in pixels, 0 for whole images, or 'auto' (default): the largest tile that "
                        "fits half of the device's free memory")
    parser.add_argument('--compile', nargs='?', const='operators', default=False, choices=['operators', 'network'],
                        help='torch.compile the network (default: off; --compile alone: its convolutional operators; '
                        '--compile network: the whole forward pass); the first image of each size compiles')
    parser.add_argument('--tile-overlap', type=int, help='overlap of neighbouring tiles (default: two kernel widths)')
    parser.add_argument('--suffix', default='', help='appended to each output file name, e.g. _jude (default: none)')
    parser.add_argument('--ext', default='auto', choices=['auto', 'png', 'jpg'],
                        help="output format; 'auto' (default) keeps the input's; images with alpha are never "
                        'saved as JPEG')
    parser.add_argument('--max-megapixels', type=_megapixels, default=DEFAULT_MAX_PIXELS / 1e6,
                        help='refuse photos of more megapixels, checked from the file header before decoding '
                        '(default: %(default)g; 0: no limit)')
    parser.add_argument('--save-intermediates', action='store_true',
                        help=f'also save, under <output>/{INTERMEDIATES_DIR}/, a panel of what JUDE did '
                        '(kernel, stages, Retinex factors), the kernels (.npy) and the per-stage λ/γ (.json)')
    return parser


def collect_inputs(source, output_dir):
    """The images to restore and their paths relative to the input (the layout kept in the output).

    Args:
        source (Path): an image file or a folder, walked recursively; hidden files and an output
            folder inside it are skipped.
        output_dir (Path): the output folder.

    Returns:
        list[tuple[Path, Path]]: (file, relative path), sorted.
    """
    if source.is_file():
        return [(source, Path(source.name))]
    if source.is_symlink() and not source.exists():
        raise RestoreError(f'{source}: broken symbolic link (to {os.readlink(source)})')
    if not source.is_dir():
        raise RestoreError(f'{source}: no such file or folder')
    output_dir = output_dir.resolve()
    source_root = source.resolve()
    inside = output_dir != source_root and source_root in output_dir.parents
    found = []
    for path in sorted(source.rglob('*')):
        relative = path.relative_to(source)
        broken_link = path.is_symlink() and not path.exists()  # kept: reading it reports the broken link
        if (any(part.startswith('.') for part in relative.parts) or not (path.is_file() or broken_link)
                or not is_image_file(path) or (inside and output_dir in path.resolve().parents)):
            continue
        found.append((path, relative))
    return found


def _output_path(output_dir, relative, suffix, extension):
    return output_dir / relative.parent / f'{relative.stem}{suffix}{extension}'


def check_outputs(inputs, output_dir, suffix, ext):
    """Refuse a run that would overwrite an input or save two inputs to one file.

    Outputs are planned with the extension they will most likely get ('auto': the input's); the write
    itself checks again with the final one.
    """
    input_files = {path.resolve(): path for path, _ in inputs}
    planned = {}
    for path, relative in inputs:
        extension = relative.suffix.lower() if ext == 'auto' else f'.{ext}'
        target = _output_path(output_dir, relative, suffix, extension).resolve()
        if target in input_files:
            what = 'the input itself' if input_files[target] == path else f'the input {input_files[target]}'
            fix = 'a different --suffix' if suffix else 'a --suffix such as _jude'
            raise RestoreError(f'refusing to run: the output for {path} would overwrite {what}; choose another '
                               f'--output folder or {fix}')
        if target in planned:
            fix = '--ext auto (keep each input\'s format)' if ext != 'auto' else 'rename one of them'
            raise RestoreError(f'refusing to run: {planned[target]} and {path} would both be saved as {target}; '
                               f'use {fix}')
        planned[target] = path
    return set(input_files)


def check_writable(output_dir):
    """Create the output folder and make sure files can be written in it, before any image is restored."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except FileExistsError:
        raise RestoreError(f'{output_dir}: exists and is not a folder; choose another --output') from None
    except OSError as error:
        raise RestoreError(f'{output_dir}: cannot write there ({error.strerror}); choose another --output') from None


def restore_one(restorer, path, relative, args, input_files, written):
    """Restore one file and write its results; returns the output path."""
    image = read_photo(path, max_pixels=round(args.max_megapixels * 1e6))
    if args.save_intermediates:
        restored, intermediates = restorer.restore(image, return_intermediates=True, tile_progress=True)
    else:
        restored = restorer.restore(image, tile_progress=True)
    target = _output_path(args.output, relative, args.suffix, output_extension(relative.suffix, args.ext, restored))
    if target.resolve() in input_files or target.resolve() in written:
        raise RestoreError(f'{target} is an input or another output of this run; not overwriting it')
    write_image(target, restored)
    written.add(target.resolve())
    if args.save_intermediates:
        stem = args.output / INTERMEDIATES_DIR / relative.parent / f'{relative.stem}{args.suffix}'
        save_intermediates(stem, image, restored, intermediates)
    return target


def failure_message(error, path):
    """The message for a photo that could not be read or restored, without the path (the caller adds its name).

    Args:
        error (Exception): what `read_photo` or the restorer raised.
        path (str | Path): the photo's path, removed from the start of messages that name it.
    """
    message = str(error) if isinstance(error, (ValueError, OSError)) else f'{type(error).__name__}: {error}'
    message = message.removeprefix(f'{path}: ')  # image errors name their file already
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        message += ' (out of memory: pass a smaller --tile)'
    return message


def _summary(done, failures, seconds, device):
    peak = peak_rss_bytes()
    memory = [] if peak is None else [f'{peak / 2**30:.2f} GiB process peak RSS']
    if device.type == 'cuda':
        memory.append(f'{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB CUDA peak allocated')
    logger.info(f'Restored {done} of {done + len(failures)} image(s) in {seconds:.1f} s'
                + (f'; memory: {", ".join(memory)}' if memory else ''))
    if failures:
        logger.error(f'{len(failures)} image(s) failed:\n' + '\n'.join(f'  {path}: {error}' for path, error in failures))


def main(argv=None):
    """Run the CLI; returns the exit status (0 all restored, 1 some failed, 2 the run could not start).

    Args:
        argv (list[str] | None): the arguments; None reads the command line and, since the process is
            then this command's own, lets malloc keep freed memory for reuse (`hold_freed_memory`).
    """
    if '--web' in (sys.argv[1:] if argv is None else argv):
        from .app import main as app_main  # gradio is imported only for the web app
        return app_main(argv)  # the app's parser accepts --web
    if argv is None:
        hold_freed_memory()
    args = build_parser().parse_args(argv)
    with _console_logging():
        return _run(args)


@contextmanager
def _console_logging():
    """Show this run's messages on stderr, unless the calling application has configured logging."""
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args):
    start = time.perf_counter()
    try:
        network_opt = read_network_options(args.opt) if args.opt else None
        restorer = JUDERestorer.from_checkpoint(args.model_path, network_opt, device=args.device,
                                                precision=args.precision, tile=args.tile,
                                                tile_overlap=args.tile_overlap, compile=args.compile)
        inputs = collect_inputs(args.input, args.output)
        if not inputs:
            raise RestoreError(f'{args.input}: no images found (extensions: {" ".join(IMAGE_EXTENSIONS)})')
        input_files = check_outputs(inputs, args.output, args.suffix, args.ext)
        check_writable(args.output)
    except RestoreError as error:
        logger.error(str(error))
        return 2

    failures, written = [], set()
    with logging_redirect_tqdm(loggers=[logger]):
        for path, relative in tqdm(inputs, unit='img', disable=len(inputs) == 1):
            try:
                restore_one(restorer, path, relative, args, input_files, written)
            except Exception as error:  # report, skip, go on with the next image
                message = failure_message(error, path)
                logger.error(f'{path}: {message}')
                failures.append((path, message))
    _summary(len(inputs) - len(failures), failures, time.perf_counter() - start, restorer.device)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
