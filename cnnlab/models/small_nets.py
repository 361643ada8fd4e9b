"""Two tiny networks for images at the embedded digits' own 8x8 resolution, of similar size
(about 6.2k and 6.4k parameters, like the ~6.4k-parameter pair of NYU's deep-learning course):
the pair of the permuted-pixels experiment.

A convolution looks at neighbouring pixels; a fully connected layer weighs every pixel on its
own. Shuffling the pixel positions by one fixed permutation therefore leaves an MLP's task
unchanged (it can learn the shuffled weights as easily), while a CNN's 3x3 windows then see
pixels that were never neighbours, and pooling mixes them. At 8x8 the CNN is too small to
learn around that; LeNet on the digits upsampled to 28x28 is not (its large fully connected
head learns any shuffle), which is why these exist.
"""

from torch import nn

from cnnlab.models.blocks import scaled
from cnnlab.models.mlp import MLP
from cnnlab.models.registry import register_model

# name -> channels of each 3x3 convolution (each followed by ReLU and 2x2 max pooling)
CNN_CHANNELS = {"small_cnn": (8, 16, 32)}
# name -> hidden units of each fully connected layer
MLP_HIDDEN = {"small_mlp": (85,)}
IMAGE_SIZE = 8


class SmallCNN(nn.Module):
    """Convolution stages that halve the side, then one linear layer over the flattened map."""

    def __init__(self, channels: tuple[int, ...], in_channels: int = 1, num_classes: int = 10,
                 image_size: int = IMAGE_SIZE, width: float = 1.0):
        super().__init__()
        layers, previous = [], in_channels
        for out_channels in (scaled(c, width) for c in channels):
            layers += [nn.Conv2d(previous, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = out_channels
        self.features = nn.Sequential(*layers)
        side = image_size >> len(channels)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, num_classes))

    def forward(self, x):
        x = self.features(x)       # N x 32 x 1 x 1 (8x8 input, width 1)
        return self.classifier(x)  # N x num_classes (from 32 features)


@register_model(family="Small nets", year=1989, input_size=(1, IMAGE_SIZE, IMAGE_SIZE), num_classes=10)
def small_cnn(in_channels=1, num_classes=10, **kwargs):
    """Three 3x3 convolutions (8, 16, 32 channels) and a linear layer for 8x8 images (~6.2k params)."""
    return SmallCNN(CNN_CHANNELS["small_cnn"], in_channels, num_classes, **kwargs)


@register_model(family="Small nets", year=1986, input_size=(1, IMAGE_SIZE, IMAGE_SIZE), num_classes=10)
def small_mlp(in_channels=1, num_classes=10):
    """One hidden layer of 85 units over the 64 pixels of an 8x8 image (~6.4k params)."""
    return MLP(in_channels, num_classes, image_size=IMAGE_SIZE, hidden=MLP_HIDDEN["small_mlp"])
