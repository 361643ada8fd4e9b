"""Network in Network (Lin, Chen and Yan 2013), at AlexNet's scale as d2l trains it on Fashion-MNIST.

Each "mlpconv" block is a convolution followed by two 1x1 convolutions: a small multilayer
perceptron slid over every position. There are no fully connected layers: the last block
outputs one map per class and global average pooling turns each map into a logit. The first
three blocks use AlexNet's kernel sizes and widths (96-256-384); ``width`` multiplies them.

Two forms of the last (class) block:
- ``nin``: as the paper's ImageNet model (conv4-1024, cccp7-1024, cccp8-1000), its hidden
  layers keep the width of the block before it and only the last 1x1 convolution has one output
  per class; that last one has no ReLU, so a logit may go negative.
- ``nin_d2l``: d2l's, every layer of the block one channel per class, a ReLU on each.
Why ``nin`` differs: with d2l's form, a class map that has been pushed below zero for every
image gets no gradient again, and with its 10-wide ReLU layers whole classes, or the whole
head, die. At 96 pixels, where the class maps are 1x1, ``nin_d2l`` stayed under 0.9 on digits
with every recipe tried in 10 epochs (PyTorch's, Xavier and He init; SGD and Adam(W) at rates
from 1e-4 to 0.1; batches of 16 to 64; typically 7 of 10 classes alive, some seeds at chance);
``nin`` reaches 0.96-0.98 in 5 epochs with the ``plain`` recipe.
"""

from torch import nn

from cnnlab.models.blocks import scaled
from cnnlab.models.registry import register_model

# (output channels, kernel, stride, padding) of the blocks followed by a 3x3/2 max pool
BLOCKS = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, *,
              hidden: int | None = None, last_relu: bool = True) -> nn.Sequential:
    """A convolution and two 1x1 convolutions; the first two have ``hidden`` outputs (default:
    ``out_channels``)."""
    hidden = hidden or out_channels
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(hidden, hidden, kernel_size=1), nn.ReLU(),
        nn.Conv2d(hidden, out_channels, kernel_size=1), nn.ReLU() if last_relu else nn.Identity(),
    )


class NiN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.5,
                 width: float = 1.0, narrow_head: bool = False):
        super().__init__()
        layers = []
        for out_channels, kernel_size, stride, padding in BLOCKS:
            out_channels = scaled(out_channels, width)
            layers += [nin_block(in_channels, out_channels, kernel_size, stride, padding),
                       nn.MaxPool2d(kernel_size=3, stride=2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers, nn.Dropout(dropout))
        class_block = (nin_block(in_channels, num_classes, kernel_size=3, padding=1) if narrow_head else
                       nin_block(in_channels, num_classes, kernel_size=3, padding=1, hidden=in_channels,
                                 last_relu=False))
        self.head = nn.Sequential(class_block, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        x = self.features(x)   # N x 384 x 5 x 5 at 224 x 224
        return self.head(x)    # N x num_classes: one averaged map per class


@register_model(family="NiN", year=2013, input_size=(1, 224, 224), num_classes=10)
def nin(in_channels=1, num_classes=10, **kwargs):
    """Network in Network, its class block as the paper's ImageNet model, without a ReLU on the class maps."""
    return NiN(in_channels, num_classes, **kwargs)


@register_model(family="NiN", year=2013, input_size=(1, 224, 224), num_classes=10)
def nin_d2l(in_channels=1, num_classes=10, **kwargs):
    """Network in Network exactly as d2l builds it: a class block one channel per class, all ReLU."""
    return NiN(in_channels, num_classes, narrow_head=True, **kwargs)
