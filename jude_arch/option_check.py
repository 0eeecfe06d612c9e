"""Refuse options that nothing reads: a typo such as `precison: bf16` or `pretrain_netwrok_g: ...` would otherwise
train in fp32, or from scratch, silently.

BasicSR reads its options with `opt.get(...)` scattered through the code, so a misspelt key is simply never
read. `check_options` compares every section whose readers are known against the keys those readers take and
names the closest valid key. The valid keys are declarations, never lists to keep in step by hand:
- `BASICSR_KEYS`: what basicsr 1.4.2 itself reads, per section (read off its code), and `PROJECT_KEYS`: what
  this project's entry points read outside the model (one line each: add a key there when code starts reading
  it);
- the model's additions, declared by the registered `model_type`: `TRAIN_OPTIONS`, `VAL_OPTIONS` (JUDEModel's)
  and `OPTIONS` (top-level keys);
- every `datasets.*` whose registered type declares its additions (`OPTIONS`, as LOLBlurDataset does): those,
  PairedImageDataset's and BasicSR's data loader's keys;
- `network_*` and the `train.*_opt` losses, whatever their type, against the registered class's options: those it
  declares with an `option_names()` classmethod (JUDE: the fields of `JUDEConfig`), else its constructor's arguments
  when it takes no `**kwargs` (an unknown one would fail there with a bare TypeError); `train.optim_g` and
  `train.scheduler` against the optimizer's and scheduler's arguments; `val.metrics.*` against the metric
  function's arguments (BasicSR's metric functions take **kwargs, so a misspelt argument is silently ignored);
- `path` (with `pretrain_network_<x>`, `strict_load_<x>` and `param_key_<x>` for each `network_<x>`), `logger`,
  `logger.wandb` and `dist_params`, which only BasicSR's pipeline reads, always.
The top level, `train` and `val` are checked only for a model that declares its additions (JUDE's models): another
plugin's model may read keys of its own there.
"""
import difflib
import inspect

# What basicsr 1.4.2 reads, per section: utils/options.py (parse_options), train.py, test.py, models/base_model.py,
# models/sr_model.py, utils/logger.py, utils/misc.py (check_resume), data/__init__.py.
BASICSR_KEYS = {
    '': ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val', 'logger',
         'dist_params', 'find_unused_parameters',
         # set by parse_options and train_pipeline
         'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path'),
    'train': ('total_iter', 'warmup_iter', 'ema_decay', 'pixel_opt', 'perceptual_opt', 'optim_g', 'scheduler'),
    'val': ('val_freq', 'save_img', 'metrics', 'suffix', 'pbar'),
    'path': ('resume_state', 'ignore_resume_networks',
             # set by parse_options
             'experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root'),
    'logger': ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'),
    'logger.wandb': ('project', 'resume_id'),
    'dist_params': ('backend', 'port'),
}
# ... per network_<x> in `path` ...
NETWORK_PATH_KEYS = ('pretrain_network_{}', 'strict_load_{}', 'param_key_{}')
# ... and from a paired dataset's options (PairedImageDataset; `phase` and `scale` are filled in by BasicSR) and
# its data loader's (basicsr/data/__init__.py, basicsr/train.py).
BASICSR_DATASET_KEYS = ('name', 'type', 'phase', 'scale', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'gt_size',
                        'use_hflip', 'use_rot', 'color', 'mean', 'std', 'meta_info_file', 'filename_tmpl',
                        'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
                        'pin_memory', 'persistent_workers', 'num_prefetch_queue')
# Keys this project's entry points (jude_arch/train.py, test.py) read outside the model, per section ('' is the
# top level): the cuDNN autotuning policy (basicsr_glue/cudnn.py, which checks the section's own keys).
PROJECT_KEYS = {'': ('cudnn', )}
# Metric arguments that are the images, not options.
_METRIC_DATA = ('img', 'img2', 'img_float', 'img2_float')


class OptionError(ValueError):
    """An option that nothing would read; the message names it and the closest valid key."""


def _hint(word, known, what='keys'):
    close = difflib.get_close_matches(str(word), known, n=1, cutoff=0.6)
    return f'did you mean {close[0]}?' if close else f'valid {what}: {", ".join(sorted(known))}'


def check_keys(section, where, known):
    """Raise OptionError for the first key of `section` not in `known`, naming the closest valid key."""
    for key in section:
        if key not in known:
            raise OptionError(f'options: unknown key {f"{where}.{key}" if where else key}; {_hint(key, known)}')


def known_keys(section, model=None):
    """BasicSR's and this project's keys of `section` ('' is the top level), plus the model's declared ones."""
    declared = {'': 'OPTIONS', 'train': 'TRAIN_OPTIONS', 'val': 'VAL_OPTIONS'}.get(section)
    return (BASICSR_KEYS.get(section, ()) + PROJECT_KEYS.get(section, ()) +
            tuple(getattr(model, declared, ()) if declared else ()))


def _registered(registry, type_name):
    """The class registered under type_name, or None (BasicSR's own error names an unknown type)."""
    try:
        return registry.get(type_name) if isinstance(type_name, str) else None
    except KeyError:
        return None


def _argument_names(function, skip=1, exclude=()):
    """Keyword names of `function` after its first `skip` arguments, or None when it takes **kwargs (and so
    accepts anything)."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
        return None
    return [p.name for p in parameters if p.name not in exclude]


def _constructor_keys(registry, type_name):
    """Option names of a registered class (its `option_names()`, else its constructor's keyword arguments), or None
    when it takes **kwargs without declaring them or is unknown."""
    cls = _registered(registry, type_name)
    if cls is None:
        return None
    if hasattr(cls, 'option_names'):
        return ['type', *cls.option_names()]
    names = _argument_names(cls.__init__)
    return None if names is None else ['type', *names]


def _check_constructor(section, where, registry):
    if not isinstance(section, dict) or not section.get('type'):
        return
    known = _constructor_keys(registry, section['type'])
    if known is not None:
        check_keys(section, where, known)


def _check_metrics(metrics):
    """Each `val.metrics.<name>`: its type registered, its keys arguments of the metric function (or `better`,
    which BasicSR reads for the best-result record)."""
    from basicsr.utils.registry import METRIC_REGISTRY

    for name, metric in (metrics or {}).items():
        if not isinstance(metric, dict):
            continue
        function = _registered(METRIC_REGISTRY, metric.get('type'))
        if function is None:
            if metric.get('type') is not None:
                known = list(METRIC_REGISTRY._obj_map)
                raise OptionError(f'options: val.metrics.{name}.type: no metric {metric["type"]!r}; '
                                  f'{_hint(metric["type"], known, "metrics")}')
            continue
        parameters = inspect.signature(function).parameters.values()
        known = ['type', 'better'] + [p.name for p in parameters if p.name not in _METRIC_DATA and p.kind not in (
            p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        check_keys(metric, f'val.metrics.{name}', known)


def _check_optimization(train):
    """`train.optim_g` and `train.scheduler` against the arguments of what BasicSR builds from them."""
    import torch
    from basicsr.models import lr_scheduler

    optimizers = {'Adam': torch.optim.Adam}  # the one optimizer basicsr 1.4.2 builds
    schedulers = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                  'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
    for key, classes in (('optim_g', optimizers), ('scheduler', schedulers)):
        section = train.get(key)
        if isinstance(section, dict) and section.get('type') in classes:
            names = _argument_names(classes[section['type']].__init__, skip=2)  # self, params / optimizer
            if names is not None:
                check_keys(section, f'train.{key}', ['type', *names])


def check_options(opt):
    """Raise OptionError for the first key of a checked section that nothing reads (see the module docstring).

    Args:
        opt (dict): options as BasicSR's parse_options returns them.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    model = _registered(MODEL_REGISTRY, opt.get('model_type'))
    ours = hasattr(model, 'TRAIN_OPTIONS')
    if ours:
        top = known_keys('', model)
        check_keys({k: v for k, v in opt.items() if not k.startswith('network_')}, '', top)
        for name in ('train', 'val'):
            if isinstance(opt.get(name), dict):
                check_keys(opt[name], name, known_keys(name, model))
        if isinstance(opt.get('val'), dict):
            _check_metrics(opt['val'].get('metrics'))
        if isinstance(opt.get('train'), dict):
            _check_optimization(opt['train'])
    networks = [name[len('network_'):] for name in opt if name.startswith('network_')]
    path_keys = known_keys('path') + tuple(key.format(net) for net in networks for key in NETWORK_PATH_KEYS)
    for name, known in (('path', path_keys), ('logger', known_keys('logger')),
                        ('dist_params', known_keys('dist_params'))):
        if isinstance(opt.get(name), dict):
            check_keys(opt[name], name, known)
    if isinstance(opt.get('logger'), dict) and isinstance(opt['logger'].get('wandb'), dict):
        check_keys(opt['logger']['wandb'], 'logger.wandb', known_keys('logger.wandb'))
    for phase, dataset in (opt.get('datasets') or {}).items():
        if not isinstance(dataset, dict):
            continue
        dataset_cls = _registered(DATASET_REGISTRY, dataset.get('type'))
        if hasattr(dataset_cls, 'OPTIONS'):
            check_keys(dataset, f'datasets.{phase}', BASICSR_DATASET_KEYS + dataset_cls.OPTIONS)
    for name, section in opt.items():
        if name.startswith('network_'):
            _check_constructor(section, name, ARCH_REGISTRY)
    for name, section in (opt.get('train') or {}).items():
        if name.endswith('_opt'):
            _check_constructor(section, f'train.{name}', LOSS_REGISTRY)
