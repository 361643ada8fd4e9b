"""AlexNet (Krizhevsky, Sutskever and Hinton 2012), in three forms.

``alexnet`` is the 2012 paper's network (96-256-384-384-256 channels, its two GPU towers joined
into one): an unpadded 11x11/4 stem on 227x227 images, (227 - 11)/4 + 1 = 55, so the first map
is 55x55x96 and the classifier reads 256 x 6 x 6 = 9216 features (62,378,344 parameters for
3 channels and 1000 classes). An adaptive pool produces that 6x6 map from any input of at least
67x67, so the network also trains on small images.

``alexnet_2012`` is the same widths the way d2l trains them on Fashion-MNIST: the stem padded by
1 at 224x224, no adaptive pooling, so its classifier reads a fixed 256 x 5 x 5 = 6400 features
and the input must be 224x224 (1x224x224 for Fashion-MNIST resized).

``alexnet_tv`` is torchvision's single-tower variant from Krizhevsky's 2014 "One weird trick for
parallelizing convolutional neural networks" (64-192-384-256-256), whose ImageNet weights load
into it (cnnlab/pretrained.py). Runs recorded as ``alexnet`` before it took the paper's widths
hold this variant's weights; ``recorded_model`` tells them apart by the first convolution.

All leave out local response normalisation (no parameters; later networks dropped it) and put
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
    "paper": dict(widths=(96, 256, 384, 384, 256), stem_padding=0, grid=6, adaptive=True),
    "d2l": dict(widths=(96, 256, 384, 384, 256), stem_padding=1, grid=5, adaptive=False),
    "one_tower": dict(widths=(64, 192, 384, 256, 256), stem_padding=2, grid=6, adaptive=True),
}


class AlexNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths, stem_padding: int, grid: int,
                 adaptive: bool, dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(channels, width) for channels in widths)
        self.features = nn.Sequential(  # shapes for "paper" at 227 x 227 ("d2l" at 224: 54, 26, 12, 5)
            nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=stem_padding), nn.ReLU(),  # 55 x 55
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c1 x 27 x 27
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c2 x 13 x 13
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),                     # N x c5 x 6 x 6
        )
        self.pool = nn.AdaptiveAvgPool2d(grid) if adaptive else nn.Identity()
        self.classifier = fc_classifier(c5 * grid * grid, num_classes, dropout=dropout)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))  # N x num_classes


@register_model(family="AlexNet", year=2012, input_size=(3, 227, 227))
def alexnet(in_channels=3, num_classes=1000, **kwargs):
    """AlexNet as in the 2012 paper: 96-256-384-384-256, 11x11/4 stem on 227x227."""
    return AlexNet(in_channels, num_classes, **CONFIGS["paper"], **kwargs)


@register_model(family="AlexNet", year=2012, input_size=(1, 224, 224), num_classes=10)
def alexnet_2012(in_channels=1, num_classes=10, **kwargs):
    """AlexNet's 2012 widths as d2l trains them: stem padded by 1, input must be 224x224."""
    return AlexNet(in_channels, num_classes, **CONFIGS["d2l"], **kwargs)


@register_model(family="AlexNet", year=2014)
def alexnet_tv(in_channels=3, num_classes=1000, **kwargs):
    """AlexNet, torchvision's single-tower 64-192-384-256-256 variant (Krizhevsky 2014)."""
    return AlexNet(in_channels, num_classes, **CONFIGS["one_tower"], **kwargs)
