"""LPIPS (Zhang et al., CVPR 2018) as a BasicSR metric, with every weight read from a local file.

`type: calculate_lpips` in `val.metrics`. The network is the `lpips` package's (the metric's reference
implementation, BSD-2; torchmetrics' LPIPS, which the JUDE authors used, is a copy of it with the same weights).
Its linear layers ship inside the `lpips` wheel. Its backbone, torchvision's ImageNet VGG16 or AlexNet, is read
from the torch hub cache, `<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth` (`alexnet-owt-7be5be79.pth`),
where torchvision itself keeps it, or from `backbone_path`. Nothing is ever downloaded: a missing file stops the
run before any image is restored, with the file's name, where it goes and how to fetch it once.
"""
import re
import warnings
from pathlib import Path

import torch
import torchvision
from basicsr.utils.registry import METRIC_REGISTRY

from .metric_input import default_device, metric_tensors

# LPIPS name → (torchvision model, its ImageNet weights: the file the hub cache holds).
BACKBONES = {
    'vgg': ('vgg16', torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    'alex': ('alexnet', torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
}
_MODELS = {}  # built networks, by (net, backbone file, linear-layer file, device)


def backbone_file(net):
    """Where the backbone weights of LPIPS-`net` are looked for by default: torchvision's file in the hub cache."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / Path(BACKBONES[net][1].url).name


def linear_layers_file(net):
    """The linear-layer weights of LPIPS v0.1 that ship with the `lpips` package."""
    return Path(_import_lpips().__file__).parent / 'weights' / 'v0.1' / f'{net}.pth'


def _import_lpips():
    try:
        import lpips
    except ImportError:
        raise ImportError('calculate_lpips needs the lpips package (a dependency of jude-basicsr): '
                          'pip install lpips') from None
    return lpips


def _check_net(net):
    if net not in BACKBONES:
        raise ValueError(f'calculate_lpips: net must be one of {sorted(BACKBONES)}, got {net!r}')


def _weights_paths(net, backbone_path, lin_path):
    """The two weight files, checked to exist (the error says which file, where it goes and how to get it)."""
    _check_net(net)
    arch, weights = BACKBONES[net]
    backbone = Path(backbone_path) if backbone_path else backbone_file(net)
    if not backbone.is_file():
        name = Path(weights.url).name
        hint = (f'point backbone_path at a copy of {name}, or remove it to read {backbone_file(net)}' if backbone_path
                else f'put {name} there (the torch hub cache; TORCH_HOME moves it) or set backbone_path in the '
                     'metric\'s options')
        raise FileNotFoundError(
            f'LPIPS-{net} needs torchvision\'s ImageNet {arch} weights: {backbone} not found; {hint}. To fetch it '
            f'once on a machine with internet: python -c "import torchvision; torchvision.models.{arch}'
            f'(weights=\'IMAGENET1K_V1\')" (saved to its <torch hub dir>/checkpoints/), or download {weights.url}')
    lin = Path(lin_path) if lin_path else linear_layers_file(net)
    if not lin.is_file():
        raise FileNotFoundError(f'LPIPS-{net} linear layers: {lin} not found; set lin_path to the v0.1 {net}.pth of '
                                'the lpips package (lpips/weights/v0.1/), or reinstall lpips')
    return backbone, lin


def _load_state(path, what):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        first = (str(error).strip().splitlines() or [''])[0]
        raise ValueError(f'{path}: cannot read the LPIPS {what} weights ({type(error).__name__}: {first})') from None
    if not isinstance(state, dict):
        raise ValueError(f'{path}: not a state dict (the LPIPS {what} weights)')
    return state


def build_lpips(net='vgg', backbone_path=None, lin_path=None, device=None):
    """The LPIPS network (eval mode, no gradients), its weights loaded from local files only.

    Args:
        net (str): 'vgg' (LPIPS-VGG, the one LOL-Blur papers report) or 'alex'.
        backbone_path (str | None): torchvision's ImageNet weights of the backbone (a full model state dict or
            its `features` only); None: the torch hub cache.
        lin_path (str | None): LPIPS v0.1 linear-layer weights; None: the file inside the lpips package.
        device (torch.device | str | None): None: CUDA when available, else the CPU.

    Returns:
        torch.nn.Module: `lpips.LPIPS`; call it as `model(x, y, normalize=...)`.
    """
    backbone, lin = _weights_paths(net, backbone_path, lin_path)
    device = torch.device(device) if device is not None else default_device()
    key = (net, str(backbone.resolve()), str(lin.resolve()), str(device))
    if key in _MODELS:
        return _MODELS[key]
    lpips = _import_lpips()
    with warnings.catch_warnings():
        # lpips 0.1.4 still asks torchvision for `pretrained=False`, deprecated since torchvision 0.13.
        warnings.simplefilter('ignore', UserWarning)
        # Random backbone and linear layers: both are loaded below, so torchvision never looks for a download.
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    state = model.state_dict()

    features = _load_state(backbone, f'{net} backbone')
    if not any(k.startswith('features.') for k in features):
        features = {f'features.{k}': v for k, v in features.items()}  # a `features` module's own state dict
    for key_ in state:
        if key_.startswith('net.'):  # lpips keeps torchvision's layer index: net.slice<n>.<index>.<param>
            _, _, index, param = key_.split('.')
            source = f'features.{index}.{param}'
            if source not in features:
                raise ValueError(f'{backbone}: no {source!r}; expected torchvision\'s {BACKBONES[net][0]} weights '
                                 f'({Path(BACKBONES[net][1].url).name})')
            state[key_] = features[source]
    lins = _load_state(lin, f'{net} linear-layer')
    for key_ in state:
        if key_.startswith('lin'):
            # lpips holds each layer twice, as lin<k> and lins.<k>; the file has the lin<k> names.
            source = re.sub(r'^lins\.(\d+)\.', r'lin\1.', key_)
            if source not in lins:
                raise ValueError(f'{lin}: no {source!r}; expected the LPIPS v0.1 {net}.pth linear layers')
            state[key_] = lins[source]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # shapes of another network
        last = str(error).strip().splitlines()[-1].strip()  # the first line only names the module
        raise ValueError(f'{backbone} / {lin}: weights do not fit LPIPS-{net}: {last}') from None
    model = model.to(device).eval().requires_grad_(False)
    _MODELS[key] = model
    return model


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, net='vgg', normalize=True, float_input=False, backbone_path=None, lin_path=None,
                    **kwargs):
    """LPIPS distance between output and ground truth (lower is better; 0 for identical images).

    Args:
        img (ndarray): 8-bit output image, H×W×3 BGR (as BasicSR's models pass it).
        img2 (ndarray): 8-bit ground truth, same layout.
        net (str): 'vgg' or 'alex'.
        normalize (bool): map the [0, 1] images to [-1, 1], the range LPIPS was trained on (lpips' and
            torchmetrics' `normalize`). False feeds them unscaled, as the JUDE paper's evaluation did.
        float_input (bool): score the float tensors JUDEModel passes (`img_float`, `img2_float`: the output before
            clamping and rounding) instead of the 8-bit images.
        backbone_path (str | None): backbone weights file; None: the torch hub cache (see `backbone_file`).
        lin_path (str | None): linear-layer weights file; None: the lpips package's.
        **kwargs: the other keys BasicSR passes (`better`, the float tensors).

    Returns:
        float: the LPIPS distance.
    """
    x, y = metric_tensors('calculate_lpips', img, img2, float_input, kwargs,
                          device=None if float_input else default_device())
    model = build_lpips(net, backbone_path, lin_path, device=x.device)
    with torch.no_grad():
        return model(x, y, normalize=normalize).mean().item()


def _prepare(net='vgg', backbone_path=None, lin_path=None, **kwargs):
    """Checked by JUDEModel before the first image is restored: the weights exist and load."""
    build_lpips(net, backbone_path, lin_path)


calculate_lpips.prepare = _prepare
