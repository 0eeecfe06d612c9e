"""Shared by the training tests: one tiny synthetic LOL-Blur LMDB per session, tiny options, subprocess runs and
BasicSR's pipelines in this process."""
import copy
import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model

from jude_arch.data.lolblur_lmdb import prepare_lolblur
from jude_arch.data.synthesis import synthesize_lolblur

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_DATASETS = {}

# A small JUDE (2 stages, narrow U-Nets, 15×15 kernel): the workflow is under test, not the network.
TINY_NET = {'type': 'JUDE', 'preset': 'small', 'num_stages': 2, 'unet_channels': [8, 16, 32, 32],
            'kernel_size': 15, 'enhancer_width': 8, 'denoiser_width': 8, 'kernel_width': 4}


def tiny_lolblur(tmp_path_factory):
    """Synthesise (skimage photos, 64×64, 2 frames per photo: 6 train / 4 test pairs) and pack to LMDB, once.

    Returns:
        Path: folder with lolblur/ (the LOL-Blur layout) and lmdb/ ({train,test}_{lq,gt}.lmdb).
    """
    if 'tiny' not in _DATASETS:
        root = tmp_path_factory.mktemp('tiny_lolblur')
        synthesize_lolblur('skimage', root / 'lolblur', size=64, frames_per_photo=2, test_photos=2, seed=0)
        prepare_lolblur(root / 'lolblur', root / 'lmdb')
        _DATASETS['tiny'] = root
    return _DATASETS['tiny']


def tiny_options(data, name, total_iter=12, periods=None, network=None, model='JUDEModel', **sections):
    """Options of a tiny CPU run on the LMDBs in `data` (dict like a parsed YAML).

    Args:
        data (Path): a folder from `tiny_lolblur`.
        name (str): experiment name.
        total_iter (int): iterations; validation and checkpoints every total_iter // 2.
        periods (list[int] | None): cosine periods (default: [total_iter]).
        network (dict | None): network_g (default: TINY_NET).
        model (str): model_type.
        **sections: top-level sections merged over the defaults (dicts are updated one level deep).
    """
    half = max(total_iter // 2, 1)
    lmdb = Path(data) / 'lmdb'
    opt = {
        'name': name, 'model_type': model, 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny-train', 'type': 'LOLBlurDataset', 'dataroot_gt': str(lmdb / 'train_gt.lmdb'),
                      'dataroot_lq': str(lmdb / 'train_lq.lmdb'), 'io_backend': {'type': 'lmdb'}, 'gt_size': 32,
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 10, 'prefetch_mode': None},
            'val': {'name': 'tiny-test', 'type': 'LOLBlurDataset', 'dataroot_gt': str(lmdb / 'test_gt.lmdb'),
                    'dataroot_lq': str(lmdb / 'test_lq.lmdb'), 'io_backend': {'type': 'lmdb'}},
        },
        'network_g': copy.deepcopy(network or TINY_NET),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': periods or [total_iter],
                                'restart_weights': [1], 'eta_min': 1e-6},
                  'total_iter': total_iter, 'warmup_iter': -1, 'pixel_opt': {'type': 'JUDELoss'}},
        'val': {'val_freq': half, 'save_img': True, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': half, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(opt.get(key), dict):
            opt[key].update(value)
        else:
            opt[key] = value
    return opt


def eval_options(train_opt, name, checkpoint, suffix='tiny'):
    """Test-pipeline options for the val set of `train_opt`, loading `checkpoint`."""
    return {'name': name, 'model_type': train_opt['model_type'], 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test': copy.deepcopy(train_opt['datasets']['val'])},
            'network_g': copy.deepcopy(train_opt['network_g']),
            'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params_ema', 'strict_load_g': True},
            'val': {'save_img': True, 'suffix': suffix, 'metrics': copy.deepcopy(train_opt['val']['metrics'])}}


def make_model(data, work, is_train=True, **sections):
    """A JUDEModel from options as BasicSR's parse_options would leave them (no files read but the data)."""
    opt = tiny_options(data, 'unit', **sections)
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(experiments_root=str(work), models=str(work / 'models'),
                       training_states=str(work / 'training_states'), visualization=str(work / 'visualization'),
                       log=str(work))
    for sub in ('models', 'training_states'):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase
        dataset['scale'] = 1
    return build_model(opt), opt


def train_batch(data):
    """Two training items of the tiny set, stacked (seeded)."""
    torch.manual_seed(0)
    opt = tiny_options(data, 'unit')['datasets']['train']
    opt.update(phase='train', scale=1)
    dataset = build_dataset(opt)
    return {key: torch.stack([dataset[i][key] for i in range(2)]) for key in ('lq', 'gt')}


def write_yaml(opt, path):
    path = Path(path)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def run(command, cwd, timeout=300, env=None):
    """Run a command (2 torch threads), return its combined output; fail the test with the output's tail.

    The command runs in its own process group, killed as a whole on timeout (torchrun's workers too).
    """
    full_env = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONWARNINGS': 'ignore', **(env or {})}
    command = [str(c) for c in command]
    with subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise AssertionError(f'{" ".join(command)} timed out after {timeout} s:\n{output[-4000:]}') from None
    if proc.returncode:
        raise AssertionError(f'{" ".join(command)} failed ({proc.returncode}):\n{output[-4000:]}')
    return output


# Printed between the two runs of `train_then_resume`.
RESUME_MARK = '--- train_then_resume: the first run ended; resuming ---'
_TRAIN_THEN_RESUME = f"""
import sys
first, second, root = sys.argv[1:4]
sys.path.insert(0, root)  # this checkout's jude_arch, as running jude_arch/train.py from it would
from jude_arch.train import main
sys.argv = ['train.py', '-opt', first]
main()
print({RESUME_MARK!r}, file=sys.stderr, flush=True)
sys.argv = ['train.py', '-opt', second, '--auto_resume']
main()
"""


def train_then_resume(first_yml, second_yml, cwd, timeout=600, env=None):
    """jude_arch/train.py's `main` with `-opt first_yml`, then with `-opt second_yml --auto_resume`, both in one
    child process: one interpreter (and CUDA) start-up instead of two. The resume is BasicSR's --auto_resume path
    as on the command line (options parsed again, the newest training state found and loaded, the model rebuilt).
    In one process BasicSR's logger keeps its first log file, so the resumed run appends to it.

    Returns:
        tuple[str, str]: the output (BasicSR's log lines included) of the first run and of the resumed run.
    """
    out = run([PYTHON, '-c', _TRAIN_THEN_RESUME, first_yml, second_yml, ROOT], cwd=cwd, timeout=timeout, env=env)
    first, resumed = out.split(RESUME_MARK)
    return first, resumed


class Records(logging.Handler):
    """Keeps the messages a logger emits."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def pipeline_in_process(pipeline, argv, work, monkeypatch):
    """BasicSR's train_pipeline or test_pipeline in this process (no interpreter start-up), with the command line
    `argv`, from the folder `work`; returns BasicSR's log messages of the run."""
    monkeypatch.setattr(sys, 'argv', [str(a) for a in argv])
    monkeypatch.chdir(work)
    records, logger = Records(), logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)  # BasicSR sets it only when its logger is first made with a log file
    try:
        pipeline(str(work))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    return '\n'.join(records.messages)


def train_log(experiments, name):
    """Text of all training logs of experiment `name` (one per run, oldest first)."""
    return '\n'.join(p.read_text() for p in sorted((Path(experiments) / name).glob(f'train_{name}_*.log')))


class FakeTensorBoard:
    """Records what a model logs to TensorBoard."""

    def __init__(self):
        self.images, self.scalars = {}, {}

    def add_image(self, tag, image, step):
        self.images[tag] = image

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value


def save_small_checkpoint(path, **extra):
    """A small JUDE with random weights (seed 0) saved as training saves it: 'params' and 'network_g', plus
    `extra` entries (e.g. params_ema=True to store the same weights as EMA)."""
    import torch
    from collections import OrderedDict

    from jude_arch.archs import JUDE

    torch.manual_seed(0)
    net = JUDE(preset='small')
    state = OrderedDict((k, v.clone()) for k, v in net.state_dict().items())
    saved = {'params': state, 'network_g': {'type': 'JUDE', **net.config}}
    if extra.pop('params_ema', False):
        saved['params_ema'] = state
    torch.save({**saved, **extra}, path)
    return path


def run_train_main(opt, work, monkeypatch, log=None, args=()):
    """jude_arch/train.py's main() in this process (working directory `work`, BasicSR flags `args`); returns
    (exit message or None, log text or None). `log`: a caplog attached to BasicSR's logger."""
    import jude_arch.train

    path = write_yaml(opt, Path(work) / f'{opt["name"]}.yml')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path), *args])
    monkeypatch.chdir(work)
    message = None
    try:
        jude_arch.train.main()
    except SystemExit as stop:
        message = str(stop.code)
    # the exception's traceback held the run's LMDB environments open, which the next run in this process reopens
    gc.collect()
    return message, log.text if log is not None else None


def flip_bits(path, record='data/0', count=4):
    """Damage a file torch.save wrote without changing its size: flip a bit in the first `count` float32 values of
    the zip record whose name ends with `record` (the top exponent bit: 1e-3 becomes ~1e35)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(record))
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack('<HH', f.read(4))
        start = info.header_offset + 30 + name_length + extra_length
        f.seek(start)
        data = bytearray(f.read(4 * count))
        for i in range(3, len(data), 4):
            data[i] ^= 0x40
        f.seek(start)
        f.write(data)
    return path
