"""The summary's records, built from one trace of the model and a run without arithmetic
(graph.py): one LayerRecord per layer or container, the Totals, and their Explanation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from torch import nn

from cnnlab.errors import InputSizeMismatch, InputTooSmall, UsageError
from cnnlab.models import create_model, model_spec, uninitialized
from cnnlab.summary.counts import count_macs, count_parameters
from cnnlab.summary.graph import Container, Recorder, StepFailed
from cnnlab.summary.receptive import Window, receptive_fields

LARGEST_SIDE_TRIED = 8192  # the search for the smallest input that fits stops here


@dataclass
class Explanation:
    """The arithmetic behind one layer's numbers, one field per quantity (None: nothing to say),
    e.g. output "(224 − 11 + 2·2)/4 + 1 = 55", params "11·11·3·64 + 64 = 23,296"."""

    output: str | None = None       # the output size from the input size
    params: str | None = None
    macs: str | None = None
    field: str | None = None        # the receptive field from the input's

    def lines(self) -> list[str]:
        """Labelled lines, in the order a reader follows: output, params, MACs, field."""
        labels = (("output", self.output), ("params", self.params), ("MACs", self.macs), ("field", self.field))
        return [f"{label}: {text}" for label, text in labels if text]


@dataclass
class LayerRecord:
    """One row of a summary: a layer, or a container standing for the layers inside it."""

    name: str                       # "features.0", "layer1.0.add", "layer1.0.relu:2" (2nd call)
    type: str                       # "Conv2d", "add", "Sequential"
    depth: int                      # 1 for a direct child of the model
    is_container: bool              # its numbers add up the layers inside it
    output_shape: tuple[int, ...]   # one image: (C, H, W), or (features,)
    params: int                     # parameters first used here (shared weights count once)
    trainable_params: int
    macs: int                       # multiply-accumulates for one image
    rf_size: tuple                  # receptive field per spatial axis (h, w); None where global/unknown
    rf_jump: tuple                  # input pixels between neighbouring units (effective stride)
    rf_start: tuple                 # input coordinate of the first unit's centre
    rf_status: str                  # ok | global | partly global | misaligned | unavailable | constant
    explain: Explanation = field(default_factory=Explanation)  # the arithmetic behind the numbers


@dataclass
class Totals:
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int                       # one image
    param_bytes: int
    buffer_bytes: int               # batch-norm running statistics and other buffers
    activation_bytes: int           # every layer's output for one image


@dataclass
class ModelSummary:
    model: str
    input_size: tuple[int, ...]     # (C, H, W)
    layers: list[LayerRecord]       # pre-order: a container comes right before its layers
    totals: Totals
    warnings: list[str]
    spatial_axes: tuple[str, ...]   # ("h", "w")

    def rows(self, depth: int | None = None, headers: bool = False) -> list[LayerRecord]:
        """The rows shown at nesting level ``depth`` (None: every layer). A container at that
        depth stands for the layers inside it, so the rows' numbers add up to the totals;
        ``headers`` adds the shallower containers, whose contents are shown, as headings."""
        return shown_rows(self.layers, depth, headers)


def shown_rows(layers: list, depth: int | None, headers: bool) -> list:
    """The rows of ``layers`` (records with ``depth`` and ``is_container``) shown at nesting
    level ``depth``: see ModelSummary.rows."""
    def shown(row):
        if not row.is_container:
            return depth is None or row.depth <= depth
        if row.depth == depth:
            return True  # stands for its contents
        return headers and (depth is None or row.depth < depth)
    return [row for row in layers if shown(row)]


def summarize(model_or_name, input_size=None, num_classes: int | None = None,
              in_channels: int | None = None, model_args: dict | None = None) -> ModelSummary:
    """Summarize a registered model (by name, built without initializing its weights) or a model
    instance (its weights are neither read nor copied).

    ``input_size`` is (C, H, W); for a model name also (H, W) or one side, and by default the
    model's natural input; ``model_args`` are a model name's options (see ``model_options``).
    Raises InputTooSmall or InputSizeMismatch, naming the layer where the input stops fitting
    and an input size that works.
    """
    return summarize_with_graph(model_or_name, input_size, num_classes, in_channels, model_args)[0]


def summarize_with_graph(model_or_name, input_size=None, num_classes: int | None = None,
                         in_channels: int | None = None, model_args: dict | None = None):
    """The summary and the recorded forward pass it was measured on (its edges, for a diagram)."""
    model, name, input_size, natural = prepare_model(model_or_name, input_size, num_classes, in_channels,
                                                model_args)
    recorder = Recorder(model)
    try:
        graph = recorder.record(input_size)
    except StepFailed as failure:
        raise _misfit(recorder, name, input_size, natural, failure) from None
    names = {step.node: step.name for step in graph.steps if step.node is not None}
    fields = receptive_fields(graph, names) if graph.graph_module is not None else None
    layers = _records(graph, fields)
    warnings = list(fields.warnings) if fields else [
        f"torch.fx cannot trace {name} ({graph.untraceable}): its rows come from forward hooks "
        "(one per module call), and the receptive-field columns RF, Jump and Start, which need "
        "the graph, are left blank"]
    totals = _totals(recorder.model, layers, graph.steps, warnings)
    axes = ("d", "h", "w")[3 - (len(input_size) - 1):]
    return ModelSummary(name, input_size, layers, totals, warnings, axes), graph


MAX_INPUT_SIDE = 1 << 16  # past this, torch's own size arithmetic overflows (a stride of 10^11 does)


def parse_input_size(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224); '224x224' -> (224, 224); '224' -> (224,)."""
    parts = re.split(r"\s*[x×,]\s*", text.strip().lower())
    if not 1 <= len(parts) <= 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise UsageError(f"input size must be CxHxW, HxW or one side, e.g. 3x224x224, 64x64 or 32; "
                         f"got {text!r}")
    size = tuple(int(part) for part in parts)
    if max(size) > MAX_INPUT_SIDE:
        raise UsageError(f"input size {text!r} is too large: at most {MAX_INPUT_SIDE:,} per side or channels")
    return size


def prepare_model(model_or_name, input_size, num_classes, in_channels, model_args):
    """The model to trace, its name, the full (C, H, W) input and its natural input."""
    if isinstance(model_or_name, nn.Module):
        if num_classes is not None or in_channels is not None or model_args:
            raise UsageError("num_classes, in_channels and model_args apply to a model name, not to a built model")
        if input_size is None or len(_as_size(input_size)) != 3:
            raise UsageError("a built model needs its input size as (C, H, W)")
        return model_or_name, type(model_or_name).__name__, _as_size(input_size), None
    spec = model_spec(model_or_name)
    size = _as_size(spec.input_size if input_size is None else input_size)
    if len(size) < len(spec.input_size):  # (H, W) or one side: the model's channels
        sides = size * (len(spec.input_size) - 1) if len(size) == 1 else size
        size = (in_channels or spec.input_size[0], *sides)
    elif input_size is None and in_channels is not None:
        size = (in_channels, *size[1:])
    elif in_channels is not None and in_channels != size[0]:
        raise UsageError(f"in_channels={in_channels} disagrees with the input size {_shape(size)}")
    with uninitialized():
        model = create_model(model_or_name, in_channels=size[0], num_classes=num_classes, **(model_args or {}))
    return model, model_or_name, size, (size[0], *spec.input_size[1:])


def _as_size(input_size) -> tuple[int, ...]:
    size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    if not 1 <= len(size) <= 3 or not all(isinstance(n, int) and n > 0 for n in size):
        raise UsageError(f"input size must be positive integers (C, H, W), (H, W) or one side; got {input_size!r}")
    return size


def _misfit(recorder, name, input_size, natural, failure) -> Exception:
    """Explain in one line why ``input_size`` does not get through the model, with a size that
    does: the smallest one that fits when the input was too small (every spatial side raised to
    at least some s, found by cheap meta runs), else the model's natural input."""
    channels, *sides = input_size

    def widened(side):
        return (channels, *(max(n, side) for n in sides))

    where = f"{failure.name} ({failure.type})"
    smallest = _smallest_fitting_side(lambda side: recorder.fits(widened(side)), min(sides))
    if smallest is not None:
        received = f" receives a {_shape(failure.input_shapes[0])} map" if failure.input_shapes else " fails"
        return InputTooSmall(f"input {_shape(input_size)} is too small for {name}: {where}{received}; "
                             f"the smallest input that works is {_shape(widened(smallest))}")
    received = f" gets a {_shape(failure.input_shapes[0])} input and" if failure.input_shapes else ""
    message = f"input {_shape(input_size)} does not fit {name}: {where}{received} fails ({failure.reason})"
    if natural is not None and tuple(natural) != tuple(input_size) and recorder.fits(natural):
        message += f"; it works at its natural input {_shape(natural)}"
    return InputSizeMismatch(message)


def _smallest_fitting_side(fits, failing_side: int) -> int | None:
    """The smallest side above ``failing_side`` that fits, assuming every larger one fits too
    (true of the shrinking by convolutions and pooling); None when none up to the limit does."""
    low, high = failing_side, max(2 * failing_side, 2)
    while not fits(high):
        if high >= LARGEST_SIDE_TRIED:
            return None
        low, high = high, min(2 * high, LARGEST_SIDE_TRIED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _records(graph, fields) -> list[LayerRecord]:
    """One record per row of the graph; a container adds up the layers inside it."""
    records, by_name = [], {}
    k = len(graph.input_size) - 1
    for row in graph.rows:
        if fields is None or row.node is None:
            size, jump, start, status = (None,) * k, (None,) * k, (None,) * k, "unavailable"
        else:
            size, jump, start, status = _field_columns(fields.by_node.get(row.node), k)
        output_shape = tuple(row.output.shape[1:]) if row.output is not None else ()
        if isinstance(row, Container):
            record = LayerRecord(row.name, row.type, row.depth, True, output_shape, 0, 0, 0,
                                 size, jump, start, status)
        else:
            params, trainable, params_text = count_parameters(row)
            macs, macs_text = count_macs(row)
            geometry = fields.explain.get(row.node, {}) if fields else {}
            explanation = Explanation(geometry.get("output"), params_text or None, macs_text or None,
                                      geometry.get("field"))
            record = LayerRecord(row.name, row.type, row.depth, False, output_shape, params,
                                 trainable, macs, size, jump, start, status, explanation)
            for container in row.scope:
                by_name[container].params += params
                by_name[container].trainable_params += trainable
                by_name[container].macs += macs
        by_name[record.name] = record
        records.append(record)
    return records


def _field_columns(field, k):
    """Per-axis size, jump and start (None where global or unknown) and a status word."""
    if field is None:  # computed from constants alone, e.g. a learned class token
        return (None,) * k, (None,) * k, (None,) * k, "constant"
    windows = [axis if isinstance(axis, Window) else None for axis in field.axes]
    status = {"unknown": "unavailable"}.get(field.status, field.status)
    return (tuple(_number(w.size) if w else None for w in windows),
            tuple(_number(w.jump) if w else None for w in windows),
            tuple(_number(w.start) if w else None for w in windows), status)


def _totals(model, layers, steps, warnings) -> Totals:
    """Totals over the whole model; parameters the forward pass never uses get a warning."""
    parameters = list({id(p): p for p in model.parameters()}.values())
    buffers = list({id(b): b for b in model.buffers()}.values())
    params = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    used = {id(p) for step in steps for p in step.parameters}
    unused = [(name, p) for name, p in model.named_parameters() if id(p) not in used]
    if unused:
        owners = sorted({name.rsplit(".", 1)[0] for name, _ in unused})
        warnings.append(f"{sum(p.numel() for _, p in unused):,} parameters are never used by the "
                        f"forward pass (in {', '.join(owners[:5])}{', ...' if len(owners) > 5 else ''})")
    return Totals(
        params=params, trainable_params=trainable, non_trainable_params=params - trainable,
        macs=sum(layer.macs for layer in layers if not layer.is_container),
        param_bytes=sum(p.numel() * p.element_size() for p in parameters),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers),
        activation_bytes=sum(math.prod(s.output.shape[1:]) * s.output.element_size()
                             for s in steps if s.output is not None))


def _number(x: float):
    return int(x) if float(x).is_integer() else x


def _shape(size) -> str:
    return "×".join(str(n) for n in size)
