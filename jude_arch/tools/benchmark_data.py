"""The data-loader case of the benchmark: how fast `LOLBlurDataset` feeds training, in batches and samples per second.

A training step can only run as fast as its batches arrive. The case builds LOL-Blur-sized pairs (1120×640 PNG
frames made from scikit-image's bundled photos, dark, blurred and noisy like LOL-Blur's input) packed into LMDBs as
`datasets_prep/prepare_lolblur.py` packs LOL-Blur (PNG or raw frames: the case's `frame_format`), and reads them
through BasicSR's data loader with a phase file's settings (random crop, flips and rotations, batch size,
workers). Worker start-up and the first
`prefetch_factor × workers` batches, which the workers prepare ahead, are not timed; then `repeats` batches are
fetched and copied to the case's device as `JUDEModel.feed_data` does. Compared with the training step's time
(`python -m jude_arch.tools.benchmark` prints the ratio when both are measured), it shows whether the loader keeps
up: it should deliver batches at least 1.5× as fast as the step consumes them.
"""
import statistics
import tempfile
import time
from pathlib import Path

LOLBLUR_SIZE = (640, 1120)  # height, width of a LOL-Blur frame
PREFETCH_FACTOR = 2  # torch's DataLoader default: batches each worker prepares ahead


def write_synthetic_lolblur(root, pairs, size=LOLBLUR_SIZE, seed=0):
    """Write `pairs` LOL-Blur-style training pairs (the `train/` layout) of `size` under root; return root."""
    import cv2
    import numpy as np

    from ..data.synthesis import skimage_photo_paths

    rng = np.random.default_rng(seed)
    photos = skimage_photo_paths()
    height, width = size
    for i in range(pairs):
        photo = cv2.imread(str(photos[i % len(photos)]), cv2.IMREAD_COLOR)
        gt = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        lq = cv2.GaussianBlur(gt.astype(np.float32) * 0.15, (0, 0), 1.5 + i % 3)
        lq = np.clip(lq + rng.normal(0, 2.0, lq.shape), 0, 255).astype(np.uint8)
        for folder, image in (('high_sharp_scaled', gt), ('low_blur_noise', lq)):
            path = Path(root) / 'train' / folder / f'{i // 4:04d}' / f'{i % 4:04d}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
    return Path(root)


def build_loader(lmdb_folder, crop, batch, workers, seed=0):
    """BasicSR's training data loader over the LMDBs in `lmdb_folder` with a phase file's dataset options."""
    from basicsr.data import build_dataloader, build_dataset

    import jude_arch  # noqa: F401  (registers LOLBlurDataset)

    lmdb_folder = Path(lmdb_folder)
    opt = dict(name='synthetic-LOL-Blur', type='LOLBlurDataset', phase='train', scale=1,
               dataroot_gt=str(lmdb_folder / 'train_gt.lmdb'), dataroot_lq=str(lmdb_folder / 'train_lq.lmdb'),
               io_backend={'type': 'lmdb'}, gt_size=crop, use_hflip=True, use_rot=True, num_worker_per_gpu=workers,
               batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None)
    dataset = build_dataset(opt)
    return build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=None, seed=seed)


def measure_loader(case, report=lambda row: None):
    """Time the data loader of one case; return its row (seconds per batch, samples per second).

    Args:
        case (dict): height, width (the crop: square crops use height), batch, workers, device, repeats,
            pairs (synthetic pairs, default 24).
        report (callable): called with the row as it stands after each stage.
    """
    import torch

    from ..data.lolblur_lmdb import prepare_lolblur
    from .benchmark_case import _first_line

    row = dict(case, status='ok')
    device = torch.device(case['device'])
    workers, repeats = case.get('workers', 6), case['repeats']
    try:
        with tempfile.TemporaryDirectory(prefix='jude-loader-') as work:
            row['stage'] = 'writing the synthetic LMDB'
            report(row)
            write_synthetic_lolblur(Path(work) / 'lolblur', case.get('pairs', 24))
            prepare_lolblur(Path(work) / 'lolblur', Path(work) / 'lmdb', splits=['train'],
                            frame_format=case.get('frame_format', 'png'))
            loader = build_loader(Path(work) / 'lmdb', case['height'], case['batch'], workers)
            untimed = max(PREFETCH_FACTOR * workers, 1)
            row['stage'] = 'worker start-up and prefetched batches'
            report(row)
            start = time.perf_counter()
            batches = _endless(loader)
            next(batches)
            row['first_s'] = time.perf_counter() - start
            for _ in range(untimed - 1):
                next(batches)
            row['stage'] = 'timed batches'
            report(row)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                data = next(batches)
                for key in ('lq', 'gt'):
                    data[key].to(device)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            del batches
        row.pop('stage')
        row.update(times_s=times, median_s=sum(times) / len(times), batch_median_s=statistics.median(times),
                   items_per_s=case['batch'] * len(times) / sum(times), workers=workers)
    except Exception as error:  # a missing photo, a full /tmp: reported in the row, the run goes on
        row['status'] = f'failed: {type(error).__name__}: {_first_line(error)}'
    return row


def _endless(loader):
    """Batches from `loader` epoch after epoch."""
    while True:
        yield from loader
