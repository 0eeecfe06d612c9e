"""What the demo's JUDE learned of the physics, on the held-out frames: its blur kernel against the references
(uniform, best isotropic Gaussian), its illumination, and the panel of one frame (`jude-restore
--save-intermediates`'s), printed by `python -m jude_arch.demo`.
"""
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.lolblur_layout import GT_FOLDER, KERNEL_FOLDER, pair_frames
from ..losses.illumination_prior import illumination_chroma, illumination_gradient_ratio
from ..physics import best_gaussian_kernel, kernel_entropy, kernel_similarity, reblur_psnr
from ..restore.intermediates_panel import save_intermediates
from ..restore.network_loading import load_network
from ..restore.restorer import JUDERestorer

LQ_FOLDER = 'low_blur_noise'


def _rgb(path):
    """An 8-bit image file → 1×3×H×W RGB float32 in [0, 1]."""
    return torch.from_numpy(cv2.imread(str(path))[..., ::-1] / 255.0).float().permute(2, 0, 1)[None]


def _kernel(path, size):
    """A true kernel (.npy, k×k) zero-padded, centred, to size×size: 1×1×size×size."""
    kernel = torch.from_numpy(np.load(path)).float()
    pad = size // 2 - kernel.shape[-1] // 2
    return torch.nn.functional.pad(kernel, (pad, size - kernel.shape[-1] - pad) * 2)[None, None]


def _kernel_row(kernels, truth, sharp, blurred):
    """Mean re-blur PSNR, entropy (fraction of uniform) and similarity to the true kernels of N×1×k×k kernels."""
    return {'reblur_psnr': reblur_psnr(sharp, kernels, blurred).mean().item(),
            'entropy': kernel_entropy(kernels[:, 0]).mean().item(),
            'similarity': kernel_similarity(kernels, truth).mean().item()}


@torch.inference_mode()
def physics_scores(work, model_path, panel_frame=0):
    """Score the trained JUDE's physics on the held-out frames and draw the panel of one of them.

    Args:
        work (Path): the demo's work folder (lolblur/test holds the frames and their true kernels).
        model_path (Path): the trained JUDE.
        panel_frame (int): index of the frame whose panel is drawn.

    Returns:
        dict: 'kernels': rows 'uniform', 'best Gaussian' (an oracle: the width that re-blurs each frame best),
        'JUDE' of {'reblur_psnr', 'entropy', 'similarity'}; 'illumination': L_K's mean 'chroma' (0: grey) and
        'gradient_ratio' (its structure as a fraction of I_K's); 'panel': path of the panel image.
    """
    test = Path(work) / 'lolblur' / 'test'
    net = load_network(model_path).eval()
    size = net.config['kernel_size']
    frames = pair_frames(test / LQ_FOLDER, test / GT_FOLDER)
    rows = {'lq': [], 'low_sharp': [], 'low_blur': [], 'truth': [], 'kernel': [], 'chroma': [], 'gradient': []}
    for key, lq_path, _ in frames:
        video, frame = key.split('_')
        lq = _rgb(lq_path)
        out = net(lq, return_intermediates=True)
        rows['kernel'].append(out['kernel'][:, :1].float())
        rows['chroma'].append(illumination_chroma(out['L'][-1]))
        rows['gradient'].append(illumination_gradient_ratio(out['L'][-1], out['I'][-1]))
        for name in ('low_sharp', 'low_blur'):
            rows[name].append(_rgb(test / name / video / f'{frame}.png'))
        rows['truth'].append(_kernel(test / KERNEL_FOLDER / video / f'{frame}.npy', size))
    sharp, blurred, truth = (torch.cat(rows[name]) for name in ('low_sharp', 'low_blur', 'truth'))
    uniform = torch.full_like(truth, 1 / size**2)
    gaussian = best_gaussian_kernel(sharp, blurred, size)[0]
    kernels = {name: _kernel_row(k, truth, sharp, blurred)
               for name, k in (('uniform', uniform), ('best Gaussian', gaussian), ('JUDE', torch.cat(rows['kernel'])))}

    key, lq_path, _ = frames[panel_frame]
    image = cv2.imread(str(lq_path))
    restored, intermediates = JUDERestorer(net, device='cpu', tile=0).restore(image, return_intermediates=True)
    panel = save_intermediates(Path(work) / 'panels' / key, image, restored, intermediates)[0]
    return {'frames': len(frames), 'kernels': kernels, 'panel': panel,
            'illumination': {'chroma': torch.cat(rows['chroma']).mean().item(),
                             'gradient_ratio': torch.cat(rows['gradient']).mean().item()}}


def physics_report(scores):
    """The lines of the demo's summary about the physics."""
    lines = [f'Blur kernel on the {scores["frames"]} held-out frames: re-blur PSNR (dB; the sharp frame blurred by '
             'the kernel against the blurred one), entropy (1 = uniform), similarity to the true kernel (1 = equal)',
             f'{"":34s}{"re-blur":>9s}{"entropy":>9s}{"similar":>9s}']
    names = {'uniform': 'uniform kernel', 'best Gaussian': 'best isotropic Gaussian (oracle)', 'JUDE': "JUDE's kernel"}
    for name, row in scores['kernels'].items():
        lines.append(f'{names[name]:34s}{row["reblur_psnr"]:9.2f}{row["entropy"]:9.3f}{row["similarity"]:9.3f}')
    light = scores['illumination']
    lines += [f'Illumination L: chroma {light["chroma"]:.4f} (0 = grey light), structure {light["gradient_ratio"]:.3f} '
              "of I's (0 = smooth)",
              f'Panel (kernel, I by stage, L, R): {scores["panel"]}']
    return lines
