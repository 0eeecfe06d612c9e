"""Score JUDE's physics on held-out synthetic frames: the table and panels of docs/physics.md.

    python docs/physics_experiment.py --data demo/lolblur/test --train-data demo/lolblur/train \
        --estimator <phase-0 net_g.pth> --arm paper=<net_g.pth> --arm physics=<net_g.pth> --out docs

For every frame of the split (LOL-Blur layout with `kernels/`, as `datasets_prep/synthesize_lolblur.py` writes):
- re-blur PSNR in linear light (`jude_arch.physics.reblur_psnr`: low_sharp blurred by a kernel, 8-bit, against
  the noise-free low_blur) of a uniform 31×31 kernel, the best isotropic Gaussian (σ chosen per frame, an
  oracle, `jude_arch.physics.best_gaussian_kernel`), the anisotropic Gaussian with the true kernel's covariance
  (an oracle), the true kernel, the pretrained estimator's kernel and every JUDE's kernel; with the kernels'
  similarity to the true one (best shift within ±4 px) and their entropy (fraction of the uniform's);
- the estimator once more on the frames of the photos it was trained on (`--train-data`), so that over-fitting
  shows as a gap between the two;
- for every JUDE: output PSNR / SSIM against the ground truth (8-bit RGB, BasicSR's metrics), the PSNR of
  I_K against low_sharp (the input's PSNR against low_sharp for scale) and its illumination L_K: chroma energy
  (0: grey light) and gradient energy against I_K's (0: smooth; `jude_arch.losses.illumination_prior`).
Writes `<out>/physics_results.json`, the intermediates panel of one frame per JUDE and a kernel gallery.
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img

import jude_arch  # noqa: F401  (registers the classes)
from jude_arch.losses.illumination_prior import illumination_chroma, illumination_gradient_ratio
from jude_arch.physics import best_gaussian_kernel, kernel_entropy, kernel_similarity, psnr_8bit, reblur_psnr
from jude_arch.restore.restorer import JUDERestorer, load_network
from jude_arch.restore.intermediates_panel import save_intermediates

KERNEL_SIZE = 31


def frames(split):
    split = Path(split)
    opt = {'name': 'held-out', 'type': 'LOLBlurDataset', 'phase': 'val', 'scale': 1, 'io_backend': {'type': 'disk'},
           'dataroot_lq': str(split / 'low_blur_noise'), 'dataroot_gt': str(split / 'high_sharp_scaled'),
           'dataroot_low_sharp': str(split / 'low_sharp'), 'dataroot_low_blur': str(split / 'low_blur'),
           'dataroot_kernel': str(split / 'kernels'), 'kernel_size': KERNEL_SIZE}
    dataset = build_dataset(opt)
    return [dataset[i] for i in range(len(dataset))]


def best_gaussian(item):
    return best_gaussian_kernel(item['low_sharp'][None], item['low_blur'][None], KERNEL_SIZE)[0][0]


def moment_matched_gaussian(item):
    """The anisotropic Gaussian with the true kernel's mean and covariance: an oracle that knows the blur's extent,
    direction and elongation but not the shape of its path."""
    kernel = item['kernel'][0].double()
    offsets = torch.stack(torch.meshgrid(*[torch.arange(KERNEL_SIZE, dtype=torch.float64)] * 2, indexing='ij'))
    mean = (offsets * kernel).sum((1, 2))
    centred = offsets - mean[:, None, None]
    cov = torch.einsum('iyx,jyx,yx->ij', centred, centred, kernel) + 0.05 * torch.eye(2, dtype=torch.float64)
    gaussian = torch.exp(-0.5 * torch.einsum('iyx,ij,jyx->yx', centred, torch.linalg.inv(cov), centred))
    return (gaussian / gaussian.sum()).float()[None]


def kernel_scores(kernels, items):
    """Mean re-blur PSNR, similarity to the true kernel and entropy of one kernel per frame (1×k×k each)."""
    reblur, similarity, entropy = [], [], []
    for kernel, item in zip(kernels, items):
        reblur.append(reblur_psnr(item['low_sharp'][None], kernel[None], item['low_blur'][None]).item())
        similarity.append(kernel_similarity(kernel[None], item['kernel'][None]).item())
        entropy.append(kernel_entropy(kernel).item())
    return {'reblur_psnr': float(np.mean(reblur)), 'kernel_similarity': float(np.mean(similarity)),
            'kernel_entropy': float(np.mean(entropy))}


@torch.inference_mode()
def run_jude(net, items):
    kernels = []
    scores = {'psnr': [], 'ssim': [], 'i_k_psnr': [], 'l_chroma': [], 'l_gradient_ratio': [], 'l_hat_chroma': []}
    for item in items:
        out = net(item['lq'][None], return_intermediates=True)
        kernels.append(out['kernel'][0].float())
        restored, gt = tensor2img(out['output'].clamp(0, 1)), tensor2img(item['gt'][None])
        scores['psnr'].append(calculate_psnr(restored, gt, crop_border=0))
        scores['ssim'].append(calculate_ssim(restored, gt, crop_border=0))
        scores['i_k_psnr'].append(psnr_8bit(out['I'][-1].float(), item['low_sharp'][None]).item())
        scores['l_chroma'].append(illumination_chroma(out['L'][-1]).item())
        scores['l_gradient_ratio'].append(illumination_gradient_ratio(out['L'][-1], out['I'][-1]).item())
        scores['l_hat_chroma'].append(illumination_chroma(out['L_hat']).item())
    return kernels, {name: float(np.mean(values)) for name, values in scores.items()}


def kernel_gallery(rows, items, path, count=6):
    """One row per method, one column per frame: kernels (each scaled to its maximum), 4 px per tap."""
    zoom, gap = 4, 4
    names = list(rows)
    cells = []
    for name in names:
        row = [np.pad(cv2.resize((k[0] / k[0].max()).numpy(), None, fx=zoom, fy=zoom,
                                 interpolation=cv2.INTER_NEAREST), gap, constant_values=0.15)
               for k in rows[name][:count]]
        cells.append(np.concatenate(row, 1))
    label_width = 150
    canvas = np.full((len(names) * cells[0].shape[0], label_width + cells[0].shape[1]), 0.15, np.float32)
    for i, (name, row) in enumerate(zip(names, cells)):
        canvas[i * row.shape[0]:(i + 1) * row.shape[0], label_width:] = row
    image = cv2.cvtColor(np.round(canvas * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for i, name in enumerate(names):
        cv2.putText(image, name, (4, i * cells[0].shape[0] + cells[0].shape[0] // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (235, 235, 235), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), image)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', required=True, help='held-out split in the LOL-Blur layout, with kernels/')
    parser.add_argument('--train-data', help='a split of the photos trained on (LOL-Blur layout with kernels/): '
                        'the estimator is scored there too')
    parser.add_argument('--estimator', help='checkpoint of the pretrained kernel estimator (phase 0)')
    parser.add_argument('--arm', action='append', default=[], help='name=checkpoint of a trained JUDE')
    parser.add_argument('--panel-frame', type=int, default=0, help='index of the frame shown in the panels')
    parser.add_argument('--out', default='docs', help='folder for physics_results.json and images/')
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    items = frames(args.data)
    out = Path(args.out)
    (out / 'images').mkdir(parents=True, exist_ok=True)

    uniform = torch.full((1, KERNEL_SIZE, KERNEL_SIZE), 1 / KERNEL_SIZE**2)
    kernels = {'uniform': [uniform] * len(items), 'best Gaussian': [best_gaussian(item) for item in items],
               'moment-matched Gaussian': [moment_matched_gaussian(item) for item in items],
               'true': [item['kernel'] for item in items]}
    train_scores = None
    if args.estimator:
        estimator = load_network(args.estimator).eval()
        kernels['pretrained estimator'] = [estimator(item['lq'][None])[0][0].float() for item in items]
        if args.train_data:
            train_items = frames(args.train_data)
            train_kernels = {'best Gaussian': [best_gaussian(item) for item in train_items],
                             'pretrained estimator': [estimator(item['lq'][None])[0][0].float()
                                                      for item in train_items]}
            train_scores = {'frames': len(train_items),
                            'kernels': {name: kernel_scores(values, train_items)
                                        for name, values in train_kernels.items()}}
    jude = {}
    for arm in args.arm:
        name, path = arm.split('=', 1)
        net = load_network(path)
        kernels[f'JUDE {name}'], jude[name] = run_jude(net, items)
        lq = tensor2img(items[args.panel_frame]['lq'][None])
        restorer = JUDERestorer(net, device='cpu', tile=0)
        restored, inter = restorer.restore(lq, return_intermediates=True)
        save_intermediates(out / 'images' / f'physics_{name}', lq, restored, inter)
        for suffix in ('_kernel.npy', '_params.json'):
            (out / 'images' / f'physics_{name}{suffix}').unlink()
    results = {
        'frames': len(items),
        'kernels': {name: kernel_scores(values, items) for name, values in kernels.items()},
        'jude': jude,
        'train_frames': train_scores,
        'input': {
            'psnr_vs_gt': float(np.mean([calculate_psnr(tensor2img(i['lq'][None]), tensor2img(i['gt'][None]), 0)
                                         for i in items])),
            'psnr_vs_low_sharp': float(np.mean([psnr_8bit(i['lq'][None], i['low_sharp'][None]).item()
                                                for i in items])),
        },
    }
    kernel_gallery(kernels, items, out / 'images' / 'physics_kernels.png')
    (out / 'physics_results.json').write_text(json.dumps(results, indent=1) + '\n')
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
