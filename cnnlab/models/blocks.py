"""Pieces several model families share."""

import math
from numbers import Real
from typing import NamedTuple

from torch import Tensor, nn

from cnnlab.errors import BadModelOption

# activation name -> layer class, so configs can say "relu" or "sigmoid"
ACTIVATIONS = dict(relu=nn.ReLU, sigmoid=nn.Sigmoid, tanh=nn.Tanh)


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, to the nearest integer (halves round up) and at
    least 1. Rounding rather than truncating keeps 96 x (1/3) at 32 despite floating point; at
    the d2l ratios (width 1/2, 1/4, ...) of power-of-two widths it is d2l's ``channels // ratio``.
    Raises BadModelOption for a width that is not a positive finite number."""
    if isinstance(width, bool) or not isinstance(width, Real) or not math.isfinite(width) or width <= 0:
        raise BadModelOption(f"width must be a positive finite number, e.g. 0.5 or 2; got {width!r}")
    return max(1, math.floor(channels * width + 0.5))


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              padding: int = 0) -> nn.Sequential:
    """Convolution with bias, then ReLU: the unit of the networks before BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU())


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, eps: float = 1e-5) -> nn.Sequential:
    """Convolution without bias (BatchNorm's shift takes its place), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels, eps=eps),
        nn.ReLU(),
    )


def fc_classifier(in_features: int, num_classes: int, hidden: int = 4096,
                  dropout: float = 0.5) -> nn.Sequential:
    """The AlexNet/ZFNet/VGG head: flatten, two hidden fully connected layers each followed by
    ReLU and dropout (where the AlexNet and VGG papers put it), then the classifier."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def init_he(model: nn.Module, mode: str = "fan_out", linear_std: float | None = None) -> None:
    """torchvision's initialisation of VGG, ResNet and DenseNet: He-normal convolutions (biases
    zero), BatchNorm as the identity, and linear layers N(0, linear_std) with zero bias when
    linear_std is given (VGG), else PyTorch's default with zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)


# Weight of each auxiliary classifier's loss in the total (GoogLeNet paper, section 5).
AUX_LOSS_WEIGHT = 0.3


class AuxOutputs(NamedTuple):
    """What a model with auxiliary classifiers (GoogLeNet with aux_logits=True) returns in
    training mode; in eval mode it returns the plain ``logits`` tensor. Train on
    ``loss(logits) + AUX_LOSS_WEIGHT * sum(loss(a) for a in aux)``."""

    logits: Tensor
    aux: tuple[Tensor, ...]
