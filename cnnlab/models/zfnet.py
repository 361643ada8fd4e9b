"""ZFNet (Zeiler and Fergus 2013, "Visualizing and Understanding Convolutional Networks").

Their deconvnet showed AlexNet's 11x11/4 first layer aliasing and leaving dead filters, so they
shrank it to 7x7 with stride 2 and gave the second convolution stride 2 to keep the map sizes;
the widths are the 2012 AlexNet's 96-256-384-384-256. The paddings below reproduce the sizes
in the paper's Figure 3 (110, 55, 26, 13, 6). Local contrast normalisation is left out, as in
``alexnet``; an adaptive pool makes the classifier accept other input sizes.
"""

from torch import nn

from cnnlab.models.blocks import fc_classifier
from cnnlab.models.registry import register_model


class ZFNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1), nn.ReLU(),  # N x 96 x 110 x 110
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),                           # N x 96 x 55 x 55
            nn.Conv2d(96, 256, kernel_size=5, stride=2), nn.ReLU(),                     # N x 256 x 26 x 26
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),                           # N x 256 x 13 x 13
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),                   # N x 256 x 13 x 13
            nn.MaxPool2d(kernel_size=3, stride=2),                                      # N x 256 x 6 x 6
        )
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = fc_classifier(256 * 6 * 6, num_classes, dropout=dropout)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))  # N x num_classes


@register_model(family="ZFNet", year=2013, input_size=(3, 224, 224))
def zfnet(in_channels=3, num_classes=1000, **kwargs):
    """ZFNet: AlexNet with a 7x7/2 first convolution and a strided second one."""
    return ZFNet(in_channels, num_classes, **kwargs)
