"""LOL-Blur data for BasicSR: blur kernels, synthesis, LMDB packing and the registered dataset.

- `blur_kernels`: random camera-shake kernels.
- `synthesis`: LOL-Blur-style pairs from sharp photos (`datasets_prep/synthesize_lolblur.py`).
- `lolblur_lmdb`: LOL-Blur folders → BasicSR LMDBs (`datasets_prep/prepare_lolblur.py`).
- `lolblur_dataset`: `LOLBlurDataset` (DATASET_REGISTRY); `lq_noise`: its optional phase-3 noise.
- `shake_blur_dataset`: `ShakeBlurDataset` (DATASET_REGISTRY), frames synthesised on the fly (kernel pretraining).
- `lolblur_layout`, `image_io`, `parallel`: the folder layout and keys, strict image reading, worker pools.
"""
from .lolblur_dataset import LOLBlurDataset  # importing registers the datasets
from .lq_noise import add_lq_noise
from .shake_blur_dataset import ShakeBlurDataset

__all__ = ['LOLBlurDataset', 'ShakeBlurDataset', 'add_lq_noise']
