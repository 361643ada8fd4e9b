"""Attention a residual block applies to its branch just before the addition.

Squeeze-and-excitation (Hu, Shen and Sun 2017) reweights channels from their global average;
CBAM (Woo, Park, Lee and Kweon 2018) reweights channels from both the average and the maximum,
then reweights positions. Both use a bottleneck MLP of ``channels // reduction`` hidden units
(reduction 16 in both papers), written as 1x1 convolutions so no reshaping is needed.

ECA (Wang, Wu, Zhu, Li, Zuo and Hu 2020, "ECA-Net") drops that bottleneck: each channel's
weight comes from its k neighbours' global averages through one k-tap 1-D convolution across
the channels, k growing with log2 of the channel count, so a block gains only k parameters.
"""

import math

import torch
from torch import nn

from cnnlab.errors import BadModelOption


def bottleneck_mlp(channels: int, reduction: int) -> nn.Sequential:
    hidden = max(channels // reduction, 1)
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(bottleneck_mlp(channels, reduction), nn.Sigmoid())

    def forward(self, x):
        return x * self.excite(self.squeeze(x))  # weights: N x C x 1 x 1, each in (0, 1)


class ChannelAttention(nn.Module):
    """CBAM's channel half: one MLP shared by the average- and the max-pooled descriptor."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = bottleneck_mlp(channels, reduction)

    def forward(self, x):
        average = self.mlp(x.mean(dim=(2, 3), keepdim=True))  # N x C x 1 x 1
        maximum = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(average + maximum)


class SpatialAttention(nn.Module):
    """CBAM's spatial half: a 7x7 convolution over the channel-wise mean and maximum."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # N x 2 x H x W
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Sequential):
    """Channel attention, then spatial attention (the order the CBAM paper found best)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention())


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The ECA paper's k = |log2(C)/gamma + b/gamma|_odd, computed as its code does: truncate,
    then take the next odd number if even (C = 64 -> 3, 256 -> 5, 512 -> 5, 2048 -> 7)."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class EfficientChannelAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        kernel_size = eca_kernel_size(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        descriptor = self.pool(x).squeeze(-1).transpose(-1, -2)  # N x 1 x C: channels as a sequence
        weights = self.conv(descriptor).transpose(-1, -2).unsqueeze(-1)  # N x C x 1 x 1
        return x * torch.sigmoid(weights)


# name accepted by ResNet(attention=...) -> module built with the branch's output channels
ATTENTION = dict(se=SqueezeExcitation, cbam=CBAM, eca=EfficientChannelAttention)


def attention_layer(name: str | None, channels: int) -> nn.Module:
    """The attention module called ``name`` for ``channels`` channels; None gives the identity."""
    if name is None:
        return nn.Identity()
    if name not in ATTENTION:
        raise BadModelOption(f"unknown attention {name!r}; choose one of {', '.join(ATTENTION)}")
    return ATTENTION[name](channels)
