"""Convolutions over maps so small that some of their kernel's taps only ever read padding.

At the zoo's CPU-practical sizes the ImageNet-shaped networks end on tiny maps: ResNet-18 at
32 px runs its last stage's 3x3 convolutions (padding 1) over a 1x1 map, where 8 of a kernel's
9 taps multiply padding zeros at every output position. oneDNN computes all nine, forward and
backward: those three layers' backward passes took 4.2 ms of ResNet-18's ~21 ms training step
(width 1/2, bf16, two CPU cores), and as much of CBAM-ResNet-18's. Such a layer is the same sum
over fewer taps: the weight's used slice, with the padding reduced by as much. The skipped
terms are exact zeros, so only the order of floating-point additions can differ; the weight's
gradient over the skipped taps is zero, as it was, and the parameters (their shapes, layouts
and checkpoints) are the model's own. ``skip_padding_taps`` switches the convolutions of the
model a run trains (its evaluation between epochs included); a model that `cnnlab eval`,
`export`, `summary` or `show` loads is never switched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def used_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int, int] | None:
    """For one dimension of a convolution: the first and last tap that read the input (not
    padding) at some output position, and the padding that makes a convolution over just those
    taps read the same positions; None where every tap reads the input somewhere, or where no
    symmetrically padded convolution over fewer taps has the same output size."""
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1

    def reads_input(tap: int) -> bool:  # output position p reads input p * stride + offset
        offset = tap * dilation - padding
        first = max(0, -(offset // stride))  # the first position that reads at or after the input's start
        return first < outputs and first * stride + offset < size

    used = [tap for tap in range(kernel) if reads_input(tap)]
    if not used or (used[0] == 0 and used[-1] == kernel - 1):
        return None
    first, last = used[0], used[-1]
    trimmed_padding = padding - first * dilation  # the first used tap reads where tap 0 read before
    trimmed_outputs = (size + 2 * trimmed_padding - dilation * (last - first) - 1) // stride + 1
    if trimmed_padding < 0 or trimmed_outputs != outputs:
        return None
    return first, last, trimmed_padding


class UsedTaps(torch.autograd.Function):
    """The weight's used taps, for the convolution; backward, its gradient over the whole weight
    (zero elsewhere) laid out as the weight is. Plain slicing's backward builds a contiguous
    zero gradient, which autograd then copies into a channels-last weight's layout: for ResNet-18's
    last layers that cost more than the taps saved."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: slice, columns: slice) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.taps = (rows, columns)
        return weight[:, :, rows, columns].clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, = ctx.saved_tensors
        whole = torch.zeros_like(weight)  # the weight's strides: channels-last stays channels-last
        whole[:, :, ctx.taps[0], ctx.taps[1]] = grad
        return whole, None, None


class PaddingTapsSkipped(nn.Conv2d):
    """nn.Conv2d that computes only the taps which read the input, where its input is small
    enough for some not to (``used_taps``); any other input exactly as nn.Conv2d."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(input)
        trims = [used_taps(size, kernel, stride, padding, dilation) for size, kernel, stride, padding, dilation
                 in zip(input.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)]
        if trims == [None, None]:
            return super().forward(input)
        (row0, row1, row_padding), (column0, column1, column_padding) = (
            trim or (0, kernel - 1, padding) for trim, kernel, padding in zip(trims, self.kernel_size, self.padding))
        weight = UsedTaps.apply(self.weight, slice(row0, row1 + 1), slice(column0, column1 + 1))
        return F.conv2d(input, weight, self.bias, self.stride, (row_padding, column_padding), self.dilation,
                        self.groups)


def skip_padding_taps(model: nn.Module) -> nn.Module:
    """``model`` with each of its plain nn.Conv2d layers computing as PaddingTapsSkipped (the
    same modules and parameters: only their class changes); returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = PaddingTapsSkipped
    return model
