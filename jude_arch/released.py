"""The authors' released JUDE checkpoint in this project's format.

The authors published their trained network as `bownet_best.pth`: a dict whose 'state_dict' holds the weights
of their `JUDE` class under DataParallel's `module.` prefix. `convert_released` maps it onto the `released`
preset of this project's `JUDE` (docs/released_model.md explains every correspondence):

- every size is read off the tensor shapes: the stages from the hyper-parameter net's last layer (10 values a
  stage), the ResUNet widths and blocks, the kernel estimator's width, the enhancer's and denoiser's widths;
- the hyper-parameter net's output rows are reordered from the release's slot-major layout (10 slots of K
  values: λ1, λ2, unused, λ4, λ5, λ6, γ1, γ2, γ3, unused) to ours (per stage λ1..λ5, γ_P, γ_Q, γ_Z); the two
  unused slots are dropped;
- the kernel estimator's weight-map branch is dropped: with one kernel its softmax over one channel is 1
  everywhere, so it has no effect.

Keys of any other shape or name are an error that lists them (by their name in the release), and so are weights
that hold NaN or infinite values. Command line (which refuses to write over its input):

    python -m jude_arch.released bownet_best.pth jude_released.pth [--overwrite]
"""
import argparse
import logging
import os
import re
import sys
from collections import OrderedDict

import torch

from .checkpoint_io import CheckpointError, read_checkpoint, save_atomically, strip_module_prefix

logger = logging.getLogger(__name__)

# Slot s of the release's hyper-net output feeds, at stage t, row s·K + t. Ours is stage-major: row 8·t + j
# holds our j-th value, which is the release's slot SLOTS[j] (λ1, λ2, λ4→λ3, λ5→λ4, λ6→λ5, γ1, γ2, γ3).
RELEASED_SLOTS = 10
SLOTS = (0, 1, 3, 4, 5, 6, 7, 8)
UNUSED_SLOTS = (2, 9)
# Key prefixes of the release's modules; the first three identify a released checkpoint.
_SIGNATURE = ('kernel.kernels_end.', 'init.mlp.', 'update_P.denoiser.')
_DEAD_BRANCH = re.compile(r'kernel\.(up[1-5]|masks_end)\.')


class ReleasedCheckpointError(ValueError):
    """A checkpoint that looks like the authors' release but does not convert; the message lists the keys."""


def released_state_dict(checkpoint):
    """The release's weights without DataParallel's prefix, or None when `checkpoint` is not the release's.

    Args:
        checkpoint (dict): a loaded `.pth`: {'state_dict': ...} as released, or a bare state dict.
    """
    if not isinstance(checkpoint, dict):
        return None
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict):
        return None
    state = strip_module_prefix(state)
    if not all(any(isinstance(k, str) and k.startswith(p) for k in state) for p in _SIGNATURE):
        return None
    return state


def is_released(checkpoint):
    """True when a loaded checkpoint holds the authors' released network (any size)."""
    return released_state_dict(checkpoint) is not None


def _shape(state, key):
    if key not in state:
        raise ReleasedCheckpointError(f'released checkpoint: key {key!r} is missing')
    return tuple(state[key].shape)


def _network_options(state):
    """The `released` preset's options with every size read off the weights."""
    rows = _shape(state, 'init.mlp.4.weight')[0]
    if rows % RELEASED_SLOTS:
        raise ReleasedCheckpointError(f'released checkpoint: init.mlp.4.weight has {rows} rows, expected '
                                      f'{RELEASED_SLOTS} per stage')
    unet = 'update_P.denoiser.'
    # m_up{i}.0 is a transposed conv, stored (in, out, 2, 2): its input is level i's width.
    channels = [_shape(state, unet + 'm_head.weight')[0]] + [_shape(state, f'{unet}m_up{i}.0.weight')[0]
                                                              for i in (1, 2, 3)]
    blocks = sum(1 for k in state if re.fullmatch(rf'{re.escape(unet)}m_down1\.\d+\.res\.0\.weight', k))
    if blocks == 0:
        raise ReleasedCheckpointError('released checkpoint: update_P.denoiser has no residual blocks in m_down1')
    tail = _shape(state, 'kernel.kernels_end.0.weight')
    if tail[-2:] != (2, 2):
        raise ReleasedCheckpointError(f'released checkpoint: kernel.kernels_end.0.weight has shape {tail}; only '
                                      'the released 33×33 kernel head (a 2×2 first conv) is supported')
    return {
        'type': 'JUDE',
        'preset': 'released',
        'num_stages': rows // RELEASED_SLOTS,
        'unet_channels': channels,
        'unet_blocks': blocks,
        'kernel_width': _shape(state, 'kernel.inc_rgb.0.weight')[0],
        'enhancer_width': _shape(state, 'illumination_enhance.net2_conv0_1.weight')[0],
        'denoiser_width': _shape(state, 'reflectance_denoise.model.0.weight')[0],
    }


def _rename(rules, rest):
    """Our key for the release's key `rest` by the first (pattern, rename) rule that matches it, or None."""
    for pattern, rename in rules:
        found = re.fullmatch(pattern, rest)
        if found:
            return rename(found)
    return None


# Below `update_X.denoiser.`: the release's (KAIR-style) ResUNet keys → ours.
_RESUNET_RULES = (
    (r'm_head\.(.+)', lambda m: f'head.{m[1]}'),
    (r'm_tail\.(.+)', lambda m: f'tail.{m[1]}'),
    # blocks 0..nb-1, then the stride-2 conv at index nb (as in ours)
    (r'm_down([1-3])\.(\d+)\.(.+)', lambda m: f'down.{int(m[1]) - 1}.{m[2]}.{m[3].replace("res.", "body.")}'),
    # with one block the release stores it without the container index
    (r'm_body\.(?:(\d+)\.)?res\.(.+)', lambda m: f'body.{m[1] or 0}.body.{m[2]}'),
    # the release numbers up-levels 3, 2, 1 from the deepest; ours 0, 1, 2
    (r'm_up([1-3])\.(\d+)\.(.+)', lambda m: f'up.{3 - int(m[1])}.{m[2]}.{m[3].replace("res.", "body.")}'),
)
_KERNEL_UP_PARTS = {'up': 'up', 'double_conv.0': 'body.0.0', 'double_conv.2': 'body.1.0', 'feat.0': 'fuse.0'}
# Below `kernel.`: the kernel net's keys (its weight-map branch is dropped before this) → ours.
_KERNEL_ESTIMATOR_RULES = (
    (r'inc_rgb\.0\.(.+)', lambda m: f'head.0.{m[1]}'),
    (r'down([1-5])\.double_conv\.([02])\.(.+)', lambda m: f'down.{int(m[1]) - 1}.body.{int(m[2]) // 2}.0.{m[3]}'),
    (r'feat\.0\.(.+)', lambda m: f'bottleneck.0.{m[1]}'),
    (r'kernel_up([1-5])\.(up|double_conv\.[02]|feat\.0)\.(.+)',
     lambda m: f'kernel_up.{int(m[1]) - 1}.{_KERNEL_UP_PARTS[m[2]]}.{m[3]}'),
    (r'kernels_end\.([024])\.(.+)', lambda m: f'kernel_tail.{ {"0": "0.0", "2": "1.0", "4": "2"}[m[1]]}.{m[2]}'),
)
# Below `init.`: the hyper-parameter net's keys → ours.
_HYPER_NET_RULES = (
    # ours: per level [pool, conv, BN, ReLU, conv, BN, ReLU] in one Sequential
    (r'conv_layers\.([0-3])\.maxpool_conv\.1\.double_conv\.([0134])\.(.+)',
     lambda m: f'features.{7 * int(m[1]) + 1 + int(m[2])}.{m[3]}'),
    (r'mlp\.([024])\.(.+)', lambda m: f'mlp.{m[1]}.{m[2]}'),
)


_ENHANCER = {'net2_conv0_1': 'head', 'net2_conv1_1': 'down.0', 'net2_conv1_2': 'down.1', 'net2_conv1_3': 'down.2',
             'net2_deconv1_1': 'up.0', 'net2_deconv1_2': 'up.1', 'net2_deconv1_3': 'up.2', 'net2_fusion': 'fusion',
             'net2_output': 'tail'}


def _our_key(key):
    """Our key for one released key, or None for an unknown one."""
    module, _, rest = key.partition('.')
    if module in ('update_P', 'update_Q', 'update_Z') and rest.startswith('denoiser.'):
        ours = _rename(_RESUNET_RULES, rest[len('denoiser.'):])
        return ours and f'prox_{module[-1].lower()}.0.{ours}'
    if module == 'kernel':
        ours = _rename(_KERNEL_ESTIMATOR_RULES, rest)
        return ours and f'kernel_estimator.{ours}'
    if module == 'init':
        ours = _rename(_HYPER_NET_RULES, rest)
        return ours and f'hyper_net.{ours}'
    if module == 'illumination_enhance':
        layer, _, param = rest.partition('.')
        return f'enhancer.{_ENHANCER[layer]}.{param}' if layer in _ENHANCER else None
    if module == 'reflectance_denoise':
        found = re.fullmatch(r'model\.(\d+)\.(.+)', rest)
        return found and f'denoiser.body.{found[1]}.{found[2]}'
    return None


def _hyper_net_rows(num_stages):
    """Released output rows in our order: stage-major, 8 values a stage."""
    return torch.tensor([slot * num_stages + t for t in range(num_stages) for slot in SLOTS])


def convert_released(checkpoint):
    """Convert the authors' released checkpoint into this project's format.

    Args:
        checkpoint (dict): the loaded release, {'state_dict': ...}, or its bare state dict, with or without
            DataParallel's `module.` prefix.

    Returns:
        dict: {'params': state dict of our JUDE, 'network_g': {'type': 'JUDE', 'preset': 'released', ...}};
        `build_network(result['network_g'])` then `load_state_dict(result['params'])` gives the network.

    Raises:
        ReleasedCheckpointError: not the release's layout; the message lists the keys that do not fit.
    """
    state = released_state_dict(checkpoint)
    if state is None:
        raise ReleasedCheckpointError("not the authors' released JUDE checkpoint: expected keys under "
                                      f"{', '.join(p.rstrip('.') for p in _SIGNATURE)} (with or without 'module.')")
    nonfinite = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if nonfinite:
        raise ReleasedCheckpointError(f'released checkpoint: {len(nonfinite)} tensor(s) hold NaN or infinite values '
                                      f'(e.g. {nonfinite[0]}); a network with them restores nothing')
    options = _network_options(state)
    num_stages = options['num_stages']
    params, origin, dropped, unknown = OrderedDict(), {}, [], []
    for key, value in state.items():
        if _DEAD_BRANCH.match(key):
            dropped.append(key)
            continue
        ours = _our_key(key)
        if ours is None:
            unknown.append(key)
            continue
        origin[ours] = key
        if key.startswith('init.mlp.4.'):
            params[ours] = value[_hyper_net_rows(num_stages)].clone()
        else:
            params[ours] = value
    if unknown:
        raise ReleasedCheckpointError(f'released checkpoint: {len(unknown)} unexpected keys: ' +
                                      ', '.join(unknown[:20]) + (' ...' if len(unknown) > 20 else ''))
    _check_against_network(params, options, origin)
    dead = sum(state[k].numel() for k in dropped) + 2 * num_stages * state['init.mlp.4.weight'].shape[1] \
        + 2 * num_stages
    logger.info(f"Converted the released JUDE ({num_stages} stages): dropped {len(dropped)} tensors of the kernel "
                f'weight-map branch and the 2 unused hyper-net slots ({dead:,} parameters with no effect).')
    return {'params': params, 'network_g': options}


def _check_against_network(params, options, origin):
    """Every converted tensor has the name and shape the `released` network built from `options` expects; a
    problem names the release's key (`origin`: ours → the release's) and ours."""
    from basicsr.archs import build_network  # jude_arch registered JUDE before this import

    opts = dict(options)
    expected = {k: tuple(v.shape) for k, v in build_network(opts).state_dict().items()}
    problems = [f'{origin[k]} (as {k}): converted {tuple(v.shape)}, network {expected[k]}' for k, v in params.items()
                if k in expected and tuple(v.shape) != expected[k]]
    problems += [f'{origin[k]} (as {k}): unknown to the network' for k in params if k not in expected]
    problems += [f'{k}: missing from the checkpoint' for k in expected if k not in params]
    if problems:
        raise ReleasedCheckpointError(f'released checkpoint does not fit the network {options}: ' +
                                      '; '.join(problems[:20]) + (' ...' if len(problems) > 20 else ''))


def convert_if_released(checkpoint, path, log=logger.info):
    """The checkpoint in this project's format: the authors' release is converted (one log line says so)."""
    if not is_released(checkpoint):
        return checkpoint
    try:
        converted = convert_released(checkpoint)
    except ReleasedCheckpointError as error:
        raise CheckpointError(f'{path}: {error}') from None
    log(f"{path}: the authors' released checkpoint, converted on the fly to {converted['network_g']} "
                '(python -m jude_arch.released converts it once)')
    return converted


def main(argv=None):

    parser = argparse.ArgumentParser(
        prog='python -m jude_arch.released',
        description="Convert the authors' released JUDE checkpoint (bownet_best.pth) into this project's format "
        "(loadable by jude-restore, jude_arch/test.py and pretrain_network_g, which also convert on the fly).")
    parser.add_argument('input', help="the released checkpoint, e.g. bownet_best.pth")
    parser.add_argument('output', help='where to write the converted checkpoint')
    parser.add_argument('--overwrite', action='store_true', help='replace OUTPUT if it exists')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    if os.path.exists(args.output):
        if os.path.exists(args.input) and os.path.samefile(args.input, args.output):  # links included
            parser.exit(1, f'error: {args.output} is the input file {args.input}; write the converted checkpoint to '
                           'another file (the release stays as it is)\n')
        if not args.overwrite:
            parser.exit(1, f'{args.output}: exists; pass --overwrite to replace it\n')
    try:
        converted = convert_released(read_checkpoint(args.input))
        save_atomically(converted, args.output)
    except (CheckpointError, ReleasedCheckpointError, OSError) as error:
        parser.exit(1, f'error: {error}\n')
    count = sum(v.numel() for k, v in converted['params'].items() if not k.endswith('num_batches_tracked'))
    print(f'Wrote {args.output}: JUDE {converted["network_g"]}, {count:,} parameters and buffers.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
