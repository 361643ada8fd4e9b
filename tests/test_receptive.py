"""Receptive fields: against hand-derived values, and against a gradient measurement.

The measurement is independent of cnnlab.summary: it runs the model's own forward code on a
narrow copy (every convolution averages its input channels and applies an averaging kernel of
the same geometry, batch norm is the identity, max pooling becomes average pooling), so every
weight is positive and a pixel influences an output unit exactly when it lies in the unit's
receptive field. A field does not depend on channel widths, so one channel suffices. float64
because the far tails of a deep net's gradient underflow float32.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlab
from cnnlab.summary import summarize


def row(summary, name):
    return next(r for r in summary.layers if r.name == name)


def last_conv(summary, container):
    return [r for r in summary.layers if r.type == "Conv2d" and r.name.startswith(container + ".")][-1]


# -------------------------------------------------------------------------- hand-derived values

# VGG16: each 3x3 convolution adds 2 jumps, each 2x2/2 pool adds 1 jump and doubles it:
# 1 + 2·2·1 = 5, pool 6 (jump 2), + 2·2·2 = 14, pool 16 (4), + 3·2·4 = 40, pool 44 (8),
# + 3·2·8 = 92, pool 100 (16), + 3·2·16 = 196 = conv5_3, pool5 212 (32); every pool moves the
# first centre by jump/2: 0.5 + 1 + 2 + 4 + 8 = 15.5, so the effective padding is 105.5 − 15.5 = 90.
@pytest.mark.parametrize("name", ["vgg16", "torchvision:vgg16"])
def test_vgg16_matches_the_reference_fields(name):
    summary = summarize(name)
    pool5 = row(summary, "features.30" if name.startswith("torchvision") else "features")
    assert last_conv(summary, "features").rf_size == (196, 196)
    assert (pool5.rf_size, pool5.rf_jump, pool5.rf_start) == ((212, 212), (32, 32), (15.5, 15.5))
    assert (212 - 1) / 2 - pool5.rf_start[0] == 90  # effective padding


# ResNet-18: stem 7/2 -> 7, max pool 3/2 -> 11 (jump 4); layer1 adds 4·2·4 = 32 -> 43; each
# later stage adds 2 old jumps for its strided conv, then 3·2 new jumps: 99, 211, 435 (jump 32).
# Every window is centred (padding = (k−1)/2), so the start stays 0 and the padding is 217.
# Chaining the modules in order (skip paths after the branch) would give 1891 / 256 instead.
@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet18"])
def test_resnet18_layer4_is_435_not_the_module_order_1891(name):
    layer4 = row(summarize(name), "layer4")
    assert (layer4.rf_size, layer4.rf_jump, layer4.rf_start) == ((435, 435), (32, 32), (0, 0))


def test_lenet_and_alexnet_match_hand_derived_fields():
    # LeNet: conv 5 pad 2 -> 5; pool 2/2 -> 6, jump 2, start 0.5; conv 5 -> 6 + 4·2 = 14,
    # start 0.5 + 2·2 = 4.5; pool 2/2 -> 16, jump 4, start 5.5
    features = row(summarize("lenet"), "features")
    assert (features.rf_size, features.rf_jump, features.rf_start) == ((16, 16), (4, 4), (5.5, 5.5))
    # torchvision's AlexNet: conv 11/4 pad 2 -> 11, start 5 − 2 = 3; pool 3/2 -> 19, jump 8,
    # start 7; conv 5 pad 2 -> 51; pool -> 67, jump 16, start 15; 3 convs 3 pad 1 -> 163;
    # pool -> 195, jump 32, start 31
    for name in ("alexnet_tv", "torchvision:alexnet"):
        pool5 = [r for r in summarize(name).layers if r.type == "MaxPool2d"][-1]
        assert (pool5.rf_size, pool5.rf_jump, pool5.rf_start) == ((195, 195), (32, 32), (31, 31))
    # the paper's (stem unpadded): the same sizes and jumps, every start 2 pixels later
    pool5 = [r for r in summarize("alexnet").layers if r.type == "MaxPool2d"][-1]
    assert (pool5.rf_size, pool5.rf_jump, pool5.rf_start) == ((195, 195), (32, 32), (33, 33))


def test_flatten_and_global_pooling_are_global():
    summary = summarize("resnet18")
    statuses = {r.type: r.rf_status for r in summary.layers if not r.is_container}
    assert statuses["AdaptiveAvgPool2d"] == statuses["Linear"] == "global"
    assert row(summary, "head").rf_size == (None, None)


def test_squeeze_excitation_gating_makes_the_field_global():
    summary = summarize("se_resnet18")
    block = row(summary, "layer1.0")
    assert block.rf_status == "global"  # every unit is scaled by a mean over the whole map
    assert row(summary, "stem").rf_status == "ok"
    assert [w for w in summary.warnings if "globally pooled" in w] == [summary.warnings[0]]


def test_functional_layers_count_like_modules():
    class Functional(nn.Module):  # the conv of features.0 and a max pool, written with F
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(8, 3, 5, 5))

        def forward(self, x):
            x = F.conv2d(x, self.weight, stride=2, padding=2)
            return F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)

    conv, pool = summarize(Functional(), input_size=(3, 32, 32)).rows()
    # conv 5/2 pad 2: size 5, jump 2, start 2 − 2 = 0; pool 3/2 pad 1: 5 + 2·2 = 9, jump 4, start 0
    assert (conv.params, conv.macs, conv.rf_size, conv.rf_start) == (600, 16 * 16 * 8 * 75, (5, 5), (0, 0))
    # ceil mode: (16 − 3 + 2·1)/2 + 1 = 8.5, rounded up to 9
    assert (pool.output_shape, pool.rf_size, pool.rf_jump, pool.rf_start) == ((8, 9, 9), (9, 9), (4, 4), (0, 0))
    assert "(16 − 3 + 2·1)/2 + 1 = 9 (rounded up)" in pool.explain.output


# ------------------------------------------------------------------------ misaligned branches


class TwoBranches(nn.Module):
    """Adds a centred 3x3 window [i−1, i+1] to one shifted right, [i, i+2]: misaligned."""

    def __init__(self, shifted=True):
        super().__init__()
        self.centred = nn.Conv2d(1, 1, 3, padding=1)
        self.shifted = nn.Sequential(nn.ZeroPad2d((0, 2, 0, 2)) if shifted else nn.ZeroPad2d(1),
                                     nn.Conv2d(1, 1, 3))

    def forward(self, x):
        return self.centred(x) + self.shifted(x)


class TwoJumps(nn.Module):
    """Same output size, different jumps: 2x2/2 on the image, 1x1/4 on a padded image."""

    def __init__(self, side=16):
        super().__init__()
        self.fine = nn.Conv2d(1, 1, 2, stride=2)
        self.coarse = nn.Sequential(nn.ZeroPad2d((0, side, 0, side)), nn.Conv2d(1, 1, 1, stride=4))

    def forward(self, x):
        return self.fine(x) + self.coarse(x)


def test_misaligned_branches_are_reported_with_their_union():
    summary = summarize(TwoBranches(), input_size=(1, 16, 16))
    add = row(summary, "add")
    assert add.rf_status == "misaligned"
    assert (add.rf_size, add.rf_start) == ((4, 4), (0.5, 0.5))  # union [i−1, i+2]
    assert any("misaligned" in w and "add" in w for w in summary.warnings)


def test_aligned_branches_give_the_largest_field_without_warning():
    summary = summarize(TwoBranches(shifted=False), input_size=(1, 16, 16))
    add = row(summary, "add")
    assert (add.rf_size, add.rf_start, add.rf_status) == ((3, 3), (0, 0), "ok")
    assert summary.warnings == []


def test_branches_with_different_jumps_are_reported_and_marked_unavailable():
    summary = summarize(TwoJumps(), input_size=(1, 16, 16))
    add = row(summary, "add")
    assert add.rf_status == "misaligned" and add.rf_size == (None, None)
    assert any("jump" in w for w in summary.warnings)


# ---------------------------------------------------------------------------- gradient probe


class MeanConv(nn.Module):
    """A convolution's geometry on one channel: the mean of the input channels, then an
    averaging kernel (all weights positive)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation

    def forward(self, x):
        kernel = torch.full((1, 1, *self.kernel_size), 1 / math.prod(self.kernel_size), dtype=x.dtype)
        return F.conv2d(x.mean(1, keepdim=True), kernel, None, self.stride, self.padding, self.dilation)


def narrow_copy(name: str) -> nn.Module:
    """The model built on the meta device with every weighted layer replaced by a weightless
    one of the same geometry; fails loudly if a layer with weights is left and gets run."""
    with torch.device("meta"):
        model = cnnlab.create_model(name)
    for qualified_name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            replacement = MeanConv(module)
        elif isinstance(module, nn.BatchNorm2d):
            replacement = nn.Identity()
        elif isinstance(module, nn.MaxPool2d):
            assert module.dilation in (1, (1, 1))
            replacement = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
        else:
            continue
        parent, _, child = qualified_name.rpartition(".")
        setattr(model.get_submodule(parent), child, replacement)
    return model.eval()


class _Reached(Exception):
    pass


def influence_regions(model: nn.Module, target: str, input_size, units):
    """For each output unit (h, w) of module ``target``: the first and last row and column of
    input pixels whose gradient is non-zero."""
    x = torch.ones(1, *input_size, dtype=torch.float64, requires_grad=True)

    def stop(module, args, output):
        raise _Reached(output)

    handle = model.get_submodule(target).register_forward_hook(stop)
    try:
        model(x)
        raise AssertionError(f"{target} was never called")
    except _Reached as reached:
        output = reached.args[0]
    finally:
        handle.remove()
    regions = []
    for h, w in units:
        (grad,) = torch.autograd.grad(output[0, :, h, w].sum(), x, retain_graph=True)
        influence = grad[0].sum(0) > 0
        rows = influence.any(1).nonzero().flatten()
        cols = influence.any(0).nonzero().flatten()
        regions.append(((rows.min().item(), rows.max().item()), (cols.min().item(), cols.max().item())))
    return regions, tuple(output.shape[2:])


def computed_region(record, axis: int, unit: int, extent: int):
    """Unit ``unit``'s window by the summary's size, jump and start, clipped to the image."""
    if record.rf_status == "global":
        return 0, extent - 1
    centre = record.rf_start[axis] + unit * record.rf_jump[axis]
    half = (record.rf_size[axis] - 1) / 2
    return max(0, math.ceil(centre - half)), min(extent - 1, math.floor(centre + half))


# model, module probed, input (C, H, W): large enough that the middle unit's window is not clipped
PROBES = [
    ("lenet", "features", (1, 28, 28)),
    ("alexnet", "features", (3, 227, 259)),           # sides that every stride divides exactly
    ("alexnet_tv", "features", (3, 256, 288)),
    ("vgg16", "features", (3, 256, 288)),
    ("googlenet", "inception.5b", (3, 768, 800)),     # 5x5 branches: 715
    ("googlenet_tv", "inception.5b", (3, 448, 480)),  # torchvision's 3x3 variant: 395
    ("resnet18", "layer4", (3, 512, 544)),
    ("resnet50", "layer4", (3, 512, 544)),
    ("densenet121", "features", (3, 2112, 2144)),     # 2071
    ("se_resnet18", "layer1", (3, 64, 72)),           # gated by a global mean: whole image
]


@pytest.mark.slow
@pytest.mark.parametrize("name, target, input_size", PROBES, ids=[p[0] for p in PROBES])
def test_gradient_probe_matches_the_computed_field(name, target, input_size):
    record = row(summarize(name, input_size=input_size), target)
    out_h, out_w = record.output_shape[1:]
    # first row / last column, the middle, last row / first column: clipped on every side
    units = [(0, out_w - 1), (out_h // 2, out_w // 2), (out_h - 1, 0)]
    measured, shape = influence_regions(narrow_copy(name), target, input_size, units)
    assert shape == (out_h, out_w)
    extent_h, extent_w = input_size[1:]
    expected = [(computed_region(record, 0, h, extent_h), computed_region(record, 1, w, extent_w))
                for h, w in units]
    assert measured == expected
    middle = measured[1]
    if record.rf_status == "ok":  # the middle window lies inside the image: its size is exact
        assert (middle[0][1] - middle[0][0] + 1, middle[1][1] - middle[1][0] + 1) == record.rf_size


def test_gradient_probe_confirms_the_union_of_misaligned_branches():
    model = TwoBranches()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1.0)
    model = model.double()
    record = row(summarize(TwoBranches(), input_size=(1, 16, 16)), "add")
    units = [(0, 15), (8, 8), (15, 0)]

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    measured, _ = influence_regions(Wrapper(), "inner", (1, 16, 16), units)
    assert measured == [(computed_region(record, 0, h, 16), computed_region(record, 1, w, 16))
                        for h, w in units]
