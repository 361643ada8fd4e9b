"""Receptive fields over the traced graph, per spatial axis.

For every node the field of one output unit is described by three numbers per axis:

- size:  how many input pixels its window spans;
- jump:  how many input pixels apart neighbouring units' windows are (the effective stride);
- start: the input coordinate of the centre of the first unit's window (pixel i sits at i),
  so unit i is centred at start + i·jump and the effective padding is (size − 1)/2 − start.

A convolution or pooling window of kernel k, stride s, padding p and dilation d (k' = d·(k−1)+1)
maps a field to   size + (k'−1)·jump,   jump·s,   start + ((k'−1)/2 − p)·jump.
Where paths meet (add, mul, cat) a unit sees the union of its inputs' windows: with equal jumps
and starts that is the largest window; paths that disagree on start (misaligned) or on jump are
reported, never averaged away. Global pooling, flatten and gating by a globally pooled vector
(SE, CBAM) make a unit see the whole input: "global". An op this module does not model makes
the field "unknown" from there on, with a warning naming it.

The graph is followed edge by edge, not in module order: chaining the modules of a ResNet in
order would treat the skip path as a layer after the residual branch (1891/256 for ResNet-18's
layer4 instead of 435/32).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnlab.summary.graph import Graph, first_tensor, function_name

GLOBAL = "global"    # a unit sees the whole input along this axis
UNKNOWN = "unknown"  # not known: an op this module does not model, or paths that disagree


@dataclass(frozen=True)
class Window:
    """The field of one output unit along one axis (see the module docstring)."""

    size: float
    jump: float
    start: float


AxisField = Window | str  # a Window, GLOBAL or UNKNOWN


@dataclass(frozen=True)
class Field:
    axes: tuple[AxisField, ...]  # one per spatial axis
    misaligned: bool = False     # the paths meeting here disagree (see Fields.warnings)

    @property
    def status(self) -> str:
        if self.misaligned:
            return "misaligned"
        if any(axis == UNKNOWN for axis in self.axes):
            return "unknown"
        if all(axis == GLOBAL for axis in self.axes):
            return "global"
        return "ok" if all(isinstance(axis, Window) for axis in self.axes) else "partly global"


@dataclass
class Fields:
    by_node: dict = field(default_factory=dict)   # fx node -> Field; None: no input pixel reaches it
    explain: dict = field(default_factory=dict)   # fx node -> {"output" | "field": arithmetic}
    warnings: list[str] = field(default_factory=list)
    global_merge_noted: bool = False


@dataclass(frozen=True)
class Geometry:
    """A sliding window along one axis."""

    kernel: int
    stride: int
    pad_before: int
    pad_total: int
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1


def receptive_fields(graph: Graph, names: dict) -> Fields:
    """The field of every node of a traced graph; ``names`` maps nodes to row names (for
    warnings)."""
    spatial_axes = len(graph.input_size) - 1
    result = Fields()
    seen_input = False
    for node in graph.graph_module.graph.nodes:
        if node.op == "placeholder" and not seen_input:
            seen_input = True
            result.by_node[node] = Field((Window(1, 1, 0),) * spatial_axes)
        elif node.op in ("call_module", "call_function", "call_method"):
            _Rule(node, graph, result, names.get(node, node.name), spatial_axes).apply()
        else:
            result.by_node[node] = None
    return result


class _Rule:
    """Works out one node's field from its inputs' fields."""

    def __init__(self, node: fx.Node, graph: Graph, result: Fields, name: str, spatial_axes: int):
        self.node, self.graph, self.result, self.name, self.k = node, graph, result, name, spatial_axes
        self.values = graph.values
        self.module = graph.graph_module.get_submodule(node.target) if node.op == "call_module" else None

    def apply(self) -> None:
        sources = [n for n in self.node.all_input_nodes if self.result.by_node.get(n) is not None]
        output = self.values[self.node]
        if not sources or first_tensor(output) is None:
            field = None  # shapes, constants: no pixel of the input reaches them
        elif self._picks_from_tuple():
            field = self.result.by_node[self.node.args[0]]  # one element of a tuple result
        else:
            field = (self._window() or self._adaptive_pool() or self._along_dims()
                     or self._elementwise(sources))
        self.result.by_node[self.node] = field

    # -- convolution, pooling, padding

    def _window(self) -> Field | None:
        geometry = window_geometry(self.node, self.module, self.values, self.k)
        source = self._spatial_source()
        if geometry is None or source is None:
            return None
        return self._slide(source, geometry)

    def _adaptive_pool(self) -> Field | None:
        """Adaptive pooling is global when it outputs one unit per axis, and a plain window
        (kernel = stride = input/output) when the output size divides the input size."""
        is_adaptive = (isinstance(self.module, _ADAPTIVE_POOLS)
                       or function_name(self.node.target).startswith("adaptive_"))
        source = self._spatial_source()
        if not is_adaptive or source is None:
            return None
        in_extent = self.values[source].shape[-self.k:]
        out_extent = first_tensor(self.values[self.node]).shape[-self.k:]
        if all(n_out == 1 for n_out in out_extent):
            self._explain("field", ["one output unit per axis: global pooling, it sees the whole input"])
            return Field(tuple(UNKNOWN if axis == UNKNOWN else GLOBAL for axis in self.result.by_node[source].axes))
        if any(n_in % n_out for n_in, n_out in zip(in_extent, out_extent)):
            return self._unknown(f"adaptive pooling from {_shape(in_extent)} to {_shape(out_extent)} "
                                 "uses windows of unequal size")
        return self._slide(source, [Geometry(n_in // n_out, n_in // n_out, 0, 0)
                                    for n_in, n_out in zip(in_extent, out_extent)])

    def _slide(self, source: fx.Node, geometry: list[Geometry]) -> Field:
        """Apply a sliding window per axis (see the module docstring), with its arithmetic."""
        in_extent = self.values[source].shape[-self.k:]
        out_extent = first_tensor(self.values[self.node]).shape[-self.k:]
        axes, output_lines, field_lines = [], [], []
        for window, g, n_in, n_out in zip(self.result.by_node[source].axes, geometry, in_extent, out_extent):
            output_lines.append(_output_arithmetic(g, n_in, n_out))
            if isinstance(window, Window):
                axes.append(Window(window.size + (g.span - 1) * window.jump, window.jump * g.stride,
                                   window.start + ((g.span - 1) / 2 - g.pad_before) * window.jump))
                field_lines.append(_field_arithmetic(window, g, axes[-1]))
            else:
                axes.append(window)  # global stays global, unknown stays unknown
        self._explain("output", output_lines)
        self._explain("field", field_lines)
        return Field(tuple(axes))

    # -- ops that mix along some dimensions: reductions, softmax, linear layers

    def _along_dims(self) -> Field | None:
        dims = self._mixed_dims()
        if dims is None:
            return None
        source = self._spatial_source()
        output = first_tensor(self.values[self.node])
        if source is None or not _is_spatial(output, self.k):
            return None  # reduced away or never spatial: the generic rule decides
        value_in = self.values[source]
        spatial = {value_in.ndim - self.k + a: a for a in range(self.k)}
        mixed = {spatial[d % value_in.ndim] for d in dims if d % value_in.ndim in spatial}
        if not mixed:
            return None  # along channels only: elementwise in space
        if output.ndim != value_in.ndim:
            return self._unknown("a reduction changed the tensor's rank")
        field_in = self.result.by_node[source]
        return Field(tuple(GLOBAL if a in mixed and axis != UNKNOWN else axis
                           for a, axis in enumerate(field_in.axes)))

    def _mixed_dims(self) -> tuple[int, ...] | None:
        if isinstance(self.module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return (self.module.dim,) if self.module.dim is not None else None
        if isinstance(self.module, nn.Linear) or self.node.target is F.linear:
            return (-1,)
        if self.module is not None or function_name(self.node.target) not in _MIXING_ALONG_DIM:
            return None
        dim = self.node.kwargs.get("dim", self.node.args[1] if len(self.node.args) > 1 else None)
        if isinstance(dim, int):
            return (dim,)
        if isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
            return tuple(dim)
        return None  # no dim (reduce everything) or a tensor operand (torch.max(a, b))

    # -- elementwise ops, merges (add, mul, cat), reshapes

    def _elementwise(self, sources: list[fx.Node]) -> Field:
        """Each output unit sees the union of the windows of the input units at its position.
        An input with no spatial axes left (flattened or pooled) was seen whole: global."""
        output = first_tensor(self.values[self.node])
        fields = [self.result.by_node[s] for s in sources]
        if not _is_spatial(output, self.k):
            if any(UNKNOWN in f.axes for f in fields):
                return Field((UNKNOWN,) * self.k)
            return Field((GLOBAL,) * self.k)  # flatten, view(N, -1), linear layers
        out_extent = output.shape[-self.k:]
        axes, misaligned = [], False
        for a in range(self.k):
            windows, broadcast = [], []
            for source, f in zip(sources, fields):
                value = self.values[source]
                if not _is_spatial(value, self.k):
                    windows.append(f.axes[a])
                elif value.shape[-self.k + a] == out_extent[a]:
                    windows.append(f.axes[a])
                elif value.shape[-self.k + a] == 1:
                    broadcast.append(f.axes[a])
                elif all(axis == UNKNOWN for axis in f.axes):
                    return Field((UNKNOWN,) * self.k)  # already unknown, already reported
                else:
                    return self._unknown(f"{self._label()} changes the last {self.k} dimensions from "
                                         f"{_shape(value.shape[-self.k:])} to {_shape(out_extent)}")
            merged, disagreement = self._union(windows + broadcast, a, bool(broadcast))
            misaligned |= disagreement
            axes.append(merged)
        return Field(tuple(axes), misaligned)

    def _union(self, windows: list[AxisField], axis: int, has_broadcast: bool) -> tuple[AxisField, bool]:
        if UNKNOWN in windows:
            return UNKNOWN, False
        if GLOBAL in windows:
            if any(isinstance(w, Window) for w in windows) and not self.result.global_merge_noted:
                self.result.global_merge_noted = True  # once: everything after it is global too
                self.result.warnings.append(
                    f"{self.name}: a globally pooled input (an attention gate, say) meets a local "
                    "one: from here on every unit sees the whole input")
            return GLOBAL, False
        if has_broadcast:
            self._warn_unknown(f"a map of one unit (not globally pooled) is broadcast along "
                               f"{_axis_name(axis, self.k)}: units see different windows")
            return UNKNOWN, False
        if len(windows) == 1:
            return windows[0], False
        axis_name = _axis_name(axis, self.k)
        jumps = sorted({w.jump for w in windows})
        if len(jumps) > 1:
            self.result.warnings.append(
                f"{self.name}: paths disagree on jump along {axis_name} ({', '.join(map(_num, jumps))}): "
                "units see differently placed windows; field marked unknown from here on")
            return UNKNOWN, True
        low = min(w.start - (w.size - 1) / 2 for w in windows)
        high = max(w.start + (w.size - 1) / 2 for w in windows)
        merged = Window(high - low + 1, jumps[0], (low + high) / 2)
        starts = sorted({w.start for w in windows})
        if len(starts) > 1:
            self.result.warnings.append(
                f"{self.name}: paths are misaligned along {axis_name}: their windows are centred at "
                f"{', '.join(map(_num, starts))} (sizes {', '.join(_num(w.size) for w in windows)}); "
                f"the field shown is their union, size {_num(merged.size)} centred at {_num(merged.start)}")
            return merged, True
        return merged, False

    # -- helpers

    def _picks_from_tuple(self) -> bool:
        source = self.node.args[0] if self.node.args else None
        return (self.node.target is operator.getitem and isinstance(source, fx.Node)
                and not isinstance(self.values[source], torch.Tensor))

    def _spatial_source(self) -> fx.Node | None:
        """The input a window slides over, when it has spatial axes and a field."""
        source = self.node.args[0] if self.node.args else None
        if (isinstance(source, fx.Node) and self.result.by_node.get(source) is not None
                and _is_spatial(self.values[source], self.k)):
            return source
        return None

    def _label(self) -> str:
        return type(self.module).__name__ if self.module is not None else function_name(self.node.target)

    def _unknown(self, reason: str) -> Field:
        self._warn_unknown(reason)
        return Field((UNKNOWN,) * self.k)

    def _warn_unknown(self, reason: str) -> None:
        self.result.warnings.append(f"{self.name}: receptive field unknown from here on: {reason}")

    def _explain(self, label: str, lines: list[str]) -> None:
        if not lines:
            return
        text = lines[0] if len(set(lines)) == 1 else "; ".join(
            f"{_axis_name(a, len(lines))}: {line}" for a, line in enumerate(lines))
        self.result.explain.setdefault(self.node, {})[label] = text


_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                   nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)
_CONSTANT_PADS = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
                  nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)
# functions and tensor methods that mix values along the dimensions they are given
_MIXING_ALONG_DIM = {"mean", "sum", "prod", "amax", "amin", "max", "min", "std", "var", "norm",
                     "logsumexp", "softmax", "log_softmax", "softmin", "cumsum", "cumprod"}
_FUNCTIONAL_CONVOLUTIONS = {"conv1d", "conv2d", "conv3d"}
# positional parameters of the functional windows (torch.nn.functional's signatures)
_CONVOLUTION_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_POOL_PARAMETERS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL_PARAMETERS = ("input", "kernel_size", "stride", "padding", "ceil_mode")


def window_geometry(node: fx.Node, module, values: dict, k: int) -> list[Geometry] | None:
    """The sliding window a convolution, pooling or constant-padding node applies, per axis."""
    if isinstance(module, _CONVOLUTIONS):
        return _geometry(module.kernel_size, module.stride, module.padding, module.dilation, False, k)
    if isinstance(module, _POOLS):
        return _geometry(module.kernel_size, module.stride or module.kernel_size,
                         getattr(module, "padding", 0), getattr(module, "dilation", 1),
                         getattr(module, "ceil_mode", False), k)
    if isinstance(module, _CONSTANT_PADS):
        return _padding_geometry(module.padding, k)
    if node.op != "call_function":
        return None
    name = function_name(node.target)
    if name in _FUNCTIONAL_CONVOLUTIONS:
        bound = _bind(node, _CONVOLUTION_PARAMETERS)
        kernel = tuple(values[bound["weight"]].shape[2:])
        return _geometry(kernel, bound.get("stride", 1), bound.get("padding", 0),
                         bound.get("dilation", 1), False, k)
    if name in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"):
        bound = _bind(node, _MAX_POOL_PARAMETERS if name.startswith("max") else _AVG_POOL_PARAMETERS)
        kernel = bound["kernel_size"]
        return _geometry(kernel, bound.get("stride") or kernel, bound.get("padding", 0),
                         bound.get("dilation", 1), bound.get("ceil_mode", False), k)
    if name == "pad" and node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant") == "constant":
        return _padding_geometry(_bind(node, ("input", "pad"))["pad"], k)
    return None


def _geometry(kernel, stride, padding, dilation, ceil_mode, k) -> list[Geometry]:
    kernel, stride, dilation = (_per_axis(v, k) for v in (kernel, stride, dilation))
    if isinstance(padding, str):  # "valid" or "same" (which pads the extra pixel at the end)
        totals = [0 if padding == "valid" else d * (kk - 1) for kk, d in zip(kernel, dilation)]
        pads = [(total // 2, total) for total in totals]
    else:
        pads = [(p, 2 * p) for p in _per_axis(padding, k)]
    return [Geometry(kk, s, before, total, d, bool(ceil_mode))
            for kk, s, (before, total), d in zip(kernel, stride, pads, dilation)]


def _padding_geometry(padding, k) -> list[Geometry]:
    """Constant padding is a 1-pixel window with padding; its tuple lists the last axis first."""
    padding = _per_axis(padding, 2 * k) if isinstance(padding, int) else tuple(padding)
    pairs = [padding[2 * i: 2 * i + 2] for i in range(len(padding) // 2)][::-1]
    pairs = [(0, 0)] * (k - len(pairs)) + pairs
    return [Geometry(1, 1, before, before + after) for before, after in pairs]


def _per_axis(value, k) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * k
    value = tuple(value)
    return value * k if len(value) == 1 else value


def _bind(node: fx.Node, parameter_names) -> dict:
    bound = dict(zip(parameter_names, node.args))
    bound.update(node.kwargs)
    return bound


def _output_arithmetic(g: Geometry, n_in: int, n_out: int) -> str:
    """How the output size follows from the input size, e.g. (224 − 11 + 2·2)/4 + 1 = 55."""
    window = str(g.kernel) if g.dilation == 1 else f"{g.dilation}·({g.kernel} − 1) − 1"
    padding = "" if g.pad_total == 0 else (
        f" + 2·{g.pad_before}" if g.pad_total == 2 * g.pad_before else f" + {g.pad_total}")
    numerator = n_in - g.span + g.pad_total
    body = f"{n_in} − {window}{padding}"
    text = f"{body} + 1 = {n_out}" if g.stride == 1 else f"({body})/{g.stride} + 1 = {n_out}"
    if g.stride > 1 and numerator % g.stride:
        text += " (rounded up)" if g.ceil_mode else " (rounded down)"
    return text


def _field_arithmetic(before: Window, g: Geometry, after: Window) -> str:
    j = _num(before.jump)
    return (f"size {_num(before.size)} + ({g.span} − 1)·{j} = {_num(after.size)}, "
            f"jump {j}·{g.stride} = {_num(after.jump)}, "
            f"start {_num(before.start)} + (({g.span} − 1)/2 − {g.pad_before})·{j} = {_num(after.start)}")


def _is_spatial(value, k: int) -> bool:
    """A tensor keeps spatial axes (its last k dimensions) while it has batch and channel
    dimensions in front of them."""
    return isinstance(value, torch.Tensor) and value.ndim >= k + 2


def _axis_name(axis: int, k: int) -> str:
    return "dhw"[3 - k + axis] if k <= 3 else f"axis {axis}"


def _shape(extent) -> str:
    return "×".join(str(n) for n in extent)


def _num(x: float) -> str:
    """1.0 -> '1', 15.5 -> '15.5'."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
