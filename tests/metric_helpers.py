"""Shared by the metric and protocol tests: textured 8-bit images, noise, random LPIPS backbones (no downloads)."""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from jude_arch.metrics import lpips_metric

# torchvision's backbones of LPIPS, and the feature indices whose ReLU outputs LPIPS compares.
BACKBONES = {'vgg': (lambda: torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs['D']), (3, 8, 15, 22, 29)),
             'alex': (lambda: torchvision.models.alexnet(weights=None).features, (1, 4, 7, 9, 11))}


def write_backbone(torch_home, net, seed=0, prefix='features.'):
    """A randomly initialised backbone saved where torchvision keeps the real ImageNet weights under TORCH_HOME
    (`<torch_home>/hub/checkpoints/<file name of the real weights>`), as a state dict with keys `<prefix><index>.*`
    (`features.` as in torchvision's full model; '' as saved from the `features` module alone)."""
    torch.manual_seed(seed)
    features = BACKBONES[net][0]()
    path = torch_home / 'hub' / 'checkpoints' / lpips_metric.backbone_file(net).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f'{prefix}{k}': v for k, v in features.state_dict().items()}, path)
    return path


def textured(shape=(48, 64), seed=0):
    """A textured 8-bit BGR image (smooth blobs plus fine detail), like BasicSR's tensor2img returns."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, max(shape[0] // 8, 2), max(shape[1] // 8, 2))))
    smooth = F.interpolate(coarse, size=shape, mode='bicubic', align_corners=False)[0].permute(1, 2, 0).numpy()
    return np.clip(255 * (0.8 * smooth + 0.2 * rng.random((*shape, 3))), 0, 255).astype(np.uint8)


def add_noise(img, sigma, seed=1):
    noisy = img + np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
