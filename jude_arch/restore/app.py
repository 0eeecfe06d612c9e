"""jude-app: restore night photos in the browser and see what JUDE did.

    jude-app --model-path <checkpoint> [--host 127.0.0.1] [--port 7860] [options]
    jude-restore --web --model-path <checkpoint> [options]        (the same)

A local web page (Gradio, the optional `[app]` extra) on top of what `jude-restore` uses: the photos
are read, restored and written by `photo_io.py` and `JUDERestorer` with the CLI's rules (a download of
the full-resolution result in the input's format and bit depth; `app_service.py` does the restoring), the
"inside JUDE" view is the intermediates panel's pictures (`intermediates_panel.panel_views`), the settings
are the CLI's options and a photo that cannot be restored gets the CLI's message.

Safe by default: it listens on 127.0.0.1 unless --host says otherwise; uploads are capped in bytes
(--max-upload-mb) and pixels (--max-megapixels, checked from the header before decoding); restores run
one at a time (a queue, and a lock around the model), so two large photos never take twice the memory;
messages name uploads by their file name, never by a server path; uploads and results live in one
temporary folder, removed when the app stops. Offline: no analytics, no version check, no fonts or
scripts from elsewhere (system fonts), nothing downloaded at start-up.
"""
import argparse
import copy
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ..archs import JUDE
from . import cli
from .app_service import KEEP_FILES_S, Batch, RestoreService
from .errors import RestoreError
from .memory import hold_freed_memory
from .network_loading import load_network, read_network_options
from .photo_io import IMAGE_EXTENSIONS
from .restorer import JUDERestorer

logger = logging.getLogger('jude_arch')

# jude-restore's options that the app shares, copied from its parser: one definition of each.
SHARED_OPTIONS = ('--model-path', '--opt', '--device', '--precision', '--tile', '--tile-overlap', '--max-megapixels')
QUEUE_SIZE = 16  # requests waiting beyond this are turned away instead of piling up
INSTALL_HINT = "the web app needs Gradio: pip install 'jude-basicsr[app]' (or pip install -e '.[app]' in a clone)"


# ---------------------------------------------------------------------------------------------- the page


def _escape(text):
    """Text shown literally in Markdown (file names and messages may hold *, _, <, ...)."""
    return ''.join('\\' + c if c in '\\`*_{}[]()<>#+-.!|~' else c for c in text)


def _status(batch):
    lines = []
    if batch.results:
        done = ', '.join(f'{_escape(r.name)} ({r.size[0]}×{r.size[1]}, {r.seconds:.1f} s)' for r in batch.results)
        lines.append(f'**Restored:** {done}')
    lines += [f'**Not restored:** {_escape(message)}' for message in batch.messages]
    return '\n\n'.join(lines) or 'Drop one or more photos first.'


def _table_markdown(table):
    header, *rows = table
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows])


def build_app(service, defaults, model_label):
    """The Gradio page.

    Args:
        service (RestoreService): does the restoring.
        defaults (argparse.Namespace): the parsed command line (settings' defaults and choices' parsers).
        model_label (str): what the page says about the model (no server path).

    Returns:
        gradio.Blocks: the app (queue set: one restore at a time).
    """
    import gradio as gr

    restore_cli = cli.build_parser()
    choices = {dest: restore_cli._option_string_actions[f'--{dest}'].choices for dest in ('precision', 'device')}
    parse_tile = restore_cli._option_string_actions['--tile'].type

    def view(results, index):
        """The comparison and the "inside JUDE" pictures of the photo the selector shows."""
        if index is None or not 0 <= index < len(results):
            return None, '', [], [], [], ''
        result = results[index]

        def gallery(items):
            return [(str(path), label) for path, label in items]

        warning = f'**Warning:** {_escape(result.warning)}' if result.warning else ''
        return ((str(result.before), str(result.after)), warning, gallery(result.blur), gallery(result.stages),
                gallery(result.retinex), f'**{_escape(result.name)}**, per-stage hyper-parameters' +
                (' (means over tiles)' if result.tiled else '') + '\n\n' + _table_markdown(result.table))

    def restore(files, precision, tile, device, progress=gr.Progress(track_tqdm=True)):
        try:
            tile = parse_tile(str(tile).strip())
        except argparse.ArgumentTypeError as error:
            batch = Batch(messages=[f'settings: tile: {error}'])
        else:
            def track(paths):  # photos, and within a photo the restorer's tiles (tqdm, tracked by Gradio)
                return progress.tqdm(paths, desc='Restoring', unit='photo')

            batch = service.restore(files, device, precision, tile, track) if files else Batch()
        # Photos are picked by position: two uploads may share a name.
        choices = [(f'{i + 1}. {r.name}', i) for i, r in enumerate(batch.results)]
        first = 0 if choices else None
        return (batch.results, gr.update(choices=choices, value=first, visible=len(choices) > 1),
                [str(f) for r in batch.results for f in r.downloads] or None, _status(batch),
                *view(batch.results, first))

    with gr.Blocks(title='JUDE: restore night photos', analytics_enabled=False,
                   delete_cache=(KEEP_FILES_S // 4, KEEP_FILES_S)) as demo:
        gr.Markdown('# JUDE: restore night photos\n'
                    'Drop dark, shaky photos: JUDE estimates each photo\'s blur, removes it and brightens the '
                    'photo, and shows how it got there. Everything runs on this computer.\n\n'
                    f'Model: {_escape(model_label)}')
        results = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label='Photos', file_count='multiple', file_types=list(IMAGE_EXTENSIONS),
                                elem_id='photos')
                with gr.Accordion('Settings', open=False):
                    precision = gr.Dropdown(choices['precision'], value=defaults.precision, label='Precision',
                                            info='bf16 is the fast half precision on CPUs, fp16 on GPUs')
                    tile = gr.Textbox(value=str(defaults.tile), label='Tile size',
                                      info="'auto': the largest tile that fits half the free memory; 0: whole "
                                      'photo; or a size in pixels')
                    device = gr.Dropdown(choices['device'], value=defaults.device, label='Device')
                button = gr.Button('Restore', variant='primary', elem_id='restore')
                status = gr.Markdown(elem_id='status')
            with gr.Column(scale=2):
                selector = gr.Dropdown([], label='Photo', visible=False, interactive=True, type='value')
                slider = gr.ImageSlider(label='Before / after', type='filepath', elem_id='compare')
                downloads = gr.File(label='Downloads: the full-resolution result and what JUDE did',
                                    file_count='multiple', interactive=False, elem_id='downloads')
        with gr.Accordion('Inside JUDE', open=True):
            gr.Markdown('JUDE unrolls an optimisation: it estimates the blur kernel, deblurs with it stage by stage, '
                        'splits the sharp image I into illumination L and reflectance R, then brightens L and '
                        'cleans R; their product is the result. λ1..λ5 weigh the terms of each stage, γ steer the '
                        'learned denoisers. The factors of a product are each shown at their own brightness.')
            # Said first when the kernels are nearly uniform: then what follows is no picture of the physics.
            warning = gr.Markdown(elem_id='physics-warning')
            # One row each: the kernel(s) (with the weight map or tile layout), the input and every stage, the
            # four Retinex factors; pictures are never cropped.
            stage_count = service.network.config['num_stages'] + 1 if isinstance(service.network, JUDE) else 6
            blur = gr.Gallery(label='Estimated blur', columns=4, fit_columns=False, height=260, object_fit='contain',
                              elem_id='blur')
            stages = gr.Gallery(label='The sharp low-light image I after each stage', columns=min(stage_count, 6),
                                height=300, object_fit='contain', elem_id='stages')
            retinex = gr.Gallery(label='Illumination and reflectance', columns=4, height=300, object_fit='contain',
                                 elem_id='retinex')
            table = gr.Markdown(elem_id='hyperparameters')

        views = [slider, warning, blur, stages, retinex, table]
        button.click(restore, [files, precision, tile, device], [results, selector, downloads, status, *views],
                     api_name='restore', concurrency_limit=1, concurrency_id='restore')
        selector.change(view, [results, selector], views, api_name=False, queue=False)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


# ---------------------------------------------------------------------------------------------- command line


def build_parser():
    """jude-app's options: jude-restore's model, device, precision, tile and pixel options, and the server's."""
    restore_cli = cli.build_parser()
    parser = argparse.ArgumentParser(prog='jude-app', description='Restore night photos in the browser with a '
                                     'trained JUDE model, and see what it did.')
    for option in SHARED_OPTIONS:
        # argparse has no public way to share one option between two parsers that differ otherwise.
        parser._add_action(copy.copy(restore_cli._option_string_actions[option]))
    precision = parser._option_string_actions['--precision']
    if 'auto' in (precision.choices or ()):  # where the restorer can choose, the page lets it
        precision.default = 'auto'
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default: 127.0.0.1, this computer only; 0.0.0.0: every network)')
    parser.add_argument('--port', type=int, default=7860, help='port (default: 7860)')
    parser.add_argument('--max-upload-mb', type=float, default=200, help='largest upload in MB (default: 200)')
    parser.add_argument('--web', action='store_true', help=argparse.SUPPRESS)  # jude-restore --web lands here
    return parser


def _gradio_environment(workdir):
    """Settings Gradio reads from the environment, before it is imported: its upload cache in our folder,
    no analytics and version check, nothing fetched from the Hugging Face hub."""
    os.environ['GRADIO_TEMP_DIR'] = str(Path(workdir) / 'gradio')
    os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'
    os.environ['HF_HUB_OFFLINE'] = '1'
    os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'


def _theme(gr):
    # System fonts: the default themes' web fonts are fetched by the browser.
    return gr.themes.Default(font=['system-ui', 'Segoe UI', 'Roboto', 'sans-serif'],
                             font_mono=['ui-monospace', 'Menlo', 'Consolas', 'monospace'])


def _model_label(model_path, network):
    """The checkpoint's file name (never its folder) and what the network is."""
    details = []
    if isinstance(network, JUDE):
        config = network.config
        details += [f'{config["num_stages"]} stages', f'{config["kernel_size"]}×{config["kernel_size"]} blur kernel']
    details.append(f'{sum(p.numel() for p in network.parameters()) / 1e6:.1f} M parameters')
    return f'{Path(model_path).name}: {type(network).__name__}, {", ".join(details)}'


def main(argv=None):
    """Start the web app and serve until Ctrl-C or SIGTERM; returns the exit status (2: it could not start).

    Args:
        argv (list[str] | None): the arguments; None reads the command line and lets malloc keep freed
            memory for reuse, as `jude-restore` does.
    """
    args = build_parser().parse_args(argv)
    if argv is None:
        hold_freed_memory()
    with cli._console_logging():
        return _serve(args)


def _serve(args):
    if importlib.util.find_spec('gradio') is None:  # not imported yet: its environment is set first
        logger.error(INSTALL_HINT)
        return 2
    try:
        network_opt = read_network_options(args.opt) if args.opt else None
        network = load_network(args.model_path, network_opt)
        # The settings as given on the command line must work (the page offers them as defaults).
        JUDERestorer(network, device=args.device, precision=args.precision, tile=args.tile,
                     tile_overlap=args.tile_overlap)
    except RestoreError as error:
        logger.error(str(error))
        return 2

    workdir = Path(tempfile.mkdtemp(prefix='jude-app-'))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    demo = service = None
    try:
        _gradio_environment(workdir)
        import gradio as gr
        service = RestoreService(network, workdir, args.tile_overlap, round(args.max_megapixels * 1e6))
        demo = build_app(service, args, _model_label(args.model_path, network))
        try:
            demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True,
                        show_error=True, max_file_size=int(args.max_upload_mb * 1e6), ssr_mode=False, pwa=False,
                        mcp_server=False, enable_monitoring=False, theme=_theme(gr))
        except OSError as error:
            logger.error(f'cannot listen on {args.host}:{args.port} ({error}); choose another --port')
            return 2
        logger.info(f'JUDE web app: {demo.local_url} (Ctrl-C to stop)')
        while not stop.wait(0.5):
            pass
        logger.info('stopping')
        return 0
    finally:
        if demo is not None:
            demo.close(verbose=False)
        if service is not None:
            service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
