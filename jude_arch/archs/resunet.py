"""ResUNet: the learned proximal operator D_P, D_Q, D_Z of JUDE (USRNet's prior module, docs/algorithm.md)."""
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    """conv3×3 – ReLU – conv3×3 plus identity, no bias (as USRNet)."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False))

    def forward(self, x):
        return x + self.body(x)


class ResUNet(nn.Module):
    """Four-level residual U-Net with additive skips, used as a learned proximal operator.

    Input: the 3-channel proximal point concatenated with a 1-channel noise-level map (4 channels);
    output: the 3-channel denoised estimate, no output activation. Any H×W: the input is
    replicate-padded to a multiple of 8 and the output cropped back.

    Args:
        in_channels (int): input channels (3 + noise map). Default: 4.
        out_channels (int): output channels. Default: 3.
        channels (Sequence[int]): widths of the four levels. Default: (64, 128, 256, 512).
        num_blocks (int): residual blocks per level. Default: 2.
    """

    def __init__(self, in_channels=4, out_channels=3, channels=(64, 128, 256, 512), num_blocks=2):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f'ResUNet needs 4 level widths, got {list(channels)}')
        c = list(channels)

        def blocks(width):
            return [ResBlock(width) for _ in range(num_blocks)]

        self.head = nn.Conv2d(in_channels, c[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            nn.Sequential(*blocks(c[i]), nn.Conv2d(c[i], c[i + 1], 2, stride=2, bias=False)) for i in range(3))
        self.body = nn.Sequential(*blocks(c[3]))
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2, bias=False), *blocks(c[i]))
            for i in reversed(range(3)))
        self.tail = nn.Conv2d(c[0], out_channels, 3, padding=1, bias=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 8 or w % 8:  # F.pad would copy even when there is nothing to pad
            x = F.pad(x, (0, -w % 8, 0, -h % 8), mode='replicate')
        skips = [self.head(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.body(skips[-1])
        for up, skip in zip(self.up, reversed(skips[1:])):
            x = up(x + skip)
        x = self.tail(x + skips[0])
        return x[..., :h, :w]
