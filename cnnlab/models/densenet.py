"""DenseNet (Huang, Liu, van der Maaten and Weinberger 2016), "DenseNet-BC" as torchvision has it.

Inside a dense block every layer sees the concatenation of all earlier maps and adds
``growth_rate`` new ones. Each layer is BN-ReLU-1x1 conv (a bottleneck to ``bn_size * growth``
channels) then BN-ReLU-3x3 conv; between blocks a transition (BN-ReLU-1x1 conv, 2x2 average
pool) halves both the channels (compression 0.5) and the side. Plain modules, no
memory-saving checkpointing.

``densenet_small`` is d2l's DenseNet for Fashion-MNIST at 96x96: four blocks of four layers
without the 1x1 bottleneck (``bn_size=None``).

``width`` multiplies the growth rate and the stem's channels (so the bottleneck, ``bn_size``
times the growth rate, and the transitions follow); there is no hidden fully connected layer.
"""

import torch
from torch import nn

from cnnlab.models.blocks import init_he, scaled
from cnnlab.models.registry import register_model

CONFIGS = {  # name -> growth rate, layers per dense block, stem channels, bottleneck factor
    "densenet121": dict(growth_rate=32, block_sizes=(6, 12, 24, 16), stem_channels=64, bn_size=4),
    "densenet161": dict(growth_rate=48, block_sizes=(6, 12, 36, 24), stem_channels=96, bn_size=4),
    "densenet169": dict(growth_rate=32, block_sizes=(6, 12, 32, 32), stem_channels=64, bn_size=4),
    "densenet201": dict(growth_rate=32, block_sizes=(6, 12, 48, 32), stem_channels=64, bn_size=4),
    "densenet_small": dict(growth_rate=32, block_sizes=(4, 4, 4, 4), stem_channels=64, bn_size=None),
}


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)]


def dense_layer(in_channels: int, growth_rate: int, bn_size: int | None) -> nn.Sequential:
    """The ``growth_rate`` new maps one layer adds."""
    if bn_size is None:
        return nn.Sequential(*bn_relu_conv(in_channels, growth_rate, 3))
    width = bn_size * growth_rate
    return nn.Sequential(*bn_relu_conv(in_channels, width, 1), *bn_relu_conv(width, growth_rate, 3))


class DenseBlock(nn.Module):
    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int | None):
        super().__init__()
        self.layers = nn.ModuleList(
            dense_layer(in_channels + i * growth_rate, growth_rate, bn_size) for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)  # N x (C + growth_rate) x H x W
        return x


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*bn_relu_conv(in_channels, out_channels, 1), nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1000, growth_rate: int = 32,
                 block_sizes=(6, 12, 24, 16), stem_channels: int = 64, bn_size: int | None = 4,
                 compression: float = 0.5, width: float = 1.0):
        super().__init__()
        growth_rate, stem_channels = scaled(growth_rate, width), scaled(stem_channels, width)
        layers = [
            nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        channels = stem_channels
        for index, num_layers in enumerate(block_sizes):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size)
            layers.append(block)
            channels = block.out_channels
            if index < len(block_sizes) - 1:
                layers.append(transition(channels, int(channels * compression)))
                channels = int(channels * compression)
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(channels), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        init_he(self, mode="fan_in")

    def forward(self, x):
        x = self.features(x)  # DenseNet-121: N x 1024 x 7 x 7 at 224 x 224
        return self.head(x)   # N x num_classes


@register_model(family="DenseNet", year=2016)
def densenet121(in_channels=3, num_classes=1000, **kwargs):
    """DenseNet-121: growth 32, blocks of 6-12-24-16 layers."""
    return DenseNet(in_channels, num_classes, **CONFIGS["densenet121"], **kwargs)


@register_model(family="DenseNet", year=2016)
def densenet161(in_channels=3, num_classes=1000, **kwargs):
    """DenseNet-161: growth 48, blocks of 6-12-36-24 layers, 96 stem channels."""
    return DenseNet(in_channels, num_classes, **CONFIGS["densenet161"], **kwargs)


@register_model(family="DenseNet", year=2016)
def densenet169(in_channels=3, num_classes=1000, **kwargs):
    """DenseNet-169: growth 32, blocks of 6-12-32-32 layers."""
    return DenseNet(in_channels, num_classes, **CONFIGS["densenet169"], **kwargs)


@register_model(family="DenseNet", year=2016)
def densenet201(in_channels=3, num_classes=1000, **kwargs):
    """DenseNet-201: growth 32, blocks of 6-12-48-32 layers."""
    return DenseNet(in_channels, num_classes, **CONFIGS["densenet201"], **kwargs)


@register_model(family="DenseNet", year=2016, input_size=(1, 96, 96), num_classes=10)
def densenet_small(in_channels=1, num_classes=10, **kwargs):
    """d2l's small DenseNet: four blocks of four 3x3 layers, growth 32, no bottleneck."""
    return DenseNet(in_channels, num_classes, **CONFIGS["densenet_small"], **kwargs)
