"""A small network of your own: depthwise-separable blocks (MobileNet's idea) for 28x28 digits.

    cnnlab summary examples/separable_net.py:SeparableNet --explain
    cnnlab train examples/separable_net.py:SeparableNet
    cnnlab train examples/separable_net.py:SeparableNet --model-arg width=2
"""

import torch
from torch import nn


class SeparableBlock(nn.Module):
    """A 3x3 convolution split in two: a depthwise 3x3 (one filter per channel, groups=cin), then
    a pointwise 1x1 that mixes the channels. 9*cin + cin*cout weights instead of 9*cin*cout."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.norm(self.pointwise(self.depthwise(x))))


class SeparableNet(nn.Module):
    """A stem convolution, three separable blocks, global average pooling, one linear layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 1):
        super().__init__()
        c = 16 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),  # N x c x 28 x 28
            SeparableBlock(c, 2 * c, stride=2),                                     # N x 2c x 14 x 14
            SeparableBlock(2 * c, 2 * c),
            nn.MaxPool2d(2),                                                        # N x 2c x 7 x 7
            SeparableBlock(2 * c, 4 * c),                                           # N x 4c x 7 x 7
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))  # N x num_classes
