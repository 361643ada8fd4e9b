"""The diagram as data: boxes, edges, folds and branches, measured on the summary's trace.

One box per layer (a Step of cnnlab.summary.graph) unless a fold stands for several:

- a repetition fold: consecutive sibling blocks with the same layers, shapes and wiring, each
  fed by the one before, become one box "Bottleneck × 35";
- a depth fold (``depth=N``): every module at nesting level N becomes one box.

Edges come from torch.fx's graph, not from module order, so a shortcut is an edge from the
block's input to its add. The branches are found from that graph too: a box with several
successors forks, and its branches end where every path from it meets again (its immediate
post-dominator: the add, the concatenation, the gate's multiplication). The nested sequence of
boxes and branch groups is what render.py lays out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from cnnlab.errors import UsageError
from cnnlab.summary.graph import Container, Step

INPUT = "input"
END = "end"  # where every path ends (not a box): the decomposition needs one sink

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
               nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm, nn.GroupNorm, nn.LayerNorm,
         nn.modules.instancenorm._InstanceNorm)
FUNCTION_KINDS = {  # what a tensor function called in forward() is, for its colour
    "add": "add", "cat": "concat", "mul": "gate", "sigmoid": "activation", "relu": "activation",
    "softmax": "activation", "tanh": "activation", "flatten": "reshape", "view": "reshape",
    "reshape": "reshape", "squeeze": "reshape", "unsqueeze": "reshape", "transpose": "reshape",
    "permute": "reshape", "mean": "pool", "amax": "pool", "max": "pool", "avg_pool2d": "pool",
    "max_pool2d": "pool", "adaptive_avg_pool2d": "pool", "dropout": "dropout",
}
FUNCTION_LABELS = {"cat": "concat", "mul": "multiply", "add": "add"}


@dataclass
class Box:
    """One box of the diagram: a layer, or a fold standing for several."""

    id: str                          # "b0", "b1", ... ("input" for the input)
    name: str                        # the summary's name: "layer1.0.conv1", "layer3.1–35", "layer1"
    kind: str                        # conv, pool, norm, activation, linear, dropout, add, concat,
                                     # gate, reshape, identity, block, input, other (its colour)
    label: str                       # "conv 3×3/1, 64", "Bottleneck × 35"
    output_shape: tuple[int, ...]    # one image
    params: int
    macs: int
    layers: list[str]                # the summary's layer names it stands for
    repeat: int = 1                  # n of "× n"
    contents: list[str] = field(default_factory=list)  # a fold: the main layers of one block


@dataclass
class Edge:
    source: str
    target: str
    shape: tuple[int, ...]           # the tensor on the edge
    changed: bool                    # the source changed the shape (the edge is labelled)


@dataclass
class Fold:
    box: str                         # the box standing for the layers
    reason: str                      # "repeat" or "depth"
    blocks: list[str]                # the modules folded ("layer3.1", ..., "layer3.35")


@dataclass
class Branches:
    """A fork into parallel paths that meet again: the Inception module's four paths into its
    concatenation, a residual block's main path and shortcut into its add."""

    fork: str                        # the box whose output every branch takes
    join: str                        # where they meet (END when they meet only at the end)
    paths: list[list]                # each a sequence (box ids and nested Branches); [] = identity


@dataclass
class Diagram:
    model: str
    input_size: tuple[int, ...]
    params: int
    macs: int
    receptive_field: tuple | None    # (h, w) at ``field_at``, the last layer with a bounded one
    field_at: str | None
    boxes: list[Box]
    edges: list[Edge]
    folds: list[Fold]
    sequence: list                   # top to bottom: box ids and Branches

    def box(self, box_id: str) -> Box:
        return next(b for b in self.boxes if b.id == box_id)

    def branch_groups(self) -> list[Branches]:
        """Every Branches, outermost first."""
        found = []

        def walk(items):
            for item in items:
                if isinstance(item, Branches):
                    found.append(item)
                    for path in item.paths:
                        walk(path)

        walk(self.sequence)
        return found

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sequence"] = _plain(self.sequence)
        data["branches"] = [dict(fork=g.fork, join=g.join, paths=_plain(g.paths)) for g in self.branch_groups()]
        return data


def _plain(items):
    if isinstance(items, Branches):
        return dict(fork=items.fork, join=items.join, paths=[_plain(p) for p in items.paths])
    if isinstance(items, list):
        return [_plain(item) for item in items]
    return items


# ---------------------------------------------------------------------------- entry point


def network_diagram(model, input_size=None, *, num_classes: int | None = None, model_args=None,
            depth: int | None = None, expand: bool = False, unfold=()) -> Diagram:
    """The diagram of ``model``: a model name, a run directory (its model, options and input)
    or a built nn.Module (with ``input_size`` as (C, H, W)).

    Repeated blocks are folded into one "× n" box unless ``expand``; ``depth`` folds every module
    at that nesting level into one box; ``unfold`` names modules shown layer by layer anyway.
    """
    from cnnlab.summary.core import summarize_with_graph

    if depth is not None and expand:
        raise UsageError("give --depth or --expand, not both")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise UsageError(f"depth must be a nesting level, 1 or more; got {depth!r}")
    if isinstance(model, (str, Path)) and _is_path(model):
        model, input_size, num_classes, model_args = _run_model(Path(model), input_size, num_classes, model_args)
    elif isinstance(model, str) and model_args:
        from cnnlab.models import model_options

        model_args = model_options(model, list(model_args)) if not isinstance(model_args, dict) else model_args
    summary, graph = summarize_with_graph(model, input_size, num_classes, model_args=model_args or None)
    deepest = max((row.depth for row in graph.rows if isinstance(row, Container)), default=0)
    if depth is not None and depth > deepest:
        raise UsageError(f"{summary.model} has modules down to depth {deepest}, not {depth}"
                         if deepest else f"{summary.model} has no modules to fold at depth {depth}")
    known = {row.name for row in graph.rows if isinstance(row, Container)}
    for name in unfold:
        if name not in known:
            raise UsageError(f"{summary.model} has no module {name!r} to unfold (see 'cnnlab summary')")
    return _Builder(summary, graph, depth, expand, set(unfold)).build()


def _is_path(target) -> bool:
    return isinstance(target, Path) or Path(target).exists() or "/" in str(target)


def _run_model(path: Path, input_size, num_classes, model_args):
    """A run directory's model name, input size, classes and model options."""
    from cnnlab.models import model_options
    from cnnlab.runs import Run

    if input_size is not None or num_classes is not None or model_args:
        raise UsageError("--input, --classes and --model-arg apply to a model name; a run has its own")
    record = Run.open(path).read_record()
    return (record.model, record.input_size, record.num_classes,
            model_options(record.model, record.options.model_args or []))


# ---------------------------------------------------------------------------- labels


def describe(step: Step) -> tuple[str, str]:
    """(kind, label) of one layer: ("conv", "conv 3×3/1, 64"), ("pool", "max pool 3×3/2")."""
    module = step.module
    if module is None:
        name = step.type
        return FUNCTION_KINDS.get(name, "other"), FUNCTION_LABELS.get(name, name)
    if isinstance(module, nn.modules.conv._ConvNd):
        label = f"conv {_window(module.kernel_size)}/{_stride(module.stride)}, {module.out_channels}"
        if module.groups > 1:
            label += " depthwise" if module.groups == module.in_channels else f", {module.groups} groups"
        return "conv", label
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        how = "max" if isinstance(module, nn.modules.pooling._MaxPoolNd) else "avg"
        return "pool", f"{how} pool {_window(module.kernel_size)}/{_stride(module.stride or module.kernel_size)}"
    if isinstance(module, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        how = "max" if isinstance(module, nn.modules.pooling._AdaptiveMaxPoolNd) else "avg"
        return "pool", f"adaptive {how} pool → {_window(module.output_size)}"
    if isinstance(module, nn.Linear):
        return "linear", f"fc {module.out_features}"
    if isinstance(module, NORMS):
        label = "batch norm" if isinstance(module, nn.modules.batchnorm._BatchNorm) else step.type
        return "norm", "LRN" if isinstance(module, nn.LocalResponseNorm) else label
    if isinstance(module, ACTIVATIONS):
        return "activation", step.type.lower()
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "dropout", f"dropout {module.p:g}"
    if isinstance(module, nn.Identity):  # a placeholder, e.g. a block built without attention
        return "identity", "identity"
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "reshape", "flatten" if isinstance(module, nn.Flatten) else "unflatten"
    return "other", step.type


def _window(size) -> str:
    sides = (size,) if isinstance(size, int) else tuple(size)
    sides = tuple("·" if s is None else s for s in sides)
    if len(sides) == 1:
        sides = sides * 2
    return "×".join(map(str, sides))


def _stride(stride) -> str:
    strides = (stride,) if isinstance(stride, int) else tuple(stride)
    return str(strides[0]) if len(set(strides)) == 1 else "×".join(map(str, strides))


def shape_text(shape) -> str:
    return "×".join(map(str, shape))


# ---------------------------------------------------------------------------- building


class _Builder:
    def __init__(self, summary, graph, depth, expand, unfold):
        self.summary, self.graph, self.depth, self.expand, self.unfold = summary, graph, depth, expand, unfold
        self.records = {record.name: record for record in summary.layers}
        self.steps = graph.steps
        self.containers = [row for row in graph.rows if isinstance(row, Container)]
        self.inside = {c.name: [s for s in self.steps if c.name in s.scope] for c in self.containers}
        self.labels = {step.name: describe(step) for step in self.steps}
        self.step_of_node = {step.node: step for step in self.steps if step.node is not None}
        self.inputs = {step.name: self._step_inputs(step) for step in self.steps}

    def build(self) -> Diagram:
        folded = self._folds()  # first container of a fold -> (reason, the containers it stands for)
        owner_of = {name: key for key, (_, names) in folded.items() for name in names}
        box_of, boxes, folds = {}, [], []
        input_box = Box(INPUT, INPUT, "input", f"input {shape_text(self.graph.input_size)}",
                        tuple(self.graph.input_size), 0, 0, [])
        boxes.append(input_box)
        for step in self.steps:
            owner = next((owner_of[name] for name in step.scope if name in owner_of), None)
            key = owner or step.name
            if key not in box_of:
                box = self._fold_box(len(boxes) - 1, folded[owner]) if owner else self._step_box(len(boxes) - 1, step)
                boxes.append(box)
                box_of[key] = box
                if owner:
                    folds.append(Fold(box.id, folded[owner][0], list(folded[owner][1])))
            box_of[step.name] = box_of[key]
        edges = self._edges(box_of, boxes)
        sequence = _decompose([b.id for b in boxes], edges)
        field_record = next((r for r in reversed(self.summary.layers)
                             if not r.is_container and r.rf_status == "ok" and all(r.rf_size)), None)
        return Diagram(self.summary.model, tuple(self.summary.input_size), self.summary.totals.params,
                       self.summary.totals.macs, field_record and tuple(field_record.rf_size),
                       field_record and field_record.name, boxes, edges, folds, sequence)

    # -- which modules fold

    def _folds(self) -> dict:
        """Container name -> (reason, the container names its box stands for); only the first
        of a folded run is a key (the others map to its box through the returned names)."""
        folded = {}
        for container in self.containers:
            if container.name in self.unfold or any(name in self.unfold for name in container.scope):
                continue
            if self.depth is not None and container.depth == self.depth:
                folded[container.name] = ("depth", [container.name])
        if not self.expand:
            for run in self._repeated_runs():
                if not any(name in folded for name in (*run[0].scope, run[0].name)):
                    folded[run[0].name] = ("repeat", [c.name for c in run])
        # a fold inside another fold is covered by the outer one
        covered = {name for _, names in folded.values() for name in names}
        return {name: fold for name, fold in folded.items()
                if not any(outer in covered for outer in self._container(name).scope)}

    def _container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def _repeated_runs(self) -> list[list[Container]]:
        """Runs of two or more consecutive sibling modules with the same signature, each fed
        by the one before."""
        siblings = {}  # parent scope -> its children rows in order
        for row in self.graph.rows:
            siblings.setdefault(row.scope, []).append(row)
        runs = []
        for rows in siblings.values():
            run = []
            for row in rows:
                if (run and isinstance(row, Container) and self.inside[row.name]
                        and self._signature(row) == self._signature(run[-1]) and self._feeds(run[-1], row)):
                    run.append(row)
                    continue
                if len(run) > 1:
                    runs.append(run)
                run = [row] if isinstance(row, Container) and self.inside[row.name] and row.name not in self.unfold else []
            if len(run) > 1:
                runs.append(run)
        return runs

    def _signature(self, container: Container):
        steps = self.inside[container.name]
        position = {step.name: i for i, step in enumerate(steps)}
        return (container.type, tuple(
            (step.type, self.labels[step.name], self.records[step.name].output_shape,
             self.records[step.name].params, tuple(position.get(name, -1) for name in self.inputs[step.name]))
            for step in steps))

    def _feeds(self, before: Container, after: Container) -> bool:
        names = {step.name for step in self.inside[before.name]}
        return any(name in names for name in self.inputs[self.inside[after.name][0].name])

    # -- boxes

    def _step_box(self, index: int, step: Step) -> Box:
        record = self.records[step.name]
        kind, label = self.labels[step.name]
        return Box(f"b{index}", step.name, kind, label, record.output_shape, record.params, record.macs,
                   [step.name])

    def _fold_box(self, index: int, fold) -> Box:
        reason, names = fold
        first, last = self.records[names[0]], self.records[names[-1]]
        steps = [step for name in names for step in self.inside[name]]
        layers = self._covered(names)
        one = [self.labels[step.name][1] for step in self.inside[names[0]]
               if self.labels[step.name][0] in ("conv", "linear", "pool", "add", "concat", "gate")]
        if reason == "repeat":
            name = _run_name(names)
            label = f"{first.type} × {len(names)}"
        else:
            name, label = first.name, f"{first.name}: {first.type}"
        return Box(f"b{index}", name, "block", label, last.output_shape, sum(self.records[s.name].params for s in steps),
                   sum(self.records[s.name].macs for s in steps), layers, len(names) if reason == "repeat" else 1, one)

    def _covered(self, names: list[str]) -> list[str]:
        """The summary's rows (containers and layers) inside the folded modules, and themselves."""
        return [record.name for record in self.summary.layers
                if record.name in names or any(self._within(record.name, name) for name in names)]

    def _within(self, row_name: str, container_name: str) -> bool:
        step = next((s for s in self.steps if s.name == row_name), None)
        if step is not None:
            return container_name in step.scope
        row = next((c for c in self.containers if c.name == row_name), None)
        return row is not None and container_name in row.scope

    # -- edges

    def _step_inputs(self, step: Step) -> list[str]:
        """Names of the steps (or INPUT) whose outputs ``step`` reads, looking through nodes
        that are not steps (a pick from a tuple, a size, a constant)."""
        if step.node is None:
            return []
        found, seen, stack = [], set(), list(step.node.all_input_nodes)
        while stack:
            node = stack.pop(0)
            if node in seen:
                continue
            seen.add(node)
            if node in self.step_of_node:
                found.append(self.step_of_node[node].name)
            elif node.op == "placeholder":
                found.append(INPUT)
            elif node.op != "get_attr":
                stack.extend(node.all_input_nodes)
        return found

    def _edges(self, box_of: dict, boxes: list[Box]) -> list[Edge]:
        box_of = {**box_of, INPUT: boxes[0]}
        pairs = []
        if self.graph.graph_module is None:  # recorded with hooks: no wiring, the layers in order
            pairs = [(a.id, b.id) for a, b in zip(boxes, boxes[1:])]
        for step in self.steps:
            for name in self.inputs[step.name]:
                pair = (box_of[name].id, box_of[step.name].id)
                if pair[0] != pair[1] and pair not in pairs:
                    pairs.append(pair)
        by_id = {box.id: box for box in boxes}
        entering = {}
        for source, target in pairs:
            entering.setdefault(target, by_id[source].output_shape)
        return [Edge(source, target, by_id[source].output_shape,
                     source != INPUT and by_id[source].output_shape != entering.get(source))
                for source, target in pairs]


def _run_name(names: list[str]) -> str:
    """'layer3.1', ..., 'layer3.35' -> 'layer3.1–35'."""
    first, last = names[0], names[-1]
    head, _, tail = last.rpartition(".")
    return f"{first}–{tail}" if head and first.startswith(head + ".") else f"{first}–{last}"


# ---------------------------------------------------------------------------- branches


def _decompose(ids: list[str], edges: list[Edge]) -> list:
    """The boxes as a sequence top to bottom, a fork's paths nested as Branches."""
    successors = {box: [] for box in [*ids, END]}
    for edge in edges:
        successors[edge.source].append(edge.target)
    for box in ids:
        if not successors[box]:
            successors[box].append(END)
    order = {box: i for i, box in enumerate([*ids, END])}  # the trace's order is topological
    after = {END: None}  # immediate post-dominator
    for box in reversed(ids):
        after[box] = _meet(successors[box], after, order)
    placed = set()
    sequence = _sequence(INPUT, END, set(ids) - {INPUT}, successors, after, order, placed)
    missing = [box for box in ids if box not in placed and box != INPUT]  # wiring it could not nest
    return [INPUT, *sequence, *missing]


def _meet(boxes, after, order):
    """The first box every path from all of ``boxes`` passes through."""
    boxes = list(boxes)
    meet = boxes[0]
    for other in boxes[1:]:
        while meet != other:
            if meet is None or other is None:
                return END
            if order[meet] < order[other]:
                meet = after[meet]
            else:
                other = after[other]
    return meet


def _sequence(start, stop, allowed, successors, after, order, placed) -> list:
    items, current = [], start
    while True:
        nexts = [box for box in successors[current] if box in allowed or box == stop]
        if not nexts:
            return items
        if len(nexts) == 1:
            if nexts[0] == stop or nexts[0] in placed:
                return items
            current = nexts[0]
            items.append(current)
            placed.add(current)
            continue
        join = _meet(nexts, after, order)
        if join != stop and (join not in allowed or join in placed):
            return items  # not nested inside this stretch: left to the fallback
        region = _reach([box for box in nexts if box != join], join, allowed, successors)
        parts = _components(region, successors, order)
        if join == stop and current == start and len(parts) == 1:
            # paths that cross without meeting before the end of this stretch: no nesting to
            # draw, so the stretch is listed in the trace's order (its edges are drawn as they are)
            listed = sorted(region - placed, key=order.get)
            placed.update(listed)
            return items + listed
        paths = [_sequence(current, join, part, successors, after, order, placed) for part in parts]
        if join in nexts:
            paths.append([])  # an identity path: the shortcut
        items.append(Branches(current, join, paths))
        if join == stop:
            return items
        current = join
        items.append(current)
        placed.add(current)


def _reach(starts, stop, allowed, successors) -> set:
    found, stack = set(), list(starts)
    while stack:
        box = stack.pop()
        if box in found or box == stop or box not in allowed:
            continue
        found.add(box)
        stack.extend(successors[box])
    return found


def _components(region: set, successors, order) -> list[set]:
    """``region`` split into parts with no edge between them, in the order the trace met them."""
    neighbours = {box: set() for box in region}
    for box in region:
        for other in successors[box]:
            if other in region:
                neighbours[box].add(other)
                neighbours[other].add(box)
    parts, seen = [], set()
    for box in sorted(region, key=order.get):
        if box in seen:
            continue
        part, stack = set(), [box]
        while stack:
            node = stack.pop()
            if node not in part:
                part.add(node)
                stack.extend(neighbours[node])
        seen |= part
        parts.append(part)
    return parts
