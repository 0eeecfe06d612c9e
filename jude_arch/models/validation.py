"""Validation and testing of JUDEModel: restore (tiled on request), score, save, log, write the protocol summary.

Images are named by the dataset's `key` (`<video>_<frame>` for LOL-Blur), outputs are clamped to [0, 1] after a
finiteness check (a NaN output scores NaN, not the PSNR of a black image), metrics that accept them also get the
float tensors (`jude_arch.metrics.metric_input`), and TensorBoard shows input | output | ground truth with JUDE's
estimated kernel.
"""
import inspect
import json
from contextlib import contextmanager
from os import path as osp

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import METRIC_REGISTRY
from tqdm import tqdm

from ..archs import JUDE
from ..checkpoint_io import atomic_write, plain
from ..metrics.metric_input import FLOAT_KEYS
from ..precision import autocast
from ..restore.photo_io import write_image
from ..restore.tiling import TileGrid, overlap_for, tiled_forward

# Longest side of a TensorBoard strip; larger validation frames are shrunk for display only.
TB_MAX_WIDTH = 2048
TB_KERNEL_ZOOM = 4


def image_name(data):
    """Name for a validation image: the dataset's 'key' (`<video>_<frame>`, unique across LOL-Blur videos)
    when present, else the stem of lq_path."""
    if 'key' in data:
        key = data['key']
        return key[0] if isinstance(key, (list, tuple)) else key
    return osp.splitext(osp.basename(data['lq_path'][0]))[0]


def metric_accepts(metric_opt, key):
    """Whether the metric function of `metric_opt` takes the keyword `key` (by name or through **kwargs)."""
    parameters = inspect.signature(METRIC_REGISTRY.get(metric_opt['type'])).parameters.values()
    return any(p.name == key or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class ValidationMixin:
    """JUDEModel's validation and testing (`val.precision`, `val.tile`, `val.tb_images`, `protocol`)."""

    def _tiled(self, net, x, tile):
        """Restore x tile by tile, blending overlaps with weights that sum to one (`tiling.tiled_forward`)."""
        if not isinstance(tile, dict) or not isinstance(tile.get('size'), int):
            raise ValueError(f'val.tile must be {{size: <pixels>, overlap: <pixels>}}, got {tile!r}')
        overlap = tile.get('overlap', overlap_for(self.get_bare_model(net)))
        grid = TileGrid(x.shape[-2], x.shape[-1], tile['size'], overlap)
        return tiled_forward(lambda part, _: net(part), x, grid)

    def _restore(self, net, x, with_kernel=False):
        """Run net on x, tiled when `val.tile` asks; returns (output, kernel or None). With tiles every tile
        estimates its own kernel, so no single kernel is returned."""
        tile = (self.opt.get('val') or {}).get('tile')
        if tile:
            return self._tiled(net, x, tile), None
        if with_kernel and isinstance(self.get_bare_model(net), JUDE):
            out = net(x, return_intermediates=True)
            self.sharp_estimate = out['I'][-1]  # I_K and L_K, for the physics metrics
            self.illumination_estimate = out['L'][-1]
            return out['output'], out['kernel']
        return net(x), None

    @contextmanager
    def evaluation(self):
        """The network to evaluate, in eval mode under inference mode and `val.precision`; its mode is put back.

        The EMA copy when training keeps one, else the bare network: under DDP only rank 0 validates, and a
        DDP forward there could wait for the others.
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode(), autocast(self.device, self.val_precision):
                yield net
        finally:
            net.train(was_training)

    def test(self, with_kernel=False):
        """Restore self.lq into self.output, clamped to [0, 1] (and self.kernel for JUDE when asked)."""
        self.sharp_estimate = self.illumination_estimate = None
        with self.evaluation() as net:
            output, self.kernel = self._restore(net, self.lq, with_kernel)
            # Checked before clamping: clamped (or cast to 8 bits) a NaN output becomes a plausible black image.
            self.output_finite = bool(torch.isfinite(output).all())
            self.output_unclamped = output.float()  # for metrics with float_input (the JUDE paper's SSIM, LPIPS)
            self.output = self.output_unclamped.clamp(0, 1)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        metrics = val_opt.get('metrics') or {}
        self.metric_results = {name: 0 for name in metrics}
        if metrics:
            self._prepare_metrics(metrics)
            self._initialize_best_metric_results(dataset_name)
        sizes = {}
        tb_images = val_opt.get('tb_images', 3) if tb_logger else 0
        physics_opt = self._physics_options()
        physics_scores = {}
        pbar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar', False) else None

        count = 0
        for idx, val_data in enumerate(dataloader):
            name = image_name(val_data)
            self.feed_data(val_data)
            with_physics = physics_opt is not None and bool(self.physics_data)
            self.test(with_kernel=idx < tb_images or with_physics)
            result = tensor2img(self.output)
            size = tuple(self.output.shape[-2:])
            sizes[size] = sizes.get(size, 0) + 1
            metric_data = {'img': result, FLOAT_KEYS[0]: self.output_unclamped}
            if 'gt' in val_data:
                metric_data['img2'] = tensor2img(self.gt)
                metric_data[FLOAT_KEYS[1]] = self.gt.float()
            if idx < tb_images:
                self._log_visuals(tb_logger, f'{dataset_name}/{name}', current_iter, 'gt' in val_data)
            if save_img:  # written whole or not at all (a killed run leaves no truncated PNG)
                write_image(self._image_path(dataset_name, name, current_iter), result)
            if not self.output_finite:
                get_root_logger().warning(f'{dataset_name}/{name}: the network output is not finite; its metrics '
                                          'are NaN')
            for metric, metric_opt in metrics.items():
                data = {k: v for k, v in metric_data.items() if k not in FLOAT_KEYS or metric_accepts(metric_opt, k)}
                self.metric_results[metric] += calculate_metric(data, metric_opt) if self.output_finite else float('nan')
            if with_physics:
                for metric, values in self._physics_scores(physics_opt, dataset_name).items():
                    physics_scores.setdefault(metric, []).extend(values.tolist())
            self.lq = self.output = self.output_unclamped = self.kernel = None
            self.sharp_estimate = self.illumination_estimate = None
            self.physics_data = {}
            if 'gt' in val_data:
                del self.gt
            count += 1
            if pbar:
                pbar.update(1)
                pbar.set_description(f'Test {name}')
        if pbar:
            pbar.close()

        if metrics and count:
            for metric in self.metric_results:
                self.metric_results[metric] /= count
                self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
        if physics_scores:
            self._record_metrics(dataset_name, physics_scores, current_iter)
        if (metrics and count) or physics_scores:
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if not self.opt['is_train']:
            self._write_protocol_summary(dataloader.dataset, count, sizes)

    @staticmethod
    def _prepare_metrics(metrics):
        """Run each metric's `prepare` hook (e.g. LPIPS checks its weight files) before any image is restored."""
        for metric_opt in metrics.values():
            options = dict(metric_opt)
            prepare = getattr(METRIC_REGISTRY.get(options.pop('type')), 'prepare', None)
            if prepare is not None:
                prepare(**options)

    @master_only
    def _write_protocol_summary(self, dataset, count, sizes):
        """Write results/<name>/metrics_<dataset>.json: the metric values with everything that defines them
        (the YAML's `protocol` section, input and ground-truth folders, crop, frame count and sizes, network,
        checkpoint, metric options), so that a number never travels without its protocol."""
        dataset_opt = dataset.opt
        path_opt = self.opt['path']
        summary = {
            'protocol': plain(self.opt.get('protocol')),
            'dataset': {
                'name': dataset_opt['name'], 'type': dataset_opt.get('type'),
                'dataroot_lq': dataset_opt.get('dataroot_lq'), 'dataroot_gt': dataset_opt.get('dataroot_gt'),
                'crop_to_multiple': dataset_opt.get('crop_to_multiple'), 'frames': count,
                'evaluated_sizes': [{'height': h, 'width': w, 'frames': n} for (h, w), n in sorted(sizes.items())],
            },
            'network_g': plain(self.opt.get('network_g')),
            'checkpoint': path_opt.get('pretrain_network_g'),
            'param_key_g': path_opt.get('param_key_g', 'params'),
            'val': {key: plain(self.opt['val'].get(key)) for key in ('precision', 'tile')},
            'metrics': {name: {'value': float(self.metric_results[name]), 'options': plain(opt)}
                        for name, opt in (self.opt['val'].get('metrics') or {}).items()} if count else {},
        }
        path = osp.join(path_opt['results_root'], f"metrics_{dataset_opt['name']}.json")
        text = json.dumps(summary, indent=2, ensure_ascii=False) + '\n'
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))
        get_root_logger().info(f'Metrics and their protocol: {path}')

    def _image_path(self, dataset_name, name, current_iter):
        vis = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(vis, name, f'{name}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(vis, dataset_name, f'{name}_{suffix}.png')

    def _log_visuals(self, tb_logger, tag, current_iter, has_gt):
        """TensorBoard: input | output | ground truth side by side, and the estimated kernel(s) when known."""
        panels = [self.lq.float().clamp(0, 1), self.output]
        if has_gt:
            panels.append(self.gt.float().clamp(0, 1))
        strip = torch.cat([p[:1].cpu() for p in panels], dim=3)
        if strip.shape[-1] > TB_MAX_WIDTH:
            scale = TB_MAX_WIDTH / strip.shape[-1]
            strip = torch.nn.functional.interpolate(strip, scale_factor=scale, mode='area')
        tb_logger.add_image(f'{tag}/input_output_gt', strip[0], current_iter)
        if self.kernel is not None:
            kernels = self.kernel[0].float().cpu()  # B×k×k, shown side by side, each scaled to its maximum
            kernels = kernels / kernels.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            image = torch.cat(list(kernels), dim=1)[None]
            image = image.repeat_interleave(TB_KERNEL_ZOOM, 1).repeat_interleave(TB_KERNEL_ZOOM, 2)
            tb_logger.add_image(f'{tag}/kernel', image, current_iter)
