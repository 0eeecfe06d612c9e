"""Make docs/images/overview.png, the README's picture, with the project's own tools.

    OMP_NUM_THREADS=1 python docs/make_overview.py                       # runs the demo first (minutes on a CPU)
    python docs/make_overview.py --work /tmp/demo_docs --skip-demo       # reuse a finished demo's work folder

1. `python -m jude_arch.demo --work WORK` synthesises LOL-Blur-style pairs from scikit-image's photos and trains
   the small JUDE on three of them;
2. the demo's model (its default, physics recipe) restores the darkest frame of the held-out photos (never seen in training) with
   `JUDERestorer`, the class behind `jude-restore`;
3. one row of pictures, as `jude-restore --save-intermediates` draws them (`panel_views`): the input, JUDE's
   output, the ground truth, the estimated blur kernel and the sharp low-light image I after the last stage,
   saved palette-quantised so that the PNG stays small.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from jude_arch.data.lolblur_layout import GT_FOLDER, pair_frames
from jude_arch.restore import JUDERestorer
from jude_arch.restore.intermediates_panel import panel_views, to_display
from jude_arch.restore.photo_io import read_photo
from jude_arch.tools.demo import RECIPES

ROOT = Path(__file__).resolve().parents[1]
CELL = 256  # pixels, the longer side of each picture
GAP, LABEL, BACKGROUND = 6, 22, 255


def labelled(picture, label):
    """A picture with its label above it, on the page's background."""
    head = np.full((LABEL, picture.shape[1], 3), BACKGROUND, np.uint8)
    cv2.putText(head, label, (2, LABEL - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return np.concatenate([head, picture])


def overview_row(lq_path, gt_path, model_path):
    """Input | output | ground truth | kernel | I after the last stage, one BGR uint8 image."""
    image = read_photo(lq_path)
    restorer = JUDERestorer.from_checkpoint(model_path, device='cpu', precision='fp32', tile=0)
    restored, intermediates = restorer.restore(image, return_intermediates=True)
    views = panel_views(image, restored, intermediates, size=CELL)
    (_, shown_input), (_, output), (kernel_label, kernel) = views.overview[:3]
    last_label, last_stage = views.stages[-1]
    cells = [('input (dark, shaken, noisy)', shown_input), ('JUDE output', output),
             ('ground truth', to_display(read_photo(gt_path), max_side=CELL)),
             (kernel_label.replace(' (each to its max)', ', estimated'), kernel), (last_label, last_stage)]
    height = max(picture.shape[0] for _, picture in cells)
    row = []
    for label, picture in cells:
        picture = cv2.copyMakeBorder(picture, 0, height - picture.shape[0], 0, 0, cv2.BORDER_CONSTANT,
                                     value=(BACKGROUND, ) * 3)
        row += [labelled(picture, label), np.full((height + LABEL, GAP, 3), BACKGROUND, np.uint8)]
    return np.concatenate(row[:-1], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/jude_overview'), help='the demo\'s work folder')
    parser.add_argument('--skip-demo', action='store_true', help='use the demo already finished in --work')
    parser.add_argument('--frame', help='key of the held-out frame, e.g. 0004_0002 (default: the darkest)')
    parser.add_argument('--out', type=Path, default=ROOT / 'docs' / 'images' / 'overview.png')
    args = parser.parse_args(argv)
    if not args.skip_demo:
        subprocess.run([sys.executable, '-m', 'jude_arch.demo', '--work', str(args.work)], check=True)
    model = args.work / 'experiments' / RECIPES['physics'].experiment / 'models' / 'net_g_latest.pth'  # the default's
    test = args.work / 'lolblur' / 'test'
    if not model.is_file() or not (test / 'low_blur_noise').is_dir():
        raise SystemExit(f'make_overview: no finished demo in {args.work} ({model} missing); run without --skip-demo')
    frames = {key: (lq, gt) for key, lq, gt in pair_frames(test / 'low_blur_noise', test / GT_FOLDER)}
    key = args.frame or min(frames, key=lambda k: float(read_photo(frames[k][0]).mean()))
    if key not in frames:
        raise SystemExit(f'make_overview: --frame {key}: not a held-out frame; keys: {", ".join(sorted(frames))}')
    lq_path, gt_path = frames[key]
    row = overview_row(lq_path, gt_path, model)
    picture = Image.fromarray(row[..., ::-1]).quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, optimize=True)
    print(f'{args.out}: frame {key} of the held-out split, {args.out.stat().st_size / 1024:.0f} KiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
