"""VGG (Simonyan and Zisserman 2014): only 3x3 convolutions and 2x2 max pools, five stages.

The configurations are the paper's Table 1 columns A, B, D and E (VGG-11, -13, -16, -19), with
an optional BatchNorm after every convolution (the ``_bn`` models, not in the paper). An
adaptive pool to 7x7 feeds the 4096-4096 classifier, as in torchvision, so sizes other than
224x224 work. ``width`` multiplies every convolution's channels (``blocks.scaled``); the
classifier keeps its 4096-4096 hidden units, as d2l's "VGG-11/4" for Fashion-MNIST does, which
is ``vgg11`` at ``width=0.25`` and registered as ``vgg11_quarter``.
"""

from torch import nn

from cnnlab.models.blocks import fc_classifier, init_he, scaled
from cnnlab.models.registry import register_model

POOL = "M"
CFGS = {  # depth -> output channels of each 3x3 convolution, POOL = 2x2 max pool
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
         512, 512, 512, 512, POOL],
}


def make_layers(cfg, in_channels: int, batch_norm: bool, width: float = 1.0) -> nn.Sequential:
    layers = []
    for item in cfg:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = scaled(item, width)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 1000,
                 batch_norm: bool = False, width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        self.features = make_layers(CFGS[depth], in_channels, batch_norm, width)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.classifier = fc_classifier(scaled(512, width) * 7 * 7, num_classes, dropout=dropout)
        init_he(self, linear_std=0.01)

    def forward(self, x):
        x = self.features(x)    # N x 512 x 7 x 7 at 224 x 224 (each pool halves the side)
        x = self.pool(x)        # N x 512 x 7 x 7 whatever the input size
        return self.classifier(x)  # N x num_classes


@register_model(family="VGG", year=2014)
def vgg11(in_channels=3, num_classes=1000, **kwargs):
    """VGG-11 (configuration A): 8 convolutions and 3 fully connected layers."""
    return VGG(11, in_channels, num_classes, **kwargs)


@register_model(family="VGG", year=2014)
def vgg13(in_channels=3, num_classes=1000, **kwargs):
    """VGG-13 (configuration B): 10 convolutions and 3 fully connected layers."""
    return VGG(13, in_channels, num_classes, **kwargs)


@register_model(family="VGG", year=2014)
def vgg16(in_channels=3, num_classes=1000, **kwargs):
    """VGG-16 (configuration D): 13 convolutions and 3 fully connected layers."""
    return VGG(16, in_channels, num_classes, **kwargs)


@register_model(family="VGG", year=2014)
def vgg19(in_channels=3, num_classes=1000, **kwargs):
    """VGG-19 (configuration E): 16 convolutions and 3 fully connected layers."""
    return VGG(19, in_channels, num_classes, **kwargs)


@register_model(family="VGG", year=2015)
def vgg11_bn(in_channels=3, num_classes=1000, **kwargs):
    """VGG-11 with BatchNorm after every convolution."""
    return VGG(11, in_channels, num_classes, batch_norm=True, **kwargs)


@register_model(family="VGG", year=2015)
def vgg13_bn(in_channels=3, num_classes=1000, **kwargs):
    """VGG-13 with BatchNorm after every convolution."""
    return VGG(13, in_channels, num_classes, batch_norm=True, **kwargs)


@register_model(family="VGG", year=2015)
def vgg16_bn(in_channels=3, num_classes=1000, **kwargs):
    """VGG-16 with BatchNorm after every convolution."""
    return VGG(16, in_channels, num_classes, batch_norm=True, **kwargs)


@register_model(family="VGG", year=2015)
def vgg19_bn(in_channels=3, num_classes=1000, **kwargs):
    """VGG-19 with BatchNorm after every convolution."""
    return VGG(19, in_channels, num_classes, batch_norm=True, **kwargs)


@register_model(family="VGG", year=2014, input_size=(1, 224, 224), num_classes=10)
def vgg11_quarter(in_channels=1, num_classes=10, **kwargs):
    """VGG-11 with a quarter of the channels (d2l's VGG-11/4 for Fashion-MNIST)."""
    return VGG(11, in_channels, num_classes, width=0.25, **kwargs)
