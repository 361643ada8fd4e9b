"""What one training step costs: FLOPs forward and backward, and the memory a batch needs.

    from cnnlab.summary import training_cost
    cost = training_cost("resnet18", input_size=96, batch_size=256, optimizer="sgd", momentum=0.9)
    cost.per_image.train_flops       # forward + backward FLOPs of one image
    cost.memory.peak                 # bytes at batch 256

Measured on the summary's recording of the forward pass (graph.py), from shapes alone:

- FLOPs are 2 x multiply-accumulates (MACs, counts.py) of convolutions, linear layers and matrix
  products, the convention of ``torch.utils.flop_counter.FlopCounterMode``. Backward: each such
  layer computes its weight gradient (the MACs again) and, when its input needs a gradient, its
  input gradient (the MACs again); the first layer, fed the images, needs none. Batch norm,
  pooling, activations, additions and the optimiser's update are left out (one operation per
  value, not per weight).
- ``activations`` are the tensors autograd keeps for the backward pass, each storage once: a
  convolution or linear layer keeps its input, a ReLU, sigmoid or tanh its output, other
  activations and normalisations their input, max pooling its input and int64 indices, dropout
  its mask. In-place operations and views share the storage they came from (read off the
  recorded tensors themselves); a concatenation is a new storage. A layer is charged with each
  storage it is the first to keep, so the layers add up to the total.
- Under autocast (``amp`` bf16 or fp16) activations are 16-bit and autograd also keeps the
  16-bit copy autocast makes of every convolution's and linear layer's weight.
- ``peak`` adds the weights (parameters and buffers), their gradients, the optimiser's state
  (SGD none, SGD with momentum one copy of the weights, Adam and AdamW two) and the largest
  transient of a step: the gradients of one layer's output and input, alive together while
  that layer's backward runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_type_hints

import torch
from torch import nn

from cnnlab.config import TrainConfig, choices
from cnnlab.devices import AMP_DTYPES
from cnnlab.errors import UsageError
from cnnlab.summary.core import shown_rows, summarize_with_graph
from cnnlab.summary.counts import count_macs, weight_of
from cnnlab.summary.graph import Container, Step, function_name

OPTIMIZERS = choices(get_type_hints(TrainConfig)["optimizer"])  # as `cnnlab train` takes them
AMP_MODES = tuple(AMP_DTYPES)  # off, bf16, fp16
HALF_BYTES = 2  # bf16 and fp16 activations under autocast

# one line: what the figures count (the module docstring says it at length)
CONVENTION = "Counted: FLOPs = 2 x MACs of convs, linears, matmuls, fwd + bwd; not norm/pool/act/add"


@dataclass
class LayerCost:
    """One row: a layer, or a container standing for the layers inside it."""

    name: str
    type: str
    depth: int
    is_container: bool
    forward_flops: int              # one image
    backward_flops: int             # one image
    saved_bytes: int                # what autograd keeps for this layer's backward, at the batch size


@dataclass
class Flops:
    forward_flops: int
    backward_flops: int
    train_flops: int                # forward + backward


@dataclass
class Memory:
    """Bytes one training step holds at a batch size."""

    batch_size: int
    weights: int                    # parameters and buffers
    gradients: int
    optimizer_state: int
    activations: int                # kept for the backward pass
    transient: int                  # the largest pair of a layer's output and input gradients
    peak: int                       # the sum of the above


@dataclass
class TrainingCost:
    model: str
    input_size: tuple[int, ...]     # (C, H, W)
    batch_size: int
    optimizer: str
    momentum: float
    amp: str
    layers: list[LayerCost]         # pre-order, as in the summary
    per_image: Flops
    per_batch: Flops
    convention: str = CONVENTION
    warnings: list[str] = field(default_factory=list)
    # what memory_at scales: activations = saved_per_image x batch + saved_fixed (batch norm's
    # per-channel statistics, autocast's weight copies)
    saved_per_image: int = 0
    saved_fixed: int = 0
    transient_per_image: int = 0
    param_bytes: int = 0
    buffer_bytes: int = 0
    trainable_bytes: int = 0

    def rows(self, depth: int | None = None, headers: bool = False) -> list[LayerCost]:
        return shown_rows(self.layers, depth, headers)

    @property
    def memory(self) -> Memory:
        """The memory of one step at ``batch_size``."""
        return self.memory_at(self.batch_size)

    def memory_at(self, batch_size: int) -> Memory:
        """The memory of one step at another batch size (the layers' figures stay at ``batch_size``)."""
        return _memory(self, batch_size)


def training_cost(model_or_name, input_size=None, batch_size: int = 1, optimizer: str = "sgd",
                  momentum: float = 0.0, amp: str = "off", num_classes: int | None = None,
                  in_channels: int | None = None, model_args: dict | None = None,
                  device: str = "cpu") -> TrainingCost:
    """FLOPs per image and per batch, and memory at ``batch_size``, of one training step of a
    registered model (by name) or a model instance, with ``optimizer`` (sgd, adam or adamw;
    SGD keeps a momentum buffer when ``momentum`` > 0) and ``amp`` (off, bf16, fp16: activations
    in 16 bits). ``device`` ("cpu" or "cuda") decides dropout's mask: a byte per value on CUDA,
    a float on the CPU."""
    check_training_options(batch_size, optimizer, momentum, amp)
    summary, graph = summarize_with_graph(model_or_name, input_size, num_classes, in_channels, model_args)
    steps = graph.steps
    activation_bytes = HALF_BYTES if amp != "off" else None
    kept = _Storages()
    costs = {}
    for step in steps:
        forward = 2 * count_macs(step)[0]
        per_image, fixed = _saved(step, kept, activation_bytes, torch.device(device).type)
        costs[step.name] = (forward, _backward_flops(step, forward), per_image, fixed)
    layers, by_name = [], {}
    for row, record in zip(graph.rows, summary.layers):
        if isinstance(row, Container):
            layer = LayerCost(record.name, record.type, record.depth, True, 0, 0, 0)
            by_name[record.name] = layer
        else:
            forward, backward, per_image, fixed = costs[row.name]
            layer = LayerCost(record.name, record.type, record.depth, False, forward, backward,
                              per_image * batch_size + fixed)
            for container in row.scope:
                total = by_name[container]
                total.forward_flops += forward
                total.backward_flops += backward
                total.saved_bytes += layer.saved_bytes
        layers.append(layer)
    forward = sum(c[0] for c in costs.values())
    backward = sum(c[1] for c in costs.values())
    per_image = Flops(forward, backward, forward + backward)
    totals = summary.totals
    return TrainingCost(
        summary.model, summary.input_size, batch_size, optimizer, momentum, amp, layers, per_image,
        Flops(forward * batch_size, backward * batch_size, (forward + backward) * batch_size),
        warnings=kept.guesses + _untraced_warning(graph),
        saved_per_image=sum(c[2] for c in costs.values()), saved_fixed=sum(c[3] for c in costs.values()),
        transient_per_image=max((_gradient_pair(step, activation_bytes) for step in steps), default=0),
        param_bytes=totals.param_bytes, buffer_bytes=totals.buffer_bytes,
        trainable_bytes=_trainable_bytes(steps))


def _untraced_warning(graph) -> list[str]:
    if graph.graph_module is not None:
        return []
    return ["torch.fx cannot trace this model: only its modules are counted, not the functions called "
            "between them (products, concatenations), so FLOPs and activations may be low"]


def check_training_options(batch_size, optimizer, momentum, amp) -> None:
    """One line for a value the cost cannot be computed with."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"--batch-size must be a whole number of at least 1, not {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")
    if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
        raise UsageError(f"--momentum must be between 0 and 1, not {momentum!r}")
    if amp not in AMP_MODES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")


def optimizer_copies(optimizer: str, momentum: float) -> int:
    """Copies of the trainable weights the optimiser keeps: SGD 0 (1 with momentum), Adam(W) 2."""
    if optimizer == "sgd":
        return 1 if momentum > 0 else 0
    return 2


def _memory(cost: TrainingCost, batch_size: int) -> Memory:
    weights = cost.param_bytes + cost.buffer_bytes
    gradients = cost.trainable_bytes
    state = optimizer_copies(cost.optimizer, cost.momentum) * cost.trainable_bytes
    activations = cost.saved_per_image * batch_size + cost.saved_fixed
    transient = cost.transient_per_image * batch_size
    return Memory(batch_size, weights, gradients, state, activations, transient,
                  weights + gradients + state + activations + transient)


def _trainable_bytes(steps: list[Step]) -> int:
    return sum(p.numel() * p.element_size() for step in steps for p in step.parameters if p.requires_grad)


# ---------------------------------------------------------------------------- FLOPs


def _backward_flops(step: Step, forward: int) -> int:
    """A weighted layer: its weight gradient (when trainable) and its input gradient (when the
    input needs one), each as many FLOPs as the forward; a product of two activations: one
    gradient per operand that needs one."""
    if not forward:
        return 0
    weight = weight_of(step)
    if weight is not None:
        return forward * (int(weight.requires_grad) + int(_needs_grad(step.args[0])))
    if isinstance(step.module, nn.MultiheadAttention):
        return 2 * forward  # every projection and product has a trainable or grad-needing operand
    operands = [a for a in step.args[:2] if isinstance(a, torch.Tensor)]
    return forward * sum(_needs_grad(a) for a in operands)


def _needs_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


# ---------------------------------------------------------------------------- saved tensors


class _Storages:
    """The storages kept so far, each once: a view or an in-place result is its base's storage
    (the recorded tensors show which). Dropout is recorded in eval mode, where it returns its
    input; in training it returns a new tensor, which ``renew`` stands for."""

    def __init__(self):
        self.seen = set()
        self.renewed = {}           # id of a recorded storage -> the key of the newer one in training
        self.guesses = []           # warnings for layers whose saved tensors are guessed

    def take(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s storage is newly kept."""
        key = self._key(tensor)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def renew(self, tensor: torch.Tensor, step_name: str) -> None:
        """From here on ``tensor`` stands for a new storage (a dropout's output)."""
        self.renewed[id(_root(tensor))] = step_name

    def _key(self, tensor):
        root = id(_root(tensor))
        return self.renewed.get(root, root)


def _root(tensor: torch.Tensor) -> torch.Tensor:
    while tensor._base is not None:
        tensor = tensor._base
    return tensor


def _per_image_bytes(tensor: torch.Tensor, element_bytes: int | None = None) -> int:
    root = _root(tensor)
    size = element_bytes if element_bytes is not None and root.is_floating_point() else root.element_size()
    return math.prod(root.shape[1:]) * size


_KEEPS_OUTPUT = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax)
_KEEPS_INPUT = (nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish,
                nn.Softplus, nn.ELU, nn.PReLU, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_KEEPS_INPUT_AND_INDICES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                            nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ADAPTIVE_AVERAGES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_KEEPS_NOTHING = (nn.Flatten, nn.Unflatten, nn.Identity)
# functions and methods, by name: views, additions, reductions without a choice, concatenations
_FUNCTIONS_KEEPING_NOTHING = {
    "add", "sub", "neg", "cat", "concat", "stack", "pad", "flatten", "view", "reshape", "squeeze", "unsqueeze",
    "permute", "transpose", "contiguous", "getitem", "chunk", "split", "mean", "sum", "expand", "clone",
    "size", "float", "to", "type_as"}
_FUNCTIONS_KEEPING_OUTPUT = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax", "exp",
                             "sqrt"}
# (functional convolutions and linear layers are recognised by their weight, as modules are)
_FUNCTIONS_KEEPING_INPUT = {"gelu", "silu", "hardswish", "leaky_relu", "elu", "avg_pool2d", "batch_norm",
                            "layer_norm", "group_norm", "pow", "log"}


def _saved(step: Step, kept: _Storages, element_bytes: int | None, device_type: str) -> tuple[int, int]:
    """Bytes this step newly makes autograd keep: per image, and fixed (independent of the batch)."""
    output = step.output
    if not _needs_grad(output):
        return 0, 0  # nothing downstream of it needs a gradient through it
    module, args = step.module, [a for a in step.args if isinstance(a, torch.Tensor)]
    first = args[0] if args else None
    per_image = fixed = 0

    def keep(tensor):
        nonlocal per_image
        if tensor is not None and kept.take(tensor):
            per_image += _per_image_bytes(tensor, element_bytes)

    weight = weight_of(step)
    if weight is not None:
        if weight.requires_grad:
            keep(first)
        if element_bytes is not None:  # autocast keeps its 16-bit copy of the weight
            fixed += weight.numel() * element_bytes
    elif module is not None:
        if isinstance(module, _KEEPS_OUTPUT):
            keep(output)
        elif isinstance(module, _KEEPS_INPUT):
            keep(first)
        elif isinstance(module, _KEEPS_INPUT_AND_INDICES):
            keep(first)
            per_image += math.prod(output.shape[1:]) * 8  # int64 indices, one per output value
        elif isinstance(module, _ADAPTIVE_AVERAGES):
            if any(side != 1 for side in output.shape[2:]):  # pooling to one value is a mean: keeps nothing
                keep(first)
        elif isinstance(module, _BATCH_NORMS):
            keep(first)
            fixed += 2 * module.num_features * 4  # the batch's mean and inverse std, in float32
        elif isinstance(module, DROPOUTS):
            if module.p > 0:
                kept.renew(output, step.name)
                per_image += _dropout_mask_bytes(module, output, device_type, element_bytes)
        elif isinstance(module, nn.LocalResponseNorm):
            keep(first)
            per_image += _local_response_norm_bytes(module, first, element_bytes)
        elif not isinstance(module, _KEEPS_NOTHING):
            kept.guesses.append(f"{step.name} ({step.type}): what it keeps for backward is guessed as its input")
            keep(first)
    else:
        indices = _function_saved(step, args, output, keep, kept)  # before the +=: keep adds to per_image
        per_image += indices
    return per_image, fixed


def _function_saved(step: Step, args, output, keep, kept) -> int:
    """A function or method call: what it keeps, by name (extra bytes not from ``keep``)."""
    name = function_name(step.function)
    if name in _FUNCTIONS_KEEPING_NOTHING:
        return 0
    if name in _FUNCTIONS_KEEPING_OUTPUT:
        keep(output)
    elif name in _FUNCTIONS_KEEPING_INPUT:
        keep(args[0] if args else None)
    elif name in ("mul", "div", "matmul", "mm", "bmm"):
        # each operand is kept for the other's gradient (a division keeps both for the divisor's)
        for operand, other in ((args[0], args[1]), (args[1], args[0])) if len(args) == 2 else ():
            if _needs_grad(other) or (name == "div" and _needs_grad(args[1])):
                keep(operand)
    elif name in ("amax", "amin"):
        keep(args[0])
        keep(output)
    elif name in ("max", "min") and len(step.args) > 1:  # along a dimension: int64 indices
        return math.prod(output.shape[1:]) * 8
    else:
        kept.guesses.append(f"{step.name} ({name}): what it keeps for backward is guessed as its inputs")
        for arg in args:
            keep(arg)
    return 0


def _dropout_mask_bytes(module, output, device_type: str, element_bytes: int | None) -> int:
    """Dropout keeps a mask: on CUDA one byte per value (a fused kernel), on the CPU one value
    of the activations' type; feature dropout (Dropout1d/2d/3d) one per channel."""
    per_channel = isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d))
    values = output.shape[1] if per_channel else math.prod(output.shape[1:])
    if device_type == "cuda" and not per_channel:
        return values
    return values * (element_bytes or output.element_size())


def _local_response_norm_bytes(module: nn.LocalResponseNorm, first, element_bytes) -> int:
    """Besides its input, F.local_response_norm keeps the zero-padded squares it averages over
    (size - 1 more channels), the denominator's base and the denominator."""
    channels, *sides = first.shape[1:]
    value_bytes = element_bytes or first.element_size()
    return (channels + module.size - 1 + 2 * channels) * math.prod(sides) * value_bytes


def _gradient_pair(step: Step, element_bytes: int | None) -> int:
    """Per image: the gradients of a step's output and of its first input (where it needs
    one), alive together while the step's backward runs."""
    if not isinstance(step.output, torch.Tensor):
        return 0
    first = step.args[0] if step.args else None
    tensors = [step.output, *([first] if _needs_grad(first) else [])]
    return sum(math.prod(t.shape[1:]) * (element_bytes or t.element_size()) for t in tensors)
