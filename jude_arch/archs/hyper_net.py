"""Hyper-parameter net of JUDE: per-sample, per-stage penalties and noise levels (docs/algorithm.md)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_LAMBDAS = 5  # λ1..λ5
NUM_GAMMAS = 3  # γ_P, γ_Q, γ_Z


class HyperNet(nn.Module):
    """Map the kernels' power spectra to positive λ1..λ5 and γ_P, γ_Q, γ_Z for every stage.

    Input |F(H)|² of each basis kernel, zero-padded to spectrum_size²; four levels of
    [max-pool 2, (conv3×3 + BN + ReLU) × 2]; an MLP; Softplus + 1e-6 keeps every output positive.

    Args:
        num_stages (int): number of unrolled stages K. Default: 5.
        num_kernels (int): basis kernels B (input channels). Default: 1.
        spectrum_size (int): side of the zero-padded spectrum; must be a multiple of 16 and at least
            the kernel size. Default: 128.
        widths (Sequence[int]): conv widths of the four levels. Default: (4, 8, 16, 16).
        hidden (int): MLP hidden width. Default: 64.
        batch_stats (bool): normalise with the statistics of the current batch in eval mode too, instead of
            the running statistics. The authors evaluated their released model that way (their test script
            never switches the network to eval mode); the running statistics are left untouched. Default: False.
    """

    def __init__(self, num_stages=5, num_kernels=1, spectrum_size=128, widths=(4, 8, 16, 16), hidden=64,
                 batch_stats=False):
        super().__init__()
        self.num_stages = num_stages
        self.spectrum_size = spectrum_size
        self.batch_stats = batch_stats
        layers, in_ch = [], num_kernels
        for width in widths:
            layers += [nn.MaxPool2d(2)]
            for ch in (in_ch, width):
                layers += [nn.Conv2d(ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        side = spectrum_size // 2**len(widths)
        self.mlp = nn.Sequential(
            nn.Linear(in_ch * side * side, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True), nn.Linear(hidden, num_stages * (NUM_LAMBDAS + NUM_GAMMAS)))

    def forward(self, kernels):
        """kernels N×B×k×k → (lambdas N×K×5, gammas N×K×3), float32 whatever autocast says.

        The whole net runs in float32 (it is tiny): in bf16 the λ's come out quantised to a few significant
        bits, and the solve's sensitivity to a λ near its 1e-6 floor makes fp16 gradients overflow.
        """
        with torch.autocast(kernels.device.type, enabled=False):
            spectrum = torch.fft.fft2(kernels.float(), s=(self.spectrum_size, ) * 2).abs().square()
            out = F.softplus(self.mlp(self._features(spectrum).flatten(1))) + 1e-6
        out = out.view(-1, self.num_stages, NUM_LAMBDAS + NUM_GAMMAS)
        return out[..., :NUM_LAMBDAS], out[..., NUM_LAMBDAS:]

    def _features(self, spectrum):
        if self.training or not self.batch_stats:
            return self.features(spectrum)
        x = spectrum
        for layer in self.features:
            if isinstance(layer, nn.BatchNorm2d):
                x = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
            else:
                x = layer(x)
        return x
