"""ResNet (He, Zhang, Ren and Sun 2015) for ImageNet and CIFAR-10, pre-activation ResNet (He et
al. 2016), plain networks, and ResNets with SE, CBAM or ECA attention.

A residual block adds its input back to the output of a small branch of convolutions, so a
block that learns nothing is the identity and depth stops hurting. ResNet-18/34 use the basic
block (two 3x3 convolutions), ResNet-50/101/152 the bottleneck (1x1 reduce, 3x3, 1x1 expand by
``expansion = 4``); the 3x3 carries the stride, as in torchvision ("ResNet v1.5").

``preactivation=True`` reorders each block as in "Identity Mappings in Deep Residual Networks":
BatchNorm and ReLU come *before* each convolution and nothing follows the addition, so the
identity path carries the signal untouched from block to block; the stem then has no
BatchNorm/ReLU and a final BatchNorm/ReLU precedes the pooling.

``attention="se"``, ``"cbam"`` or ``"eca"`` applies squeeze-and-excitation, CBAM or ECA
(cnnlab.models.attention) to the end of every branch, before the addition, where the papers put it.

``width`` multiplies every convolution's channels (``blocks.scaled``; stem and all stages, the
bottleneck's expansion applies to the scaled planes); the classifier reads whatever the last
stage gives. ``width=1`` is the network above, parameter for parameter.

The CIFAR-10 ResNets of the paper's section 4.2 (``resnet20`` ... ``resnet110``, ``CifarResNet``)
have 6n+2 layers: a 3x3 stem of 16 channels, three stages of n basic blocks with 16, 32 and 64
channels, global average pooling and a linear classifier. Their shortcuts are option A: the
identity, and where a stage halves the side and doubles the channels, subsampling by 2 with the
new channels zero (no parameters). ``plain20`` ... ``plain110`` are the paper's plain
counterparts: the same layers without any shortcut.
"""

import torch
from torch import nn

from cnnlab.errors import BadModelOption
from cnnlab.models.attention import attention_layer
from cnnlab.models.blocks import init_he, scaled
from cnnlab.models.registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ZeroPaddingShortcut(nn.Module):
    """Option A of the ResNet paper: keep every ``stride``-th pixel and append zero channels up
    to ``out_channels``. The subsampling is written as a 1x1 max pool of that stride (the same
    values as slicing ``x[:, :, ::2, ::2]``) so the summary computes its receptive field."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.subsample = nn.MaxPool2d(kernel_size=1, stride=stride)
        self.new_channels = out_channels - in_channels

    def forward(self, x):
        x = self.subsample(x)   # N x C x H/s x W/s
        zeros = x.new_zeros(x.shape[0], self.new_channels, x.shape[2], x.shape[3])
        return torch.cat([x, zeros], dim=1)  # N x C_out x H/s x W/s


# what a block adds to its branch: the identity, with a 1x1 convolution (+ BatchNorm) where the
# shape changes (option B, torchvision's), the same with zero padding instead (option A), or
# nothing at all (the plain networks)
SHORTCUTS = ("projection", "zero_padding", "none")


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``, or with pre-activation ``branch(a) + shortcut`` where
    ``a = relu(bn(x))``; ``shortcut`` is one of SHORTCUTS ("none": ``relu(branch(x))``).
    Subclasses say which convolutions make the branch."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, attention: str | None = None,
                 preactivation: bool = False, shortcut: str = "projection"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise BadModelOption(f"shortcut must be one of {SHORTCUTS}, not {shortcut!r}")
        out_channels = planes * self.expansion
        self.preactivation = preactivation
        final_norm = [] if preactivation else [nn.BatchNorm2d(out_channels)]  # else the next block's
        self.branch = nn.Sequential(*self.branch_layers(in_channels, planes, stride), *final_norm,
                                    attention_layer(attention, out_channels))
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU()) if preactivation else None
        self.residual = shortcut != "none"
        self.projection = None  # the identity, unless the shape changes: option B's 1x1 or option A
        if self.residual and (stride != 1 or in_channels != out_channels):
            norm = [] if preactivation else [nn.BatchNorm2d(out_channels)]
            self.projection = (ZeroPaddingShortcut(in_channels, out_channels, stride)
                               if shortcut == "zero_padding"
                               else nn.Sequential(conv1x1(in_channels, out_channels, stride), *norm))
        self.relu = None if preactivation else nn.ReLU()

    def branch_layers(self, in_channels: int, planes: int, stride: int) -> list[nn.Module]:
        """The branch from its first convolution to its last, before the final BatchNorm."""
        raise NotImplementedError("a block type defines its branch")

    def forward(self, x):
        if self.preactivation:
            activated = self.preact(x)
            if not self.residual:
                return self.branch(activated)
            shortcut = x if self.projection is None else self.projection(activated)
            return self.branch(activated) + shortcut  # nothing after the addition
        if not self.residual:
            return self.relu(self.branch(x))
        shortcut = x if self.projection is None else self.projection(x)
        return self.relu(self.branch(x) + shortcut)


class BasicBlock(ResidualBlock):
    expansion = 1

    def branch_layers(self, in_channels, planes, stride):
        return [conv3x3(in_channels, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(),
                conv3x3(planes, planes)]


class Bottleneck(ResidualBlock):
    expansion = 4

    def branch_layers(self, in_channels, planes, stride):
        return [conv1x1(in_channels, planes), nn.BatchNorm2d(planes), nn.ReLU(),
                conv3x3(planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(),
                conv1x1(planes, planes * self.expansion)]


DEPTHS = {  # depth -> (block, number of blocks in each of the four stages)
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def make_stages(block, channels: int, stage_widths, stage_sizes, **block_options):
    """One nn.Sequential of blocks per stage; the first block of every stage but the first
    halves the side. Returns the stages and the channels the last one gives."""
    stages = []
    for index, (planes, num_blocks) in enumerate(zip(stage_widths, stage_sizes)):
        blocks = []
        for position in range(num_blocks):
            stride = 2 if index > 0 and position == 0 else 1
            blocks.append(block(channels, planes, stride, **block_options))
            channels = planes * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, channels


class ResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 1000,
                 attention: str | None = None, preactivation: bool = False, width: float = 1.0):
        super().__init__()
        block, stage_sizes = DEPTHS[depth]
        stem_channels = scaled(64, width)
        stem_norm = [] if preactivation else [nn.BatchNorm2d(stem_channels), nn.ReLU()]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3, bias=False),
            *stem_norm, nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stage_widths = [scaled(64 * 2 ** index, width) for index in range(4)]
        stages, channels = make_stages(block, stem_channels, stage_widths, stage_sizes,
                                       attention=attention, preactivation=preactivation)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final_norm = (nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if preactivation
                           else nn.Identity())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        init_he(self)

    def forward(self, x):          # e = block.expansion (1 for ResNet-18/34, 4 above)
        x = self.stem(x)            # N x 64 x 56 x 56 at 224 x 224
        x = self.layer1(x)          # N x 64e x 56 x 56
        x = self.layer2(x)          # N x 128e x 28 x 28
        x = self.layer3(x)          # N x 256e x 14 x 14
        x = self.layer4(x)          # N x 512e x 7 x 7
        x = self.final_norm(x)
        return self.head(x)         # N x num_classes


CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}  # depth 6n + 2 -> n basic blocks per stage


class CifarResNet(nn.Module):
    """He et al. 2015, section 4.2: 3x3 stem, stages of 16-32-64 channels on 32-16-8 maps."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10,
                 shortcut: str = "zero_padding", attention: str | None = None, width: float = 1.0):
        super().__init__()
        stem_channels = scaled(16, width)
        self.stem = nn.Sequential(conv3x3(in_channels, stem_channels), nn.BatchNorm2d(stem_channels),
                                  nn.ReLU())
        stage_widths = [scaled(16 * 2 ** index, width) for index in range(3)]
        stages, channels = make_stages(BasicBlock, stem_channels, stage_widths, [CIFAR_DEPTHS[depth]] * 3,
                                       attention=attention, shortcut=shortcut)
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        init_he(self)

    def forward(self, x):
        x = self.stem(x)            # N x 16 x 32 x 32 at 32 x 32
        x = self.layer1(x)          # N x 16 x 32 x 32
        x = self.layer2(x)          # N x 32 x 16 x 16
        x = self.layer3(x)          # N x 64 x 8 x 8
        return self.head(x)         # N x num_classes


CIFAR = dict(family="CIFAR ResNet", year=2015, input_size=(3, 32, 32), num_classes=10)


@register_model(family="ResNet", year=2015)
def resnet18(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-18: basic blocks, 2-2-2-2."""
    return ResNet(18, in_channels, num_classes, **kwargs)


@register_model(family="ResNet", year=2015)
def resnet34(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-34: basic blocks, 3-4-6-3."""
    return ResNet(34, in_channels, num_classes, **kwargs)


@register_model(family="ResNet", year=2015)
def resnet50(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-50: bottleneck blocks, 3-4-6-3."""
    return ResNet(50, in_channels, num_classes, **kwargs)


@register_model(family="ResNet", year=2015)
def resnet101(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-101: bottleneck blocks, 3-4-23-3."""
    return ResNet(101, in_channels, num_classes, **kwargs)


@register_model(family="ResNet", year=2015)
def resnet152(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-152: bottleneck blocks, 3-8-36-3."""
    return ResNet(152, in_channels, num_classes, **kwargs)


@register_model(family="ResNet", year=2016)
def preact_resnet18(in_channels=3, num_classes=1000, **kwargs):
    """Pre-activation ResNet-18 (BN-ReLU before each convolution, identity shortcuts clean)."""
    return ResNet(18, in_channels, num_classes, preactivation=True, **kwargs)


@register_model(family="ResNet", year=2016)
def preact_resnet34(in_channels=3, num_classes=1000, **kwargs):
    """Pre-activation ResNet-34."""
    return ResNet(34, in_channels, num_classes, preactivation=True, **kwargs)


@register_model(family="ResNet", year=2016)
def preact_resnet50(in_channels=3, num_classes=1000, **kwargs):
    """Pre-activation ResNet-50."""
    return ResNet(50, in_channels, num_classes, preactivation=True, **kwargs)


@register_model(family="SENet", year=2017)
def se_resnet18(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-18 with squeeze-and-excitation (reduction 16) in every block."""
    return ResNet(18, in_channels, num_classes, attention="se", **kwargs)


@register_model(family="SENet", year=2017)
def se_resnet50(in_channels=3, num_classes=1000, **kwargs):
    """SE-ResNet-50: squeeze-and-excitation (reduction 16) in every bottleneck."""
    return ResNet(50, in_channels, num_classes, attention="se", **kwargs)


@register_model(family="CBAM", year=2018)
def cbam_resnet18(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-18 with CBAM channel and spatial attention in every block."""
    return ResNet(18, in_channels, num_classes, attention="cbam", **kwargs)


@register_model(family="CBAM", year=2018)
def cbam_resnet50(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-50 with CBAM channel and spatial attention in every bottleneck."""
    return ResNet(50, in_channels, num_classes, attention="cbam", **kwargs)


@register_model(family="ECA-Net", year=2020)
def eca_resnet18(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-18 with efficient channel attention (a k-tap 1-D convolution) in every block."""
    return ResNet(18, in_channels, num_classes, attention="eca", **kwargs)


@register_model(family="ECA-Net", year=2020)
def eca_resnet50(in_channels=3, num_classes=1000, **kwargs):
    """ResNet-50 with efficient channel attention in every bottleneck."""
    return ResNet(50, in_channels, num_classes, attention="eca", **kwargs)


@register_model(**CIFAR)
def resnet20(in_channels=3, num_classes=10, **kwargs):
    """ResNet-20 for CIFAR-10: 3 stages of 3 basic blocks, 16-32-64 channels, option A shortcuts."""
    return CifarResNet(20, in_channels, num_classes, **kwargs)


@register_model(**CIFAR)
def resnet32(in_channels=3, num_classes=10, **kwargs):
    """ResNet-32 for CIFAR-10: 3 stages of 5 basic blocks, 16-32-64 channels, option A shortcuts."""
    return CifarResNet(32, in_channels, num_classes, **kwargs)


@register_model(**CIFAR)
def resnet44(in_channels=3, num_classes=10, **kwargs):
    """ResNet-44 for CIFAR-10: 3 stages of 7 basic blocks, 16-32-64 channels, option A shortcuts."""
    return CifarResNet(44, in_channels, num_classes, **kwargs)


@register_model(**CIFAR)
def resnet56(in_channels=3, num_classes=10, **kwargs):
    """ResNet-56 for CIFAR-10: 3 stages of 9 basic blocks, 16-32-64 channels, option A shortcuts."""
    return CifarResNet(56, in_channels, num_classes, **kwargs)


@register_model(**CIFAR)
def resnet110(in_channels=3, num_classes=10, **kwargs):
    """ResNet-110 for CIFAR-10: 3 stages of 18 basic blocks, 16-32-64 channels, option A shortcuts."""
    return CifarResNet(110, in_channels, num_classes, **kwargs)


@register_model(**CIFAR)
def plain20(in_channels=3, num_classes=10, **kwargs):
    """Plain-20: ResNet-20 for CIFAR-10 without shortcuts (the paper's plain counterpart)."""
    return CifarResNet(20, in_channels, num_classes, shortcut="none", **kwargs)


@register_model(**CIFAR)
def plain32(in_channels=3, num_classes=10, **kwargs):
    """Plain-32: ResNet-32 for CIFAR-10 without shortcuts (the paper's plain counterpart)."""
    return CifarResNet(32, in_channels, num_classes, shortcut="none", **kwargs)


@register_model(**CIFAR)
def plain44(in_channels=3, num_classes=10, **kwargs):
    """Plain-44: ResNet-44 for CIFAR-10 without shortcuts (the paper's plain counterpart)."""
    return CifarResNet(44, in_channels, num_classes, shortcut="none", **kwargs)


@register_model(**CIFAR)
def plain56(in_channels=3, num_classes=10, **kwargs):
    """Plain-56: ResNet-56 for CIFAR-10 without shortcuts (the paper's plain counterpart)."""
    return CifarResNet(56, in_channels, num_classes, shortcut="none", **kwargs)


@register_model(**CIFAR)
def plain110(in_channels=3, num_classes=10, **kwargs):
    """Plain-110: ResNet-110 for CIFAR-10 without shortcuts (the paper's plain counterpart)."""
    return CifarResNet(110, in_channels, num_classes, shortcut="none", **kwargs)
