"""Pack LOL-Blur into BasicSR LMDBs: `<out>/{train,test}_{lq,gt}.lmdb`, keys `<video>_<frame>`.

    python datasets_prep/prepare_lolblur.py --root datasets/LOL-Blur --out datasets/LOL-Blur/lmdb

See `jude_arch.data.lolblur_lmdb.prepare_lolblur` for what is checked and how a failed or interrupted run
leaves the output folder untouched.
"""
import argparse

from jude_arch.data.cli import positive_int, run_tool
from jude_arch.data.lolblur_layout import LQ_FOLDERS, SPLITS
from jude_arch.data.lolblur_lmdb import FRAME_FORMATS, prepare_lolblur


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', required=True, help='folder holding train/ and test/ in the LOL-Blur layout')
    parser.add_argument('--out', required=True, help='output folder for the LMDBs (created if missing)')
    parser.add_argument('--lq', default='low_blur_noise', choices=LQ_FOLDERS,
                        help='LQ folder (default: %(default)s); the GT is always high_sharp_scaled')
    parser.add_argument('--splits', nargs='+', default=list(SPLITS), help='splits to pack (default: train test)')
    parser.add_argument('--workers', type=positive_int, default=1,
                        help='processes that decode and encode (default: 1)')
    parser.add_argument('--format', default='png', choices=FRAME_FORMATS, dest='frame_format',
                        help='how frames are stored: png (default; BasicSR\'s datasets read it too) or raw (about '
                             'twice the space, read by LOLBlurDataset without decoding: training crops come about 5x '
                             'faster, see docs/data.md)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing LMDBs once the new ones are complete')
    args = parser.parse_args(argv)
    result = run_tool(lambda: prepare_lolblur(args.root, args.out, lq=args.lq, splits=args.splits,
                                              overwrite=args.overwrite, workers=args.workers,
                                              frame_format=args.frame_format), args.out)
    for split, info in result.items():
        print(f'{split}: {info["frames"]} pairs -> {info["lq"]}, {info["gt"]}')


if __name__ == '__main__':
    main()
