"""The two Retinex heads after the unrolling: illumination enhancer and reflectance denoiser (docs/algorithm.md)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class IlluminationEnhancer(nn.Module):
    """Encoder–decoder that brightens the illumination (paper: enhancer; released: "RelightNet").

    conv3×3 in→w; three stride-2 conv3×3 w→w; three decoder steps of [nearest upsample, concat the
    matching encoder feature, conv3×3 2w→w]; the three decoder outputs resized to full size and fused
    by a 1×1 conv (3w→w), then conv3×3 w→out. ReLU after every conv but the last two.

    Args:
        in_channels (int): input channels. Default: 3.
        out_channels (int): output channels. Default: 3.
        width (int): feature width. Default: 64.
        variant (str): 'paper': ReLU after the first conv, zero padding in the decoder and the output conv;
            'released': what the authors' released network computes with the same weights: no activation
            after the first conv, replicate padding everywhere (their 1×1 fusion pads by one replicated
            pixel and their output conv then pads none, which is the same as replicate padding in the
            output conv). Default: 'paper'.
    """

    VARIANTS = ('paper', 'released')

    def __init__(self, in_channels=3, out_channels=3, width=64, variant='paper'):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f'IlluminationEnhancer: variant must be one of {self.VARIANTS}, got {variant!r}')
        self.head_activation = variant == 'paper'
        decoder_padding = 'zeros' if variant == 'paper' else 'replicate'
        self.head = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode='replicate')
        self.down = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=2, padding=1, padding_mode='replicate') for _ in range(3))
        self.up = nn.ModuleList(
            nn.Conv2d(2 * width, width, 3, padding=1, padding_mode=decoder_padding) for _ in range(3))
        self.fusion = nn.Conv2d(3 * width, width, 1)
        self.tail = nn.Conv2d(width, out_channels, 3, padding=1, padding_mode=decoder_padding)

    def forward(self, x):
        head = self.head(x)
        features = [F.relu(head) if self.head_activation else head]
        for down in self.down:
            features.append(F.relu(down(features[-1])))
        y, decoded = features[-1], []
        for up, skip in zip(self.up, reversed(features[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode='nearest')
            y = F.relu(up(torch.cat([y, skip], 1)))
            decoded.append(y)
        size = x.shape[-2:]
        fused = self.fusion(torch.cat([F.interpolate(d, size=size, mode='nearest') for d in decoded], 1))
        return self.tail(fused)


class ReflectanceDenoiser(nn.Module):
    """IRCNN-style residual denoiser: R̂ = R − net(R), seven dilated conv3×3 layers.

    Args:
        channels (int): image channels. Default: 3.
        width (int): feature width. Default: 32.
        dilations (Sequence[int]): dilation of each layer. Default: (1, 2, 3, 4, 3, 2, 1).
    """

    def __init__(self, channels=3, width=32, dilations=(1, 2, 3, 4, 3, 2, 1)):
        super().__init__()
        widths = [channels] + [width] * (len(dilations) - 1) + [channels]
        layers = []
        for i, d in enumerate(dilations):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=d, dilation=d))
            if i < len(dilations) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, r):
        return r - self.body(r)
