"""AlexNet (Krizhevsky, Sutskever and Hinton 2012), in its two common forms.

``alexnet`` is torchvision's single-tower network from Krizhevsky's 2014 "One weird trick for
parallelizing convolutional neural networks" (64-192-384-256-256 channels): pooled to 6x6 by an
adaptive average pool, so it takes any input of at least 63x63.

``alexnet_2012`` keeps the 2012 paper's widths (96-256-384-384-256, its two GPU towers joined
into one) the way d2l trains it on Fashion-MNIST: an 11x11/4 convolution padded by 1, no
adaptive pooling, so its classifier reads a fixed 256 x 5 x 5 = 6400 features and the input
must be 224x224 (1x224x224 for Fashion-MNIST resized).

Both leave out local response normalisation (no parameters; later networks dropped it) and put
dropout after the first two fully connected layers, as the paper did (torchvision puts it
before them; the parameters are the same).

``width`` multiplies the five convolutions' channels; the classifier keeps its 4096-4096 hidden
units (as d2l's VGG-11/4 does).
"""

from torch import nn

from cnnlab.models.blocks import fc_classifier, scaled
from cnnlab.models.registry import register_model

CONFIGS = {
    # widths of the five convolutions, padding of the 11x11/4 stem, side of the map the
    # classifier reads, and whether an adaptive pool produces that map from any input size
    "one_tower": dict(widths=(64, 192, 384, 256, 256), stem_padding=2, grid=6, adaptive=True),
    "2012": dict(widths=(96, 256, 384, 384, 256), stem_padding=1, grid=5, adaptive=False),
}


class AlexNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths, stem_padding: int, grid: int,
                 adaptive: bool, dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(channels, width) for channels in widths)
        self.features = nn.Sequential(  # shapes at 224 x 224 for "one_tower" (then "2012")
            nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=stem_padding), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c1 x 27 x 27 (26 x 26)
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c2 x 13 x 13 (12 x 12)
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c5 x 6 x 6 (5 x 5)
        )
        self.pool = nn.AdaptiveAvgPool2d(grid) if adaptive else nn.Identity()
        self.classifier = fc_classifier(c5 * grid * grid, num_classes, dropout=dropout)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))  # N x num_classes


OPTIONS = dict(width=float, dropout=float)


@register_model(family="AlexNet", year=2014, input_size=(3, 224, 224), options=OPTIONS)
def alexnet(in_channels=3, num_classes=1000, **kwargs):
    """AlexNet, torchvision's single-tower 64-192-384-256-256 variant (Krizhevsky 2014)."""
    return AlexNet(in_channels, num_classes, **CONFIGS["one_tower"], **kwargs)


@register_model(family="AlexNet", year=2012, input_size=(1, 224, 224), num_classes=10, options=OPTIONS)
def alexnet_2012(in_channels=1, num_classes=10, **kwargs):
    """AlexNet with the 2012 paper's 96-256-384-384-256 widths (d2l); input must be 224x224."""
    return AlexNet(in_channels, num_classes, **CONFIGS["2012"], **kwargs)
