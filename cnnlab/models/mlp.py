"""A multilayer perceptron: the baseline every convolutional network should beat."""

from torch import nn

from cnnlab.models.registry import register_model


class MLP(nn.Module):
    """Flatten the image, then fully connected layers with ReLU (d2l's 784-256-10 by default)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 hidden: tuple[int, ...] = (256,)):
        super().__init__()
        widths = [in_channels * image_size * image_size, *hidden]
        layers = [nn.Flatten()]
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


@register_model(family="MLP", year=1986, input_size=(1, 28, 28), num_classes=10)
def mlp(in_channels=1, num_classes=10, **kwargs):
    """Multilayer perceptron, one hidden layer of 256 units (baseline)."""
    return MLP(in_channels, num_classes, **kwargs)
