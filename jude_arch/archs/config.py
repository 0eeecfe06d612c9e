"""JUDE's options, declared once: the `JUDEConfig` dataclass, its presets and its validation.

`JUDE(preset='small', num_stages=4)` and YAML's `network_g: {type: JUDE, preset: small, num_stages: 4}` both
come here: a preset is a `JUDEConfig` instance and the overrides replace its fields (`dataclasses.replace`),
which runs the one validation (`__post_init__`). The typo check of the options files reads the option names
from the same fields (`option_names`).
"""
import dataclasses
from dataclasses import dataclass
from typing import Tuple

from .data_step import check_boundary
from .retinex_heads import IlluminationEnhancer

ENHANCER_INPUTS = ('L', 'PQ')
DENOISER_INPUTS = ('R', 'P')


@dataclass(frozen=True)
class JUDEConfig:
    """Everything that defines a JUDE network. The defaults are the `full` preset: the paper's model with the
    released layer shapes.

    Args:
        num_stages (int): unrolled stages K (full: 5, small: 3).
        unet_channels (tuple[int]): widths of the four ResUNet levels (full: 64, 128, 256, 512;
            small: 16, 32, 64, 128). A list is accepted and stored as a tuple.
        unet_blocks (int): residual blocks per ResUNet level (full: 2, small: 1).
        kernel_size (int): side k of the estimated blur kernels, 3..128 (31 in both paper presets; the
            released model used 33).
        num_kernels (int): basis kernels B; B > 1 adds a per-pixel weight map for non-uniform blur (1).
        kernel_width (int): base width of the kernel estimator (full: 16, small: 8).
        share_operators (bool): one D_P, D_Q, D_Z shared by all stages (True, as released) or one per
            stage (multiplies their parameters by K).
        enhancer_input (str): what the illumination enhancer brightens: 'L' (L_K, the paper) or 'PQ'
            (P_K ⊙ Q_K, the sharp low-light image, as the released code).
        enhancer_width (int): illumination-enhancer width (full: 64, small: 32).
        denoiser_width (int): reflectance-denoiser width (full: 32, small: 16).
        boundary (str): boundary handling of the FFT data step: 'replicate' (the paper presets; measured
            best on photos, docs/boundary.md), 'reflect' or 'circular', or 'released': the released network's
            I-update, which reproduces a defect on purpose (see `data_step`); only for the released weights.
        refine_steps (int): expectation–maximisation passes that refine the unobserved band around the frame
            in the padded boundary modes (2; ignored by 'circular' and 'released'; docs/algorithm.md).
        checkpoint_stages (bool | str): gradient checkpointing of the proximal operators: each call keeps only
            its input and recomputes its activations in the backward pass. Same result, a fraction of the
            training memory, about one more forward pass of compute (False). 'auto': only when a training
            step's activations would not fit the device's free memory, estimated from the input's shape
            (`checkpoint_policy`).
        channels_last (bool): run the convolutional sub-networks in the channels_last (NHWC) memory
            format, which oneDNN and cuDNN convolve faster; the unrolled variables and the FFT step stay
            NCHW. Same result up to float rounding (True).
        kernel_pad_input (bool): pad the kernel estimator's input to a multiple of 32 (True) or let its
            pools drop odd rows and columns as the release does (False).
        enhancer_variant (str): 'paper' or 'released' forward of the illumination enhancer (they differ in
            one activation and the decoder's padding; see `IlluminationEnhancer`).
        denoiser_input (str): what the reflectance denoiser cleans: 'R' (R_K, the paper) or 'P' (P_K, the
            release; R_K equals P_K up to rounding, the multipliers stay 0).
        hypernet_batch_stats (bool): the hyper-parameter net's BatchNorm uses the statistics of the batch
            at inference too, as the authors' evaluation did (False).
        kernel_statistics (bool): the kernel estimator also reads the blur from the image's gradient
            correlations and centres its kernel (`blur_statistics`, docs/physics.md); adds
            `kernel_estimator.statistics.*` weights; one kernel only (False: the paper's estimator).
    """

    num_stages: int = 5
    unet_channels: Tuple[int, ...] = (64, 128, 256, 512)
    unet_blocks: int = 2
    kernel_size: int = 31
    num_kernels: int = 1
    kernel_width: int = 16
    share_operators: bool = True
    enhancer_input: str = 'L'
    enhancer_width: int = 64
    denoiser_width: int = 32
    boundary: str = 'replicate'
    refine_steps: int = 2
    checkpoint_stages: object = False  # True, False or 'auto'
    channels_last: bool = True
    kernel_pad_input: bool = True
    enhancer_variant: str = 'paper'
    denoiser_input: str = 'R'
    hypernet_batch_stats: bool = False
    kernel_statistics: bool = False

    def __post_init__(self):
        if isinstance(self.unet_channels, (list, tuple)):
            object.__setattr__(self, 'unet_channels', tuple(self.unet_channels))
        for key in ('num_stages', 'unet_blocks', 'num_kernels', 'kernel_width', 'enhancer_width', 'denoiser_width'):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                self._fail(key, 'a positive integer')
        if not _is_int(self.refine_steps) or self.refine_steps < 0:
            self._fail('refine_steps', 'an integer ≥ 0')
        channels = self.unet_channels
        if not isinstance(channels, tuple) or len(channels) != 4 or not all(_is_int(c) and c >= 1 for c in channels):
            self._fail('unet_channels', 'four positive widths, e.g. [64, 128, 256, 512]')
        if not _is_int(self.kernel_size) or not 3 <= self.kernel_size <= 128:
            self._fail('kernel_size', 'an integer from 3 to 128')
        for key, allowed in (('enhancer_input', ENHANCER_INPUTS), ('denoiser_input', DENOISER_INPUTS),
                             ('enhancer_variant', IlluminationEnhancer.VARIANTS)):
            if getattr(self, key) not in allowed:
                self._fail(key, f'one of {allowed}')
        for key in ('share_operators', 'channels_last', 'kernel_pad_input', 'hypernet_batch_stats',
                    'kernel_statistics'):
            if not isinstance(getattr(self, key), bool):
                self._fail(key, 'true or false')
        if not isinstance(self.checkpoint_stages, bool) and self.checkpoint_stages != 'auto':
            self._fail('checkpoint_stages', 'true, false or auto')
        try:
            check_boundary(self.boundary, self.num_kernels)
        except ValueError as error:
            raise ValueError(f'JUDE: {error}') from None
        if not self.kernel_pad_input and self.num_kernels != 1:
            self._fail('num_kernels', '1 with kernel_pad_input false (the weight-map head needs a padded input)')
        if self.kernel_statistics and self.num_kernels != 1:
            self._fail('num_kernels', '1 with kernel_statistics true (the statistics refine one kernel)')
        if self.kernel_statistics and self.kernel_size % 2 == 0:
            self._fail('kernel_size', 'odd with kernel_statistics true (the correlations are centred)')

    def _fail(self, key, expected):
        raise ValueError(f'JUDE: {key} must be {expected}, got {getattr(self, key)!r}')

    @classmethod
    def from_options(cls, preset='full', **options):
        """The preset's configuration with `options` replacing its fields (None: keep the preset's value).

        Raises one ValueError naming a bad preset, an unknown option or an invalid value.
        """
        options = {key: value for key, value in options.items() if value is not None}
        if preset not in PRESETS:
            raise ValueError(f'JUDE: unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ValueError(f'JUDE: unknown option {unknown[0]!r}; valid options: {", ".join(cls.option_names())}')
        return dataclasses.replace(PRESETS[preset], **options)

    @classmethod
    def option_names(cls):
        """The option names besides `preset`, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def as_dict(self):
        """Plain options (lists, not tuples) that rebuild the network: build_network({'type': 'JUDE', **d})."""
        options = dataclasses.asdict(self)
        options['unet_channels'] = list(self.unet_channels)
        return options


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


FULL = JUDEConfig()
PRESETS = {
    # The paper's model with the released layer shapes.
    'full': FULL,
    # For CPU work, demos and tests: ~1/70 of the full model's FLOPs per pixel.
    'small': dataclasses.replace(FULL, num_stages=3, unet_channels=(16, 32, 64, 128), unet_blocks=1, kernel_width=8,
                                 enhancer_width=32, denoiser_width=16),
    # The authors' released network, computing what it computes (their I-update defect included), so that
    # their checkpoint converted by `jude_arch.released` gives their results (docs/released_model.md).
    'released': dataclasses.replace(FULL, kernel_size=33, enhancer_input='PQ', boundary='released',
                                    kernel_pad_input=False, enhancer_variant='released', denoiser_input='P'),
}
