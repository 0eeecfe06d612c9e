"""The whole JUDE workflow on the embedded default, on the CPU: `python -m jude_arch.demo`.

1. synthesise LOL-Blur-style pairs from scikit-image's bundled photos (2 photos held out for testing),
2. pack them into LMDBs,
3. train the small JUDE (`jude_arch/train.py`) with a recipe:
   - `physics` (the default, docs/physics.md): its kernel estimator alone first (phase 0,
     options/train_kernel_estimator_demo.yml), then JUDE from it with the auxiliary losses on the kernel, I_K,
     R_K and L_K (options/train_jude_demo_physics.yml, docs/physics.md), so that its kernel is a blur, I an image,
     R the colours and L the scene's grey light;
   - `paper`: the paper's loss on the output only (options/train_jude_demo.yml);
4. evaluate it with options/test_jude_demo.yml (`jude_arch/test.py`) on the held-out pairs,
5. print PSNR / SSIM of the input and of JUDE's output against the ground truth, the kernel's re-blur PSNR,
   entropy and similarity beside the uniform kernel and the best isotropic Gaussian, L's colour and structure,
   and where the images and the panel of one held-out frame (`jude-restore --save-intermediates`'s) are.

Everything goes under one work folder (default `demo/`): lolblur/, lmdb*/, experiments/, results/, panels/,
tb_logger/ and the logs of the runs. A second run replaces the data and archives the previous
experiments and results as BasicSR does (`*_archived_<time>`).
"""
import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from basicsr.metrics import calculate_psnr, calculate_ssim

from ..data.lolblur_layout import GT_FOLDER, pair_frames
from ..data.lolblur_lmdb import prepare_lolblur
from ..data.synthesis import synthesize_lolblur
from .demo_physics import physics_report, physics_scores

OPTIONS = Path(__file__).resolve().parents[2] / 'options'
TEST_OPTIONS = OPTIONS / 'test_jude_demo.yml'
# Must match the names in the option files.
TEST_NAME, TEST_SET, SUFFIX = 'JUDE_demo_test', 'synthetic-LOL-Blur-test', 'JUDE'
LQ_FOLDER = 'low_blur_noise'
# Lines of BasicSR's log worth showing while the demo runs (the rest goes to the log file).
PROGRESS = re.compile(r'\]\[epoch:|Start training|Validation|# psnr|# ssim|# reblur|# kernel|re-blur PSNR|Resuming|'
                      r'Error|error:')


@dataclass(frozen=True)
class Recipe:
    """How the demo trains: the optional phase-0 options, JUDE's options and the experiment they name, and the
    extra LMDBs (folder → LOL-Blur folder packed as its LQ) JUDE's options read."""
    phase0: Path
    train: Path
    experiment: str
    extra_lmdbs: tuple


RECIPES = {
    'physics': Recipe(OPTIONS / 'train_kernel_estimator_demo.yml', OPTIONS / 'train_jude_demo_physics.yml',
                      'JUDE_demo_physics', (('lmdb_low_sharp', 'low_sharp'), ('lmdb_low_blur', 'low_blur'))),
    'paper': Recipe(None, OPTIONS / 'train_jude_demo.yml', 'JUDE_demo', ()),
}


def _run(stage, command, work):
    """Run one BasicSR stage in `work`, showing its progress lines; stop with a clear message if it fails."""
    log_path = work / f'{stage}.log'
    print(f'[demo] {stage}: {" ".join(command[1:])}  (log: {log_path})', flush=True)
    with open(log_path, 'w', buffering=1) as log, subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            if PROGRESS.search(line):
                print(f'  {line.rstrip()}', flush=True)
    if proc.returncode:
        tail = ''.join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise SystemExit(f'{tail}\ndemo: {stage} failed (exit status {proc.returncode}); full log: {log_path}')


def evaluate(work):
    """PSNR / SSIM (RGB, 8-bit, no border crop) of input and output against the ground truth, averaged.

    Args:
        work (Path): the demo's work folder.

    Returns:
        dict: {'frames': n, 'input': {'psnr', 'ssim'}, 'output': {'psnr', 'ssim'}, 'images': folder}.
    """
    images = work / 'results' / TEST_NAME / 'visualization' / TEST_SET
    test = work / 'lolblur' / 'test'
    scores = {'input': {'psnr': [], 'ssim': []}, 'output': {'psnr': [], 'ssim': []}}
    for key, lq_path, gt_path in pair_frames(test / LQ_FOLDER, test / GT_FOLDER):
        out_path = images / f'{key}_{SUFFIX}.png'
        gt = cv2.imread(str(gt_path))
        for name, path in (('input', lq_path), ('output', out_path)):
            img = cv2.imread(str(path))
            if img is None:
                raise SystemExit(f'demo: {path} is missing or unreadable; see {work / "test.log"}')
            scores[name]['psnr'].append(calculate_psnr(img, gt, crop_border=0))
            scores[name]['ssim'].append(calculate_ssim(img, gt, crop_border=0))
    frames = len(scores['input']['psnr'])
    means = {name: {metric: float(np.mean(values)) for metric, values in metrics.items()}
             for name, metrics in scores.items()}
    return {'frames': frames, **means, 'images': images}


def _train_command(options, iters):
    command = [sys.executable, '-m', 'jude_arch.train', '-opt', str(options)]
    if iters is not None:
        command += ['--force_yml', f'train:total_iter={iters}', f'train:scheduler:periods=[{iters}]',
                    f'logger:save_checkpoint_freq={iters}']
    return command


def run_demo(work='demo', iters=None, size=256, frames_per_photo=8, seed=0, recipe='physics', phase0_iters=None):
    """Synthesise, pack, train, test and score; see the module docstring.

    Args:
        work (str | Path): work folder (created).
        iters (int | None): JUDE's training iterations; None keeps the recipe's YAML's.
        size (int): side of the synthetic frames.
        frames_per_photo (int): frames per photo (3 training photos, 2 held-out test photos).
        seed (int): seed of the synthesis.
        recipe (str): 'physics' or 'paper' (`RECIPES`).
        phase0_iters (int | None): the physics recipe's phase-0 iterations; None keeps its YAML's.

    Returns:
        dict: the scores of `evaluate`, plus 'recipe', 'model', 'physics' (`demo_physics.physics_scores`) and
        'seconds' (wall time of the whole demo).
    """
    chosen = RECIPES[recipe]
    for path in (chosen.phase0, chosen.train, TEST_OPTIONS):
        if path is not None and not path.is_file():
            raise SystemExit(f'demo: {path} not found; run the demo from a clone of the repository')
    start = time.time()
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f'[demo] synthesising LOL-Blur-style pairs from scikit-image photos into {work / "lolblur"}', flush=True)
    synthesize_lolblur('skimage', work / 'lolblur', size=size, frames_per_photo=frames_per_photo, test_photos=2,
                       seed=seed, overwrite=True)
    print(f'[demo] packing them into LMDBs in {work / "lmdb"}', flush=True)
    prepare_lolblur(work / 'lolblur', work / 'lmdb', overwrite=True)
    for folder, lq in chosen.extra_lmdbs:  # the physics losses' targets, read with the training pairs
        prepare_lolblur(work / 'lolblur', work / folder, lq=lq, splits=['train'], overwrite=True)

    if chosen.phase0 is not None:
        _run('phase0', _train_command(chosen.phase0, phase0_iters), work)
    _run('train', _train_command(chosen.train, iters), work)
    model = work / 'experiments' / chosen.experiment / 'models' / 'net_g_latest.pth'
    # The test builds the network the recipe trained (its YAML's network_g) and loads its weights.
    network = yaml.safe_load(chosen.train.read_text())['network_g']
    _run('test', [sys.executable, '-m', 'jude_arch.test', '-opt', str(TEST_OPTIONS), '--force_yml',
                  f'path:pretrain_network_g={model}', *(f'network_g:{key}={value}' for key, value in network.items())],
         work)

    scores = evaluate(work)
    print('[demo] scoring the physics on the held-out frames', flush=True)
    scores.update(recipe=recipe, model=model, physics=physics_scores(work, model))
    scores['seconds'] = time.time() - start
    return scores


def report(scores, work):
    """The demo's summary, as printed."""
    i, o = scores['input'], scores['output']
    work = Path(work).resolve()
    return '\n'.join([
        f'JUDE demo ({scores["recipe"]} recipe): {scores["frames"]} held-out synthetic frames (photos never seen in '
        'training)',
        f'{"":14s}{"PSNR (dB)":>10s}{"SSIM":>8s}',
        f'{"input":14s}{i["psnr"]:10.2f}{i["ssim"]:8.3f}',
        f'{"JUDE output":14s}{o["psnr"]:10.2f}{o["ssim"]:8.3f}',
        f'{"gain":14s}{o["psnr"] - i["psnr"]:+10.2f}{o["ssim"] - i["ssim"]:+8.3f}',
        *physics_report(scores['physics']),
        f'Restored images: {scores["images"]}',
        f'Model: {scores["model"]}',
        f'TensorBoard: tensorboard --logdir {work / "tb_logger"}',
        f'Time: {scores["seconds"] / 60:.1f} min',
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', default='demo', help='work folder (default: demo/)')
    parser.add_argument('--recipe', choices=sorted(RECIPES), default='physics',
                        help="physics: phase 0, then JUDE with the physics losses (default); paper: the paper's loss")
    parser.add_argument('--iters', type=int, default=None, help="JUDE's training iterations (default: the YAML's)")
    parser.add_argument('--phase0-iters', type=int, default=None,
                        help="the physics recipe's kernel-estimator iterations (default: the YAML's)")
    parser.add_argument('--size', type=int, default=256, help='side of the synthetic frames (default: 256)')
    parser.add_argument('--frames-per-photo', type=int, default=8, help='frames per photo (default: 8)')
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed (default: 0)')
    args = parser.parse_args(argv)
    scores = run_demo(args.work, args.iters, args.size, args.frames_per_photo, args.seed, args.recipe,
                      args.phase0_iters)
    print(report(scores, args.work))
    return 0


if __name__ == '__main__':
    sys.exit(main())
