"""Synthesise LOL-Blur-style pairs (dark, shaky, noisy → sharp) from sharp photos, in the LOL-Blur layout.

    python datasets_prep/synthesize_lolblur.py --source skimage --out datasets/synthetic_lolblur
    python datasets_prep/synthesize_lolblur.py --source my_photos/ --out datasets/my_lolblur --size 512

The degradation model and every knob are described in `jude_arch.data.synthesis`.
"""
import argparse
import dataclasses

from jude_arch.data.cli import positive_int, run_tool
from jude_arch.data.image_io import ImageDataError
from jude_arch.data.synthesis import Degradation, synthesize_lolblur

_HELP = {
    'kernel_size': 'blur kernel sizes (odd sizes in the range)',
    'exposure': 'linear-light exposure factor (log-uniform)',
    'highlight_gain': "light sources' level after darkening, in multiples of saturation",
    'highlight_threshold': 'linear level from which a pixel counts as a light source',
    'photons': 'photo-electrons at saturation, for shot noise (log-uniform; fewer: noisier)',
    'read_noise': 'sigma of the Gaussian read noise, linear units',
    'crop_scale': "crop side as a fraction of the photo's shorter side",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', default='skimage',
                        help="folder of sharp photos (searched recursively) or 'skimage' for scikit-image's bundled "
                        'photos (default)')
    parser.add_argument('--out', required=True, help='output root; train/ and test/ are written in it')
    parser.add_argument('--size', type=positive_int, default=256, help='side of the square frames (default: 256)')
    parser.add_argument('--frames-per-photo', type=positive_int, default=4, help='frames per photo (default: 4)')
    parser.add_argument('--test-photos', type=int, default=2, help='photos held out for test/ (default: 2)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--workers', type=positive_int, default=1, help='processes (default: 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing train/ and test/ in --out')
    knobs = parser.add_argument_group('degradation (ranges are MIN MAX)')
    for field in dataclasses.fields(Degradation):
        is_range = isinstance(field.default, tuple)
        default = ' '.join(map(str, field.default)) if is_range else field.default
        knobs.add_argument(f'--{field.name.replace("_", "-")}', type=int if field.name == 'kernel_size' else float,
                           nargs=2 if is_range else None, default=field.default,
                           metavar=('MIN', 'MAX') if is_range else None,
                           help=f'{_HELP[field.name]} (default: {default})')
    args = parser.parse_args(argv)
    degradation = {field.name: getattr(args, field.name) for field in dataclasses.fields(Degradation)}
    summary = run_tool(lambda: synthesize_lolblur(
        args.source, args.out, size=args.size, frames_per_photo=args.frames_per_photo, test_photos=args.test_photos,
        seed=args.seed, workers=args.workers, overwrite=args.overwrite, **degradation),
        args.out, errors=(ImageDataError, ValueError, OSError))
    for split in ('train', 'test'):
        info = summary[split]
        if info['photos']:
            names = ', '.join(path.name for path in info['photos'])
            print(f'{split}: {info["frames"]} pairs from {len(info["photos"])} photo(s) ({names})')
    print(f'written to {summary["root"]}')


if __name__ == '__main__':
    main()
