"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), in the form d2l teaches it.

The original used scaled tanh units and trainable subsampling; d2l keeps the shape of the
network (two 5x5 convolutions with 2x2 average pooling, then 120-84-10 fully connected layers)
with sigmoid activations and pads the first convolution so a 28x28 MNIST image keeps its size.
``width`` multiplies the two convolutions' channels (6 and 16); the fully connected layers
keep their 120 and 84 units.
"""

from torch import nn

from cnnlab.errors import BadModelOption
from cnnlab.models.blocks import ACTIVATIONS, scaled
from cnnlab.models.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, activation: str = "sigmoid",
                 width: float = 1.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise BadModelOption(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        c1, c2 = scaled(6, width), scaled(16, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2), act(),  # N x 6 x 28 x 28
            nn.AvgPool2d(kernel_size=2, stride=2),                        # N x 6 x 14 x 14
            nn.Conv2d(c1, c2, kernel_size=5), act(),                      # N x 16 x 10 x 10
            nn.AvgPool2d(kernel_size=2, stride=2),                        # N x 16 x 5 x 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(family="LeNet", year=1998, input_size=(1, 28, 28), num_classes=10)
def lenet(in_channels=1, num_classes=10, **kwargs):
    """LeNet-5 with sigmoid activations and average pooling (d2l's version)."""
    return LeNet5(in_channels, num_classes, **kwargs)


@register_model(family="LeNet", year=1998, input_size=(1, 28, 28), num_classes=10)
def lenet_relu(in_channels=1, num_classes=10, **kwargs):
    """LeNet-5 with ReLU activations: the same shape, trains faster."""
    return LeNet5(in_channels, num_classes, activation="relu", **kwargs)
