"""Building the network a checkpoint holds: its options (from the checkpoint or a YAML file), then its weights.

Reading the file itself (weights only, BasicSR's layouts, the authors' release) is `jude_arch.checkpoint_io`,
shared with training; this module adds what restoring needs on top: the network built from the options, and
weights that must fit it exactly and be finite.
"""
from copy import deepcopy

import torch
import yaml

from ..checkpoint_io import CheckpointError, read_checkpoint, state_dict_of
from ..released import convert_if_released
from .errors import RestoreError


def read_network_options(path):
    """Network options from a YAML file: a BasicSR options file (its `network_g`) or a bare network dict.

    Args:
        path (str | Path): the YAML file.

    Returns:
        dict: the network options, with 'type'.
    """
    try:
        with open(path) as f:
            options = yaml.safe_load(f)
    except OSError as error:
        raise RestoreError(f'{path}: cannot read the network options ({error.strerror})') from None
    except yaml.YAMLError as error:
        raise RestoreError(f'{path}: not valid YAML ({error})') from None
    if isinstance(options, dict) and isinstance(options.get('network_g'), dict):
        options = options['network_g']
    if not isinstance(options, dict) or 'type' not in options:
        raise RestoreError(f"{path}: expected a BasicSR options file with a 'network_g' section or a network "
                           "dict with 'type', e.g. {type: JUDE, preset: small}")
    return options


def _check_fit(net, state, path):
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    differ = [f'{k}: checkpoint {tuple(v.shape)}, network {tuple(expected[k].shape)}' for k, v in state.items()
              if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k].shape)]
    if not (missing or unexpected or differ):
        return

    def listing(title, items):
        shown = '\n    '.join(items[:10]) + (f'\n    ... and {len(items) - 10} more' if len(items) > 10 else '')
        return f'\n  {len(items)} {title}:\n    {shown}' if items else ''

    raise RestoreError(f'{path}: the weights do not fit the network {type(net).__name__} built from the network '
                       'options; pass the options the model was trained with (--opt)' +
                       listing('keys with different shapes', differ) + listing('keys missing', missing) +
                       listing('unexpected keys', unexpected))


def load_network(model_path, network_opt=None):
    """Build the network a checkpoint was trained as and load its weights.

    Args:
        model_path (str | Path): checkpoint written by training (BasicSR's save_network dict, with
            'network_g' naming the network), any dict of 'params'/'params_ema' or plain state dict, or
            the authors' released checkpoint (converted on the fly, `jude_arch.released`). Loaded with
            `weights_only=True`: tensors and plain containers only.
        network_opt (dict | None): network options ({'type': 'JUDE', 'preset': 'small', ...}); needed
            when the checkpoint has no 'network_g', and used instead of it when given.

    Returns:
        torch.nn.Module: the network with its weights, in eval mode, on the CPU.
    """
    from basicsr.archs import build_network  # jude_arch registered JUDE before this import

    try:
        checkpoint = convert_if_released(read_checkpoint(model_path), model_path)
        state = state_dict_of(checkpoint, model_path)
    except CheckpointError as error:
        raise RestoreError(str(error)) from None
    options = network_opt if network_opt is not None else checkpoint.get('network_g')
    if options is None:
        raise RestoreError(f"{model_path}: the checkpoint does not say which network it holds (training "
                           "checkpoints carry 'network_g'); pass the network options with --opt <options.yml>")
    if not isinstance(options, dict) or 'type' not in options:
        raise RestoreError(f"{model_path}: network options must be a dict with 'type', got {options!r}")
    try:
        net = build_network(deepcopy(options))
    except KeyError as error:
        raise RestoreError(f"network type {options['type']!r} is not registered: {error.args[0]}") from None
    except (TypeError, ValueError) as error:
        raise RestoreError(f'network options {options} do not build a network: {error}') from None
    nonfinite = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if nonfinite:
        raise RestoreError(f'{model_path}: {len(nonfinite)} weight tensor(s) hold NaN or infinite values (e.g. '
                           f'{nonfinite[0]}): the model was saved after training diverged; use an earlier checkpoint')
    _check_fit(net, state, model_path)
    net.load_state_dict(state)
    return net.eval()
