"""The web app's restoring, without Gradio: uploads restored one at a time into the files the page shows.

Photos are read, restored and written with `jude-restore`'s rules (`photo_io.py`, `JUDERestorer`, the CLI's
failure messages); the "inside JUDE" pictures are the intermediates panel's (`intermediates_panel.panel_views`).
"""
import contextvars
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .cli import failure_message
from .errors import RestoreError
from .intermediates_panel import GAMMA_NAMES, LAMBDA_NAMES, panel_views, save_intermediates, to_display
from .photo_io import output_extension, read_photo, write_image
from .restorer import JUDERestorer

logger = logging.getLogger('jude_arch')

PREVIEW_SIDE = 2048  # longest side of the before/after pictures in the page (the download is full size)
VIEW_SIDE = 640  # longest side of the "inside JUDE" pictures
KEEP_FILES_S = 3600  # results and Gradio's cached copies are deleted after this long
RESULT_SUFFIX = '_jude'
_SYMBOLS = dict(zip(LAMBDA_NAMES + GAMMA_NAMES, ('λ1', 'λ2', 'λ3', 'λ4', 'λ5', 'γ_P', 'γ_Q', 'γ_Z')))


@dataclass
class PhotoResult:
    """One restored upload: the files the page shows and offers (all inside the app's temporary folder).

    Attributes:
        name (str): the upload's file name.
        size (tuple[int, int]): width, height.
        seconds (float): time to read, restore and write it.
        downloads (list[Path]): the full-resolution result (input's format and bit depth), the panel,
            the kernels (.npy) and the per-stage λ/γ (.json), as `jude-restore --save-intermediates` writes them.
        before (Path), after (Path): 8-bit previews of input and result for the comparison.
        blur (list[tuple[Path, str]]): the estimated kernel(s) (and weight map; tile layout when tiled).
        stages (list[tuple[Path, str]]): the input and I after each stage, at one display gain.
        retinex (list[tuple[Path, str]]): L, R, L̂, R̂.
        table (list[list[str]]): header and one row per stage of λ/γ (means over tiles when tiled).
        tiled (bool): whether the photo went through the network in several tiles.
        warning (str | None): the panel's warning when the model's kernel estimator has not learned a blur
            (`intermediates_panel.physics_warning`).
    """

    name: str
    size: tuple
    seconds: float
    downloads: list
    before: Path
    after: Path
    blur: list
    stages: list
    retinex: list
    table: list
    tiled: bool
    warning: str = None


@dataclass
class Batch:
    """What one request produced: the restored photos and a message per photo that failed (or a setting)."""

    results: list = field(default_factory=list)
    messages: list = field(default_factory=list)


class RestoreService:
    """Restores uploads one at a time with one network, all on one thread; no Gradio here.

    One thread, not a lock: glibc's malloc gives each thread its own arena, and with freed memory kept
    for reuse (`hold_freed_memory`) a restore on another thread cannot reuse what the previous one
    freed, so the server's memory would grow by a photo's worth for every thread that ever restored.

    Args:
        network (torch.nn.Module): the loaded network (see `network_loading.load_network`).
        workdir (str | Path): the app's temporary folder; results go to `<workdir>/results/<request>/`.
        tile_overlap (int | None): as `JUDERestorer`'s.
        max_pixels (int | None): uploads declaring more pixels are refused before decoding.
    """

    def __init__(self, network, workdir, tile_overlap=None, max_pixels=None):
        self.network = network
        self.results_dir = Path(workdir) / 'results'
        self.tile_overlap = tile_overlap
        self.max_pixels = max_pixels
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='jude-restore')
        self._restorer = None
        self._settings = None
        self._requests = 0

    def restorer(self, device, precision, tile):
        """The restorer for these settings; rebuilt when they change (it moves the one network to its device)."""
        settings = (device, precision, tile)
        if settings != self._settings:
            self._restorer = self._settings = None
            self._restorer = JUDERestorer(self.network, device=device, precision=precision, tile=tile,
                                          tile_overlap=self.tile_overlap)
            self._settings = settings
        return self._restorer

    def restore(self, paths, device, precision, tile, track=None):
        """Restore uploaded files; a file that cannot be restored gets a message and the others go on.

        Args:
            paths (list[str | Path]): the uploads (their file names are the names shown).
            device, precision, tile: the restorer's settings.
            track (callable | None): wraps the iteration over the photos, e.g. in a progress bar.

        Returns:
            Batch: results in upload order and messages ('<name>: <what is wrong>').
        """
        # The caller's context goes along: Gradio finds the request's progress bar through it.
        job = self._worker.submit(contextvars.copy_context().run, self._restore, paths, device, precision, tile,
                                  track)
        return job.result()

    def close(self):
        """Finish the running restore and stop the worker thread."""
        self._worker.shutdown()

    def _restore(self, paths, device, precision, tile, track):
        batch = Batch()
        try:
            restorer = self.restorer(device, precision, tile)
        except RestoreError as error:
            batch.messages.append(f'settings: {error}')
            return batch
        self._requests += 1
        folder = self.results_dir / f'{self._requests:05d}'
        self._remove_old_results()
        used = set()
        for path in (paths if track is None else track(paths)):
            path = Path(path)
            name = path.name
            try:
                batch.results.append(self._restore_one(restorer, path, name, folder, used))
            except Exception as error:  # report, skip, go on with the next photo
                message = failure_message(error, path).replace(str(path), name)
                logger.error(f'{name}: {message}')
                batch.messages.append(f'{name}: {message}')
        return batch

    def _remove_old_results(self):
        # A page keeps offering its photos' pictures (the photo selector) for as long as Gradio keeps its copies.
        if self.results_dir.is_dir():
            for old in self.results_dir.iterdir():
                if time.time() - old.stat().st_mtime > KEEP_FILES_S:
                    shutil.rmtree(old, ignore_errors=True)

    def _restore_one(self, restorer, path, name, folder, used):
        start = time.perf_counter()
        image = read_photo(path, max_pixels=self.max_pixels)
        height, width = image.shape[:2]
        logger.info(f'{name}: restoring {width}×{height}')
        restored, intermediates = restorer.restore(image, return_intermediates=True, tile_progress=True)
        stem = Path(name).stem
        for n in range(1, len(used) + 2):  # two uploads with one name get separate files
            unique = stem if n == 1 else f'{stem}_{n}'
            if unique not in used:
                break
        used.add(unique)
        target = folder / unique / f'{stem}{RESULT_SUFFIX}{output_extension(Path(name).suffix, "auto", restored)}'
        write_image(target, restored)
        extras = save_intermediates(target.with_suffix(''), image, restored, intermediates)
        views = panel_views(image, restored, intermediates, size=VIEW_SIDE)

        def save(picture, file_name):
            file = folder / unique / 'view' / file_name
            write_image(file, picture)
            return file

        def pictures(views_, kind):
            return [(save(picture, f'{kind}_{i}.png'), label) for i, (label, picture) in enumerate(views_)]

        before = save(to_display(image, PREVIEW_SIDE), 'before.jpg')
        after = save(to_display(restored, PREVIEW_SIDE), 'after.jpg')
        # The kernel(s) and weight map; with tiles also the input with the tile boxes drawn.
        blur = pictures(views.overview[2:] + (views.overview[:1] if views.tiled else []), 'blur')
        table = [['stage', *(_SYMBOLS[n] for n in views.names)]]
        table += [[str(t + 1), *(f'{v:.4g}' for v in row)] for t, row in enumerate(views.table)]
        seconds = time.perf_counter() - start
        logger.info(f'{name}: restored in {seconds:.1f} s')
        return PhotoResult(name, (width, height), seconds, [target, *extras], before, after, blur,
                           pictures(views.stages, 'stage'), pictures(views.retinex, 'retinex'), table, views.tiled,
                           views.warning)
