"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions").

Nine Inception blocks, each four parallel branches concatenated along the channels: a 1x1
convolution; a 1x1 reduction then a 3x3; a 1x1 reduction then a 5x5; a 3x3 max pool then a 1x1
projection. The 1x1 reductions keep the wide blocks cheap. Global average pooling replaces the
fully connected layers. Two optional auxiliary classifiers (after blocks 4a and 4d) add
gradient to the middle of the network while training.

``googlenet`` follows the paper: convolutions with bias and ReLU, no BatchNorm, a 5x5 in the
third branch, dropout 0.4. ``branch3_kernels=(3, 3)`` factorises that 5x5 into two 3x3
convolutions (same receptive field, 18 instead of 25 weights per channel pair), as Inception v2
and v3 later did. Local response normalisation is left out (no parameters).

``googlenet_naive`` (``reductions=False``) drops the 1x1 reductions in front of the 3x3 and 5x5
convolutions (the paper's Fig. 2a), keeping every block's output channels, to measure what the
reductions save (see Inception). ``width`` scales every convolution (see GoogLeNet).

``googlenet_tv`` has exactly torchvision's ``googlenet`` parameters: BatchNorm (eps=0.001)
after bias-free convolutions, dropout 0.2, and a single 3x3 where the paper has the 5x5.
torchvision's GoogLeNet weights were ported from TensorFlow-slim's Inception v1, whose third
branch has that 3x3 (reported as tensorflow/models#443); torchvision kept the 3x3 so that the
ported weights still load. Its source calls the line a known bug and points to
pytorch/vision#906, where changing it was ruled out because the weights would have to be
retrained. Its max pools are torchvision's too (unpadded, ceil_mode, the last one 2x2): they
give the paper's padded pools' map sizes at 224x224 and 96x96, but their windows start one
pixel further on, so the ImageNet weights need them to give torchvision's logits.
"""

from functools import partial

import torch
from torch import nn

from cnnlab.models.blocks import AuxOutputs, conv_bn_relu, conv_relu, init_he, scaled
from cnnlab.models.registry import register_model

INCEPTIONS = {  # the paper's Table 1: name -> (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """With ``reductions=False`` the block is the paper's "naive" Inception module (Fig. 2a): the
    3x3 and 5x5 convolutions read the full input, ``c3_reduce`` and ``c5_reduce`` are unused.
    The pool branch keeps its 1x1 projection to ``pool_proj`` channels although Fig. 2a has none:
    without it the block would output ``c1 + c3 + c5 + in_channels`` channels, growing from block
    to block and changing every later layer, and the comparison would no longer measure only the
    reductions in front of the 3x3 and 5x5."""

    def __init__(self, in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
                 pool_proj: int, conv=conv_relu, branch3_kernels=(5,), reductions: bool = True):
        super().__init__()

        def reduced(width):  # the 1x1 reduction in front of a branch, and the channels after it
            return ([conv(in_channels, width, 1)], width) if reductions else ([], in_channels)

        self.branch1 = conv(in_channels, c1, 1)
        branch2, channels = reduced(c3_reduce)
        self.branch2 = nn.Sequential(*branch2, conv(channels, c3, 3, padding=1))
        branch3, channels = reduced(c5_reduce)
        for kernel_size in branch3_kernels:  # (5,): the paper; (3, 3): factorised; (3,): torchvision
            branch3.append(conv(channels, c5, kernel_size, padding=kernel_size // 2))
            channels = c5
        self.branch3 = nn.Sequential(*branch3)
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(in_channels, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class AuxiliaryClassifier(nn.Module):
    """The paper's side head: average pool to 4x4 (its 5x5/3 pool at 224x224; adaptive here so
    any input works), 1x1 convolution to 128, FC 1024, dropout 0.7, classifier."""

    def __init__(self, in_channels: int, num_classes: int, conv=conv_relu, width: float = 1.0):
        super().__init__()
        channels = scaled(128, width)
        self.layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), conv(in_channels, channels, 1), nn.Flatten(),  # N x 2048
            nn.Linear(channels * 4 * 4, 1024), nn.ReLU(), nn.Dropout(0.7),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


def max_pool(torchvision_windows: bool = False, kernel_size: int = 3) -> nn.MaxPool2d:
    """Halves the side: padded by one pixel, or unpadded with ceil_mode as in torchvision."""
    if torchvision_windows:
        return nn.MaxPool2d(kernel_size, stride=2, ceil_mode=True)
    return nn.MaxPool2d(kernel_size, stride=2, padding=kernel_size // 2)


class GoogLeNet(nn.Module):
    """With ``aux_logits=True`` the forward pass in training mode returns
    ``AuxOutputs(logits, aux=(aux_4a, aux_4d))``; in eval mode it always returns the logits.

    ``reductions=False`` builds every block as the naive module (see Inception). ``width``
    scales every convolution's channels (stem, each branch of each block, the side heads' 1x1);
    the side heads keep their 1024-unit fully connected layer."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, aux_logits: bool = False,
                 batch_norm: bool = False, branch3_kernels=(5,), dropout: float = 0.4,
                 reductions: bool = True, width: float = 1.0, torchvision_pools: bool = False):
        super().__init__()
        conv = partial(conv_bn_relu, eps=0.001) if batch_norm else conv_relu
        pool = partial(max_pool, torchvision_pools)
        c64, c192 = scaled(64, width), scaled(192, width)
        self.stem = nn.Sequential(
            conv(in_channels, c64, 7, stride=2, padding=3), pool(),
            conv(c64, c64, 1), conv(c64, c192, 3, padding=1), pool(),
        )
        self.inception = nn.ModuleDict()
        channels = c192
        for name, widths in INCEPTIONS.items():
            self.inception[name] = Inception(channels, *(scaled(c, width) for c in widths), conv=conv,
                                             branch3_kernels=branch3_kernels, reductions=reductions)
            channels = self.inception[name].out_channels
        self.pool3 = pool()  # after block 3b
        self.pool4 = pool(kernel_size=2 if torchvision_pools else 3)  # after block 4e
        self.aux_heads = nn.ModuleList([
            AuxiliaryClassifier(self.inception[name].out_channels, num_classes, conv, width)
            for name in ("4a", "4d")
        ]) if aux_logits else None
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes),
        )
        self._init_weights(batch_norm)

    def _init_weights(self, batch_norm: bool) -> None:
        if not batch_norm:  # a deep net without BatchNorm needs He init to train from scratch
            init_he(self)
            return
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        with_aux = self.aux_heads is not None and self.training
        x = self.stem(x)                  # N x 192 x 28 x 28 at 224 x 224
        x = self.inception["3a"](x)       # N x 256 x 28 x 28
        x = self.inception["3b"](x)       # N x 480 x 28 x 28
        x = self.pool3(x)                 # N x 480 x 14 x 14
        x = self.inception["4a"](x)       # N x 512 x 14 x 14
        aux_4a = self.aux_heads[0](x) if with_aux else None
        x = self.inception["4b"](x)       # N x 512 x 14 x 14
        x = self.inception["4c"](x)       # N x 512 x 14 x 14
        x = self.inception["4d"](x)       # N x 528 x 14 x 14
        aux_4d = self.aux_heads[1](x) if with_aux else None
        x = self.inception["4e"](x)       # N x 832 x 14 x 14
        x = self.pool4(x)                 # N x 832 x 7 x 7
        x = self.inception["5a"](x)       # N x 832 x 7 x 7
        x = self.inception["5b"](x)       # N x 1024 x 7 x 7
        logits = self.head(x)             # N x num_classes
        return AuxOutputs(logits, (aux_4a, aux_4d)) if with_aux else logits


@register_model(family="GoogLeNet", year=2014)
def googlenet(in_channels=3, num_classes=1000, **kwargs):
    """GoogLeNet as in the paper (5x5 third branch, no BatchNorm); aux_logits=True adds the side heads."""
    return GoogLeNet(in_channels, num_classes, **kwargs)


@register_model(family="GoogLeNet", year=2014)
def googlenet_naive(in_channels=3, num_classes=1000, **kwargs):
    """GoogLeNet with naive Inception modules: no 1x1 reduction before the 3x3 and 5x5 (Fig. 2a)."""
    return GoogLeNet(in_channels, num_classes, reductions=False, **kwargs)


@register_model(family="GoogLeNet", year=2014)
def googlenet_tv(in_channels=3, num_classes=1000, **kwargs):
    """GoogLeNet as torchvision builds it: BatchNorm and a 3x3 where the paper has the 5x5."""
    return GoogLeNet(in_channels, num_classes, batch_norm=True, branch3_kernels=(3,), dropout=0.2,
                     torchvision_pools=True, **kwargs)


@register_model(family="GoogLeNet", year=2014)
def googlenet_factorised(in_channels=3, num_classes=1000, **kwargs):
    """GoogLeNet with each 5x5 of the third branch factorised into two 3x3 (Inception v2's idea)."""
    return GoogLeNet(in_channels, num_classes, branch3_kernels=(3, 3), **kwargs)
