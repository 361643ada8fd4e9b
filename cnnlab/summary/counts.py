"""Parameters and multiply-accumulates (MACs) of each step of the forward pass.

A MAC is one weight multiplied by one input value and added to a sum. Only convolutions, linear
layers and matrix products count: per output value, the number of inputs its weights touch.
Biases, batch norm, activations, pooling and additions are left out — they cost one operation
per activation, not per weight — which is the convention behind torchvision's published
"GFLOPS" (they are MACs): with it vgg16 has 15.47 G, resnet50 4.089 G, densenet121 2.834 G.
Every count is for one image (the batch dimension, which may be empty, is left out).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from cnnlab.summary.graph import Step

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_MATRIX_PRODUCTS = {torch.matmul, operator.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm"}


def count_macs(step: Step) -> tuple[int, str]:
    """MACs of one step and the arithmetic behind them ('' when it has none)."""
    output = step.output
    if output is None:
        return 0, ""
    weight = weight_of(step)
    if weight is not None and isinstance(step.module, _TRANSPOSED):
        inputs = _per_image(step.args[0])
        per_input = math.prod(weight.shape[1:])  # each input value feeds (C_out/groups)·kernel outputs
        return inputs * per_input, f"{inputs}·{per_input} = {inputs * per_input:,}"
    if weight is not None:
        per_output = math.prod(weight.shape[1:])  # (C_in/groups)·kernel for a convolution
        macs = _per_image(output) * per_output
        factors = [*output.shape[2:], output.shape[1], *weight.shape[2:], weight.shape[1]]
        if output.ndim == 2:  # linear on a vector: outputs · inputs
            factors = [output.shape[1], weight.shape[1]]
        return macs, f"{'·'.join(map(str, factors))} = {macs:,}"
    if isinstance(step.module, nn.MultiheadAttention):
        bound = dict(zip(("query", "key"), step.args)) | step.kwargs
        return _attention_macs(step.module, bound["query"], bound["key"])
    if step.function in _MATRIX_PRODUCTS:
        a = step.args[0]
        macs = _per_image(output) * a.shape[-1]
        return macs, f"{_per_image(output)}·{a.shape[-1]} = {macs:,}"
    return 0, ""


def _per_image(tensor: torch.Tensor) -> int:
    return math.prod(tensor.shape[1:])


def _attention_macs(attention: nn.MultiheadAttention, query, key) -> tuple[int, str]:
    """Projections of queries, keys, values and output, plus scores and their weighted sum."""
    sequence_axis = 1 if attention.batch_first else 0
    queries, keys = query.shape[sequence_axis], key.shape[sequence_axis]
    width = attention.embed_dim
    projections = width * (queries * width + keys * attention.kdim + keys * attention.vdim + queries * width)
    mixing = 2 * queries * keys * width
    return projections + mixing, (f"projections {projections:,} + attention "
                                  f"2·{queries}·{keys}·{width} = {projections + mixing:,}")


def weight_of(step: Step) -> torch.Tensor | None:
    """The weight of a convolution or linear layer, module or function."""
    if isinstance(step.module, (*_CONVOLUTIONS, *_TRANSPOSED, nn.Linear)):
        return step.module.weight
    name = getattr(step.function, "__name__", "")
    if name in ("conv1d", "conv2d", "conv3d", "linear") and len(step.args) > 1:
        return step.args[1] if isinstance(step.args[1], torch.Tensor) else step.kwargs.get("weight")
    return None


def count_parameters(step: Step) -> tuple[int, int, str]:
    """Parameters first used by this step (all, trainable) and the arithmetic behind them."""
    total = sum(p.numel() for p in step.parameters)
    trainable = sum(p.numel() for p in step.parameters if p.requires_grad)
    module = step.module
    if not total:
        return 0, 0, ""
    if isinstance(module, (*_CONVOLUTIONS, nn.Linear)) and any(p is module.weight for p in step.parameters):
        weight = module.weight  # (C_out, C_in/groups, kernel...) or (out, in)
        factors = [*weight.shape[2:], weight.shape[1], weight.shape[0]]
        bias = f" + {module.bias.shape[0]}" if module.bias is not None else ""
        return total, trainable, f"{'·'.join(map(str, factors))}{bias} = {total:,}"
    if isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
        return total, trainable, f"2·{module.weight.numel()} = {total:,} (scale and shift)"
    return total, trainable, f"{total:,}"
