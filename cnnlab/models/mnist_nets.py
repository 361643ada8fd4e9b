"""The two small MNIST networks of Liu Er's course "PyTorch深度学习实践" (PyTorch deep learning
practice, 2020): the Inception and the residual idea at their smallest.

Both take 1x28x28 images and end in a fixed-size fully connected layer (1408 and 512 inputs),
so other input sizes do not fit. As in the course, the Inception block has no activation of
its own and the convolutions have bias. ``width`` multiplies every convolution's channels; the
fully connected layer reads what the last block gives.
"""

import torch
from torch import nn

from cnnlab.models.blocks import scaled
from cnnlab.models.registry import register_model


class InceptionA(nn.Module):
    """Four branches of 16 + 24 + 24 + 24 = 88 channels (at width 1), the side unchanged."""

    def __init__(self, in_channels: int, width: float = 1.0):
        super().__init__()
        c16, c24 = scaled(16, width), scaled(24, width)
        self.branch1x1 = nn.Conv2d(in_channels, c16, kernel_size=1)
        self.branch5x5 = nn.Sequential(
            nn.Conv2d(in_channels, c16, kernel_size=1), nn.Conv2d(c16, c24, kernel_size=5, padding=2))
        self.branch3x3 = nn.Sequential(
            nn.Conv2d(in_channels, c16, kernel_size=1), nn.Conv2d(c16, c24, kernel_size=3, padding=1),
            nn.Conv2d(c24, c24, kernel_size=3, padding=1))
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(kernel_size=3, stride=1, padding=1), nn.Conv2d(in_channels, c24, kernel_size=1))
        self.out_channels = c16 + 3 * c24

    def forward(self, x):
        branches = [self.branch1x1(x), self.branch5x5(x), self.branch3x3(x), self.branch_pool(x)]
        return torch.cat(branches, dim=1)


class InceptionMNIST(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c10, c20 = scaled(10, width), scaled(20, width)
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, c10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU())
        self.inception1 = InceptionA(c10, width)
        self.stage2 = nn.Sequential(
            nn.Conv2d(self.inception1.out_channels, c20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU())
        self.inception2 = InceptionA(c20, width)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(self.inception2.out_channels * 4 * 4, num_classes))

    def forward(self, x):
        x = self.stage1(x)      # N x 10 x 12 x 12
        x = self.inception1(x)  # N x 88 x 12 x 12
        x = self.stage2(x)      # N x 20 x 4 x 4
        x = self.inception2(x)  # N x 88 x 4 x 4
        return self.fc(x)       # N x num_classes (from 1408 features)


class ResidualBlock(nn.Module):
    """relu(x + conv(relu(conv(x)))): two 3x3 convolutions that keep channels and side."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.branch(x))


class ResidualMNIST(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c16, c32 = scaled(16, width), scaled(32, width)
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, c16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2))
        self.block1 = ResidualBlock(c16)
        self.stage2 = nn.Sequential(nn.Conv2d(c16, c32, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = ResidualBlock(c32)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c32 * 4 * 4, num_classes))

    def forward(self, x):
        x = self.block1(self.stage1(x))  # N x 16 x 12 x 12
        x = self.block2(self.stage2(x))  # N x 32 x 4 x 4
        return self.fc(x)                # N x num_classes (from 512 features)


@register_model(family="MNIST course", year=2020, input_size=(1, 28, 28), num_classes=10)
def mnist_inception(in_channels=1, num_classes=10, **kwargs):
    """Two convolutions each followed by a small Inception block (Liu Er's course); 28x28 input."""
    return InceptionMNIST(in_channels, num_classes, **kwargs)


@register_model(family="MNIST course", year=2020, input_size=(1, 28, 28), num_classes=10)
def mnist_resnet(in_channels=1, num_classes=10, **kwargs):
    """Two convolutions each followed by a residual block (Liu Er's course); 28x28 input."""
    return ResidualMNIST(in_channels, num_classes, **kwargs)
