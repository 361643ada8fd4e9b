"""ZFNet (Zeiler and Fergus 2013, "Visualizing and Understanding Convolutional Networks").

Their deconvnet showed AlexNet's 11x11/4 first layer aliasing and leaving dead filters, so they
shrank it to 7x7 with stride 2 and gave the second convolution stride 2 to keep the map sizes;
the widths are the 2012 AlexNet's 96-256-384-384-256. The paddings below reproduce the sizes
in the paper's Figure 3 (110, 55, 26, 13, 6). Local contrast normalisation is left out, as in
``alexnet``; an adaptive pool makes the classifier accept other input sizes. ``width``
multiplies the convolutions' channels; the classifier keeps its 4096-4096 hidden units.
"""

from torch import nn

from cnnlab.models.blocks import fc_classifier, scaled
from cnnlab.models.registry import register_model

WIDTHS = (96, 256, 384, 384, 256)  # output channels of the five convolutions


class ZFNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.5,
                 width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(channels, width) for channels in WIDTHS)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=7, stride=2, padding=1), nn.ReLU(),  # N x 96 x 110 x 110
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),                           # N x 96 x 55 x 55
            nn.Conv2d(c1, c2, kernel_size=5, stride=2), nn.ReLU(),                      # N x 256 x 26 x 26
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),                           # N x 256 x 13 x 13
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),                     # N x 256 x 13 x 13
            nn.MaxPool2d(kernel_size=3, stride=2),                                      # N x 256 x 6 x 6
        )
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = fc_classifier(c5 * 6 * 6, num_classes, dropout=dropout)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))  # N x num_classes


@register_model(family="ZFNet", year=2013, input_size=(3, 224, 224))
def zfnet(in_channels=3, num_classes=1000, **kwargs):
    """ZFNet: AlexNet with a 7x7/2 first convolution and a strided second one."""
    return ZFNet(in_channels, num_classes, **kwargs)
