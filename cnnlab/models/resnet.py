"""ResNet (He, Zhang, Ren and Sun 2015), pre-activation ResNet (He et al. 2016), SE and CBAM.

A residual block adds its input back to the output of a small branch of convolutions, so a
block that learns nothing is the identity and depth stops hurting. ResNet-18/34 use the basic
block (two 3x3 convolutions), ResNet-50/101/152 the bottleneck (1x1 reduce, 3x3, 1x1 expand by
``expansion = 4``); the 3x3 carries the stride, as in torchvision ("ResNet v1.5").

``preactivation=True`` reorders each block as in "Identity Mappings in Deep Residual Networks":
BatchNorm and ReLU come *before* each convolution and nothing follows the addition, so the
identity path carries the signal untouched from block to block; the stem then has no
BatchNorm/ReLU and a final BatchNorm/ReLU precedes the pooling.

``attention="se"`` or ``"cbam"`` applies squeeze-and-excitation or CBAM (cnnlab.models.attention)
to the end of every branch, before the addition, where both papers put it.
"""

from torch import nn

from cnnlab.models.attention import attention_layer
from cnnlab.models.blocks import init_he
from cnnlab.models.registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``, or with pre-activation ``branch(a) + shortcut`` where
    ``a = relu(bn(x))``. Subclasses say which convolutions make the branch."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, attention: str | None = None,
                 preactivation: bool = False):
        super().__init__()
        out_channels = planes * self.expansion
        self.preactivation = preactivation
        final_norm = [] if preactivation else [nn.BatchNorm2d(out_channels)]  # else the next block's
        self.branch = nn.Sequential(*self.branch_layers(in_channels, planes, stride), *final_norm,
                                    attention_layer(attention, out_channels))
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU()) if preactivation else None
        self.projection = None  # the shortcut is the identity unless the shape changes
        if stride != 1 or in_channels != out_channels:
            norm = [] if preactivation else [nn.BatchNorm2d(out_channels)]
            self.projection = nn.Sequential(conv1x1(in_channels, out_channels, stride), *norm)
        self.relu = None if preactivation else nn.ReLU()

    def branch_layers(self, in_channels: int, planes: int, stride: int) -> list[nn.Module]:
        """The branch from its first convolution to its last, before the final BatchNorm."""
        raise NotImplementedError("a block type defines its branch")

    def forward(self, x):
        if self.preactivation:
            activated = self.preact(x)
            shortcut = x if self.projection is None else self.projection(activated)
            return self.branch(activated) + shortcut  # nothing after the addition
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


class ResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 1000,
                 attention: str | None = None, preactivation: bool = False):
        super().__init__()
        block, stage_sizes = DEPTHS[depth]
        stem_norm = [] if preactivation else [nn.BatchNorm2d(64), nn.ReLU()]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False), *stem_norm,
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages, channels = [], 64
        for index, num_blocks in enumerate(stage_sizes):
            planes = 64 * 2 ** index
            blocks = []
            for position in range(num_blocks):
                stride = 2 if index > 0 and position == 0 else 1  # stages 2-4 halve the side
                blocks.append(block(channels, planes, stride, attention, preactivation))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
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
