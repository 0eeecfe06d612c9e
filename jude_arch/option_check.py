"""Refuse options that nothing reads: a typo such as `precison: bf16` would otherwise train in fp32 silently.

BasicSR reads its options with `opt.get(...)` scattered through the code, so a misspelt key is simply never
read. `check_options` compares the sections whose readers are known against the keys those readers take and
names the closest valid key. Checked:
- `train` and `val` when the registered `model_type` declares its additions (`TRAIN_OPTIONS`, `VAL_OPTIONS`, as
  JUDEModel does): BasicSR's keys (basicsr/train.py, SRModel, BaseModel) and the model's own;
- every `datasets.*` whose registered type declares its additions (`OPTIONS`, as LOLBlurDataset does): those,
  PairedImageDataset's and BasicSR's data loader's keys;
- `network_*` and the `train.*_opt` losses, whatever their type, against the registered class's options: those it
  declares with an `option_names()` classmethod (JUDE: the fields of `JUDEConfig`), else its constructor's arguments
  when it takes no `**kwargs` (an unknown one would fail there with a bare TypeError).
Other sections are BasicSR's own or another plugin's and are left alone.
"""
import difflib
import inspect

# What basicsr 1.4.2 reads from `train` for an SRModel (train.py, models/sr_model.py, models/base_model.py) ...
BASICSR_TRAIN_KEYS = ('total_iter', 'warmup_iter', 'ema_decay', 'pixel_opt', 'perceptual_opt', 'optim_g', 'scheduler')
# ... and from `val` (train.py, test.py, models/sr_model.py) ...
BASICSR_VAL_KEYS = ('val_freq', 'save_img', 'metrics', 'suffix', 'pbar')
# ... and from a paired dataset's options (PairedImageDataset; `phase` and `scale` are filled in by BasicSR) and
# its data loader's (basicsr/data/__init__.py, basicsr/train.py).
BASICSR_DATASET_KEYS = ('name', 'type', 'phase', 'scale', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'gt_size',
                        'use_hflip', 'use_rot', 'color', 'mean', 'std', 'meta_info_file', 'filename_tmpl',
                        'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
                        'pin_memory', 'persistent_workers', 'num_prefetch_queue')


class OptionError(ValueError):
    """An option that nothing would read; the message names it and the closest valid key."""


def _check_keys(section, where, known):
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f'did you mean {close[0]}?' if close else f'valid keys: {", ".join(sorted(known))}'
            raise OptionError(f'options: unknown key {where}.{key}; {hint}')


def _registered(registry, type_name):
    """The class registered under type_name, or None (BasicSR's own error names an unknown type)."""
    try:
        return registry.get(type_name) if isinstance(type_name, str) else None
    except KeyError:
        return None


def _constructor_keys(registry, type_name):
    """Option names of a registered class (its `option_names()`, else its constructor's keyword arguments), or None
    when it takes **kwargs without declaring them or is unknown."""
    cls = _registered(registry, type_name)
    if cls is None:
        return None
    if hasattr(cls, 'option_names'):
        return ['type', *cls.option_names()]
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
        return None
    return ['type'] + [p.name for p in parameters]


def _check_constructor(section, where, registry):
    if not isinstance(section, dict) or not section.get('type'):
        return
    known = _constructor_keys(registry, section['type'])
    if known is not None:
        _check_keys(section, where, known)


def check_options(opt):
    """Raise OptionError for the first key of a checked section that nothing reads (see the module docstring).

    Args:
        opt (dict): options as BasicSR's parse_options returns them.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    model = _registered(MODEL_REGISTRY, opt.get('model_type'))
    for name, basicsr_keys, declared in (('train', BASICSR_TRAIN_KEYS, 'TRAIN_OPTIONS'),
                                         ('val', BASICSR_VAL_KEYS, 'VAL_OPTIONS')):
        if hasattr(model, declared) and isinstance(opt.get(name), dict):
            _check_keys(opt[name], name, basicsr_keys + getattr(model, declared))
    for phase, dataset in (opt.get('datasets') or {}).items():
        if not isinstance(dataset, dict):
            continue
        dataset_cls = _registered(DATASET_REGISTRY, dataset.get('type'))
        if hasattr(dataset_cls, 'OPTIONS'):
            _check_keys(dataset, f'datasets.{phase}', BASICSR_DATASET_KEYS + dataset_cls.OPTIONS)
    for name, section in opt.items():
        if name.startswith('network_'):
            _check_constructor(section, name, ARCH_REGISTRY)
    for name, section in (opt.get('train') or {}).items():
        if name.endswith('_opt'):
            _check_constructor(section, f'train.{name}', LOSS_REGISTRY)
