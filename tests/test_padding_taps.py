"""Convolutions that skip the taps which only read padding compute what PyTorch's nn.Conv2d
computes, forward and backward (cnnlab.padding_taps)."""

import copy
import itertools

import pytest
import torch
from torch import nn

from cnnlab.models import create_model
from cnnlab.padding_taps import PaddingTapsSkipped, skip_padding_taps, used_taps


def outputs_and_grads(conv: nn.Module, images: torch.Tensor):
    images = images.clone().requires_grad_()
    out = conv(images)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out, images.grad, conv.weight.grad, conv.bias.grad


def test_the_documented_cases():
    """A 3x3 kernel, padding 1: over a 1x1 map only its centre reads the input (a 1x1
    convolution without padding); over a 2x2 map with stride 2 its last two rows and columns
    (a 2x2 one); over a 2x2 map with stride 1 every tap reads the input somewhere."""
    assert used_taps(1, 3, 1, 1, 1) == (1, 1, 0)
    assert used_taps(2, 3, 2, 1, 1) == (1, 2, 0)
    assert used_taps(2, 3, 1, 1, 1) is None
    assert used_taps(8, 7, 2, 3, 1) is None


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_every_small_convolution_matches_pytorchs_forward_and_backward(layout):
    """Maps of 1 to 4 pixels a side (and non-square), kernels 1 to 5, strides 1 to 3, paddings 0
    to 3, dilations 1 and 2, in float64: the output and the gradients of the input, the weight
    and the bias are nn.Conv2d's, and the weight's gradient keeps the weight's layout."""
    trimmed = 0
    for (height, width), kernel, stride, padding, dilation in itertools.product(
            [(1, 1), (2, 2), (3, 3), (4, 4), (1, 3), (2, 4)], [1, 2, 3, 4, 5], [1, 2, 3], [0, 1, 2, 3], [1, 2]):
        if min(height, width) + 2 * padding < dilation * (kernel - 1) + 1:
            continue  # nn.Conv2d refuses it too
        torch.manual_seed(0)
        reference = nn.Conv2d(3, 4, kernel, stride, padding, dilation).double().to(memory_format=layout)
        ours = skip_padding_taps(copy.deepcopy(reference))
        images = torch.randn(2, 3, height, width, dtype=torch.float64).to(memory_format=layout)
        for mine, theirs in zip(outputs_and_grads(ours, images), outputs_and_grads(reference, images)):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
        assert ours.weight.grad.stride() == reference.weight.stride()
        trimmed += any(used_taps(size, kernel, stride, padding, dilation) for size in (height, width))
    assert trimmed >= 100  # the comparison went through the skipping path, not only nn.Conv2d's


def test_resnet18_at_32px_learns_as_without_it():
    """ResNet-18 at 32 px ends on a 1x1 map: its logits and every parameter's gradient are the
    unswitched network's (float64), the skipped taps' gradients zero in both, and the
    parameters (names, shapes, layouts) the same."""
    torch.manual_seed(0)
    reference = create_model("resnet18", in_channels=1, num_classes=10, width=0.5).double()
    reference = reference.to(memory_format=torch.channels_last)
    ours = skip_padding_taps(copy.deepcopy(reference))
    assert sum(isinstance(m, PaddingTapsSkipped) for m in ours.modules()) == 20
    images = torch.randn(4, 1, 32, 32, dtype=torch.float64).to(memory_format=torch.channels_last)
    for model in (reference, ours):
        torch.nn.functional.cross_entropy(model(images), torch.arange(4)).backward()
    torch.testing.assert_close(ours(images), reference(images), rtol=1e-12, atol=1e-12)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    last = ours.layer4[-1].branch[3].weight  # its last 3x3 convolution, over the 1x1 map
    assert last.shape[-2:] == (3, 3) and torch.count_nonzero(last.grad[:, :, 0]) == 0
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters()):
        assert mine.stride() == theirs.stride() and mine.grad.stride() == theirs.grad.stride(), name
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12, msg=name)
