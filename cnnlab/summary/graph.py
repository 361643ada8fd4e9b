"""Record what a model computes: every step of its forward pass, with the shape of every tensor.

torch.fx traces the forward pass into a graph, so branches, skip connections and concatenations
are explicit edges instead of guesses from module order. The graph then runs on an empty batch
(zero images): every operation checks and computes its output shape, none does arithmetic, and
the weights (built without initialization, see ``cnnlab.models.uninitialized``) are never read. Code that
cannot run on an empty batch, such as ``x.view(x.size(0), -1)``, runs instead on the meta
device with one image (meta tensors have a shape and no data; their first use costs about two
seconds of imports inside torch, which is why they are not the first choice). A model fx cannot
trace is recorded with forward hooks instead: its layers and shapes, but no edges.
"""

from __future__ import annotations

import copy
import operator
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from cnnlab.errors import first_line


@dataclass(eq=False)
class Step:
    """One computation of the forward pass: a call of a leaf module or of a tensor function."""

    name: str                 # unique: "layer1.0.conv1", "layer1.0.add", "layer1.0.relu:2"
    type: str                 # module class name ("Conv2d") or function name ("add")
    scope: tuple[str, ...]    # names of the enclosing container calls, outermost first
    module: nn.Module | None  # the module called, None for a function
    function: object          # the function, or the method name, called; None for a module
    args: tuple               # call arguments, with tensors in place of graph nodes
    kwargs: dict
    output: object            # the (meta) tensor, or tuple of tensors, it produced
    node: fx.Node | None      # its graph node; None when recorded with hooks
    parameters: list[nn.Parameter] = field(default_factory=list)  # attributed to this step

    @property
    def depth(self) -> int:
        """Nesting level: 1 for a direct child of the model."""
        return len(self.scope) + 1


@dataclass(eq=False)
class Container:
    """A module whose forward was traced through (Sequential, a residual block, ...)."""

    name: str
    type: str
    scope: tuple[str, ...]    # enclosing containers, outermost first
    output: object            # the tensor it returns
    node: fx.Node | None      # the graph node producing that tensor

    @property
    def depth(self) -> int:
        return len(self.scope) + 1


@dataclass
class Graph:
    """The recorded forward pass of one model on one input size."""

    rows: list[Step | Container]         # pre-order: a container comes right before its contents
    input_size: tuple[int, ...]          # (C, H, W): one image, no batch dimension
    graph_module: fx.GraphModule | None  # None when fx could not trace the model
    values: dict                         # fx node -> the value it produced (meta tensors)
    untraceable: str = ""                # why fx could not trace the model, when it could not

    @property
    def steps(self) -> list[Step]:
        return [row for row in self.rows if isinstance(row, Step)]


class StepFailed(Exception):
    """Running the model on a given input size failed at one step."""

    def __init__(self, name: str, type_: str, input_shapes: list[tuple[int, ...]], error: Exception):
        self.name, self.type, self.input_shapes, self.error = name, type_, input_shapes, error
        self.reason = first_line(error)
        super().__init__(f"{name} ({type_}): {self.reason}")


def to_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device without copying any weight (shared tensors stay
    shared, so parameters are still counted once)."""
    memo = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in memo:
            meta = torch.empty_like(tensor, device="meta")
            if isinstance(tensor, nn.Parameter):
                meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


class Recorder:
    """Traces a model once, then records its forward pass for any input size.

    The model is put in eval mode while it runs (batch norm refuses one image per channel in
    training mode) and restored after; its weights are never read or changed.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.batch = 1 if _device(model).type == "meta" else 0  # images per run
        self._trace()

    def record(self, input_size: tuple[int, ...]) -> Graph:
        """Run images of ``input_size`` (C, H, W) through the model; StepFailed if they do not fit."""
        try:
            return self._record(input_size)
        except StepFailed:
            if self.batch == 1:
                raise
            self._switch_to_meta()  # the failure may come from the empty batch itself
            return self._record(input_size)

    def fits(self, input_size: tuple[int, ...]) -> bool:
        """Whether an input of ``input_size`` gets through the model (no arithmetic)."""
        with _eval_mode(self.model):
            try:
                if self.graph_module is None:
                    self.model(self._input(input_size))
                else:
                    _ValueRecorder(self.graph_module).run(self._input(input_size))
                return True
            except Exception:  # noqa: BLE001  any failure means: this size does not fit
                return False

    def _trace(self) -> None:
        self.graph_module, self.untraceable = None, ""
        with _eval_mode(self.model):
            try:
                self.graph_module = fx.symbolic_trace(self.model)
            except Exception as error:  # noqa: BLE001  any model code may fail symbolic tracing
                reason = (str(error).strip().splitlines() or [""])[0]
                self.untraceable = f"{type(error).__name__}: {reason}"

    def _record(self, input_size) -> Graph:
        with _eval_mode(self.model):
            if self.graph_module is None:
                return _record_with_hooks(self.model, self._input(input_size), self.untraceable)
            return _record_traced(self.model, self.graph_module, self._input(input_size))

    def _switch_to_meta(self) -> None:
        self.model, self.batch = to_meta(self.model), 1
        self._trace()

    def _input(self, input_size) -> torch.Tensor:
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        return torch.empty((self.batch, *input_size), device=_device(self.model), dtype=dtype)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- fx tracing


class _ValueRecorder(fx.Interpreter):
    """Run the graph, keeping every node's value and naming the node where it fails."""

    def __init__(self, graph_module):
        super().__init__(graph_module)
        self.values = {}

    def run_node(self, node):
        try:
            value = super().run_node(node)
        except Exception as error:
            inputs = [self.values[n] for n in node.all_input_nodes]
            shapes = [tuple(v.shape[1:]) for v in inputs if isinstance(v, torch.Tensor)]
            raise StepFailed(_readable_target(node), _node_type(node, self.module), shapes, error) from error
        self.values[node] = value
        return value


def _record_traced(model: nn.Module, graph_module: fx.GraphModule, images: torch.Tensor) -> Graph:
    recorder = _ValueRecorder(graph_module)
    recorder.run(images)
    values = recorder.values
    scopes = {node: _scope_keys(node) for node in graph_module.graph.nodes}
    names = _UniqueNames()
    container_names = {}  # nn_module_stack key -> row name

    def container_name(key):
        if key not in container_names:
            container_names[key] = names.take(_call_name(key))
        return container_names[key]

    rows, opened = [], set()
    exits = _container_exits(graph_module.graph, scopes)
    for node in graph_module.graph.nodes:
        if not _is_step(node, values):
            continue
        keys = scopes[node]
        if node.op == "call_module":
            keys, own_key = keys[:-1], (keys[-1] if keys else node.target)
        for depth, key in enumerate(keys):
            if key not in opened:
                opened.add(key)
                container = model.get_submodule(_call_path(key))  # fx keeps only leaf modules' types
                exit_node = exits.get(key)
                rows.append(Container(
                    container_name(key), type(container).__name__,
                    tuple(container_name(k) for k in keys[:depth]),
                    first_tensor(values.get(exit_node)), exit_node))
        scope = tuple(container_name(k) for k in keys)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
        output = first_tensor(values[node])
        if node.op == "call_module":
            module = graph_module.get_submodule(node.target)
            step = Step(names.take(_call_name(own_key)), type(module).__name__, scope, module, None,
                        args, kwargs, output, node)
        else:
            base = function_name(node.target)
            prefix = f"{scope[-1]}." if scope else ""
            step = Step(names.take(prefix + base), base, scope, None, node.target, args, kwargs, output, node)
        rows.append(step)
    graph = Graph(rows, tuple(images.shape[1:]), graph_module, values)
    _attribute_parameters(graph.steps, lambda step: _parameters_used(step, graph_module))
    return graph


def _is_step(node: fx.Node, values) -> bool:
    """A node is a row of the summary when it computes a tensor (not a selection from a tuple,
    not a shape or a constant)."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return False
    value = values[node]
    if isinstance(value, torch.Tensor):
        source = node.args[0] if node.args else None
        picks_from_tuple = (node.target is operator.getitem and isinstance(source, fx.Node)
                            and not isinstance(values[source], torch.Tensor))
        return not picks_from_tuple
    return isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)


def _container_exits(graph: fx.Graph, scopes) -> dict:
    """For each container call, the last node inside it whose value is used outside it: the
    value the container returns."""
    exits = {}
    for node in graph.nodes:
        for key in scopes[node]:
            if any(key not in scopes[user] for user in node.users):
                exits[key] = node
    return exits


def _scope_keys(node: fx.Node) -> tuple[str, ...]:
    """The module calls a node was traced inside, outermost first (fx's nn_module_stack keys;
    a module called twice gets a distinct key per call)."""
    stack = node.meta.get("nn_module_stack") or {}
    return tuple(stack)


def _call_path(key: str) -> str:
    """'layer1.0.relu@1' (fx's key for a second call) -> 'layer1.0.relu'."""
    return re.sub(r"@\d+$", "", key)


def _call_name(key: str) -> str:
    """Row name of a module call: 'layer1.0.relu@1' -> 'layer1.0.relu:2' (its second call)."""
    match = re.fullmatch(r"(.*)@(\d+)", key)
    return f"{match[1]}:{int(match[2]) + 1}" if match else key


class _UniqueNames:
    def __init__(self):
        self.counts = {}

    def take(self, name: str) -> str:
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return name if count == 1 else f"{name}:{count}"


def function_name(target) -> str:
    """What a call_function or call_method node calls: 'add', 'cat', 'flatten', 'mean'."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", str(target)).strip("_")
    return {"iadd": "add", "imul": "mul", "isub": "sub", "truediv": "div", "itruediv": "div"}.get(name, name)


def _readable_target(node: fx.Node) -> str:
    """The row name a node gets, near enough to name it in an error before rows exist."""
    if node.op == "call_module":
        return node.target
    keys = _scope_keys(node)
    return f"{_call_name(keys[-1])}.{function_name(node.target)}" if keys else function_name(node.target)


def _node_type(node: fx.Node, graph_module) -> str:
    if node.op == "call_module":
        return type(graph_module.get_submodule(node.target)).__name__
    return function_name(node.target)


def _attribute_parameters(steps: list[Step], parameters_used) -> None:
    """Give every parameter to the first step that uses it, so shared weights count once."""
    seen = set()
    for step in steps:
        for parameter in parameters_used(step):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                step.parameters.append(parameter)


def _parameters_used(step: Step, graph_module: fx.GraphModule) -> list[nn.Parameter]:
    """A module's parameters, or the parameters a function reads directly (get_attr nodes)."""
    if step.module is not None:
        return list(step.module.parameters())
    return [graph_module.get_parameter(n.target) for n in step.node.all_input_nodes
            if n.op == "get_attr" and _is_parameter(graph_module, n.target)]


def _is_parameter(graph_module, target: str) -> bool:
    try:
        graph_module.get_parameter(target)
        return True
    except AttributeError:
        return False


# ---------------------------------------------------------------------------- hook fallback


def _record_with_hooks(model: nn.Module, images: torch.Tensor, untraceable: str) -> Graph:
    """Record leaf-module calls with forward hooks: layers, shapes and parameters, no edges."""
    names = {module: name for name, module in model.named_modules()}
    unique, open_containers, rows = _UniqueNames(), [], []
    running = {}  # the leaf module being run and its arguments, to name a failure

    def before(module, args):
        if module is model:
            return
        if _is_leaf(module):
            running.update(module=module, args=args)
            return
        rows.append(Container(unique.take(names[module]), type(module).__name__,
                              tuple(c.name for c in open_containers), None, None))
        open_containers.append(rows[-1])

    def after(module, args, output):
        if module is model:
            return
        if not _is_leaf(module):
            open_containers.pop().output = first_tensor(output)
            return
        running.clear()
        rows.append(Step(unique.take(names[module]), type(module).__name__,
                         tuple(c.name for c in open_containers), module, None, args, {},
                         first_tensor(output), None))

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        try:
            model(images)
        except Exception as error:
            if running:  # a leaf module failed
                failed = running["module"]
                name, type_, args = names[failed], type(failed).__name__, running["args"]
            elif open_containers:  # code of a container's forward failed between its modules
                name, type_, args = open_containers[-1].name, open_containers[-1].type, ()
            else:
                name, type_, args = "forward", type(model).__name__, ()
            shapes = [tuple(a.shape[1:]) for a in args if isinstance(a, torch.Tensor)]
            raise StepFailed(name, type_, shapes, error) from error
    finally:
        for handle in handles:
            handle.remove()
    graph = Graph(rows, tuple(images.shape[1:]), None, {}, untraceable)
    _attribute_parameters(graph.steps, lambda step: list(step.module.parameters()))
    return graph


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def first_tensor(value) -> torch.Tensor | None:
    """The value itself, or the first tensor of a tuple result; None if it holds no tensor."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None
