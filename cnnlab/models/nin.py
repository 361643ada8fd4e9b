"""Network in Network (Lin, Chen and Yan 2013), in the form d2l trains on Fashion-MNIST.

Each "mlpconv" block is a convolution followed by two 1x1 convolutions: a small multilayer
perceptron slid over every position. There are no fully connected layers: the last block
outputs one map per class and global average pooling turns each map into a logit. The first
three blocks use AlexNet's kernel sizes and widths (96-256-384). ``width`` multiplies those
three blocks' channels; the last block's stay one per class.
"""

from torch import nn

from cnnlab.models.blocks import scaled
from cnnlab.models.registry import register_model

# (output channels, kernel, stride, padding) of the blocks followed by a 3x3/2 max pool
BLOCKS = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              padding: int = 0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


class NiN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.5,
                 width: float = 1.0):
        super().__init__()
        layers = []
        for out_channels, kernel_size, stride, padding in BLOCKS:
            out_channels = scaled(out_channels, width)
            layers += [nin_block(in_channels, out_channels, kernel_size, stride, padding),
                       nn.MaxPool2d(kernel_size=3, stride=2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers, nn.Dropout(dropout))
        self.head = nn.Sequential(
            nin_block(in_channels, num_classes, kernel_size=3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        x = self.features(x)   # N x 384 x 5 x 5 at 224 x 224
        return self.head(x)    # N x num_classes: one averaged map per class


@register_model(family="NiN", year=2013, input_size=(1, 224, 224), num_classes=10,
                options=dict(width=float, dropout=float))
def nin(in_channels=1, num_classes=10, **kwargs):
    """Network in Network: mlpconv blocks and a global-average-pooling head, no FC (d2l)."""
    return NiN(in_channels, num_classes, **kwargs)
