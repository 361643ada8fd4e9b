"""The numbers behind ``cnnlab show``'s pictures: layer outputs, kernels, effective receptive
fields and Grad-CAM maps, as tensors. Drawing them is draw.py's job.

Layers are addressed by the names ``cnnlab summary`` prints (``features.0``, ``layer4``,
``layer1.0.add``, ``inception.4e``): the model is traced once with the summary's recorder, and a
layer's output is the value of its graph node, computed by running the traced graph on real
images and stopping as soon as the wanted nodes are known (a receptive field of ``layer1``
never runs ``layer4``). A model torch.fx cannot trace falls back to forward hooks on the named
modules, removed whatever happens. The model is always put in eval mode and its mode restored.
"""

from __future__ import annotations

import difflib
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnlab.errors import CnnlabError, UsageError
from cnnlab.summary.graph import Container, Recorder, first_tensor


class UnknownLayer(CnnlabError):
    pass


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen(model: nn.Module):
    """Parameters that need no gradient while only the input's is wanted (saves the weight
    gradients' arithmetic); their flags are restored after."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


class _Collected(Exception):
    """Raised inside the graph run once every wanted node has its value."""


class _Tap(fx.Interpreter):
    def __init__(self, graph_module, wanted: dict):
        super().__init__(graph_module)
        self.wanted = wanted  # node -> layer name
        self.found = {}

    def run_node(self, node):
        value = super().run_node(node)
        if node in self.wanted:
            self.found[self.wanted[node]] = first_tensor(value)
            if len(self.found) == len(self.wanted):
                raise _Collected
        return value


class LayerTaps:
    """A model's layers by their summary names, and their outputs on real images."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        self.model = model
        self.input_size = tuple(input_size)
        recorder = Recorder(model)
        self.graph = recorder.record(self.input_size)
        self.rows = {row.name: row for row in self.graph.rows}

    @property
    def names(self) -> list[str]:
        return list(self.rows)

    def row(self, name: str):
        """The summary row called ``name``; UnknownLayer names the nearest ones."""
        if name not in self.rows:
            close = difflib.get_close_matches(name, self.names, n=4, cutoff=0.4)
            hint = f"nearest: {', '.join(close)}" if close else f"e.g. {', '.join(self.names[:4])}"
            raise UnknownLayer(f"no layer {name!r} in {type(self.model).__name__} ({hint}; "
                               f"'cnnlab summary' lists them all)")
        return self.rows[name]

    def output_shape(self, name: str) -> tuple[int, ...]:
        output = self.row(name).output
        return tuple(output.shape[1:]) if output is not None else ()

    def outputs(self, images: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Each named layer's output for ``images`` (N x C x H x W), with autograd as usual."""
        rows = [self.row(name) for name in names]
        if self.graph.graph_module is None:
            return self._hooked_outputs(images, names)
        wanted = {row.node: row.name for row in rows}
        tap = _Tap(self.graph.graph_module, wanted)
        with eval_mode(self.model):
            try:
                tap.run(images)
            except _Collected:
                pass
        return {name: tap.found[name] for name in names}

    def _hooked_outputs(self, images, names):
        found, handles = {}, []
        try:
            for name in names:
                if isinstance(self.row(name), Container) or self.row(name).module is not None:
                    module = self.model.get_submodule(name.split(":")[0])
                else:
                    raise UnknownLayer(f"{name} is an operation inside a model torch.fx cannot trace; "
                                       f"choose a module's name")
                handles.append(module.register_forward_hook(
                    lambda _m, _a, output, name=name: found.setdefault(name, first_tensor(output))))
            with eval_mode(self.model):
                self.model(images)
        finally:
            for handle in handles:
                handle.remove()
        return {name: found[name] for name in names}


# --------------------------------------------------------------------------- kernels


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def kernel_tiles(weight: torch.Tensor) -> torch.Tensor:
    """Convolution weights (out, in, kh, kw) as one tile per kernel, each scaled symmetrically
    around zero into [0, 1] (0.5 is a zero weight, 0 and 1 its largest magnitude): colour
    tiles (out, kh, kw, 3) for 3 input channels, else the first input channel (out, kh, kw)."""
    weight = weight.detach().float().cpu()
    tiles = weight.permute(0, 2, 3, 1) if weight.shape[1] == 3 else weight[:, 0]
    peak = tiles.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (tiles.dim() - 1))
    return tiles / peak / 2 + 0.5


def mosaic(tiles: torch.Tensor, columns: int | None = None, gap: int = 1, fill: float = float("nan")):
    """Tiles (n, h, w[, 3]) laid out in a grid with ``gap`` pixels of ``fill`` between them."""
    n, h, w = tiles.shape[:3]
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.full((rows * (h + gap) - gap, columns * (w + gap) - gap, *tiles.shape[3:]), fill)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return grid


def scaled_maps(maps: torch.Tensor) -> torch.Tensor:
    """Feature maps (C, h, w), each scaled to [0, 1] by its own minimum and maximum."""
    flat = maps.detach().float().flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


# ------------------------------------------------------------------------ receptive fields


@dataclass
class FieldBox:
    """A unit's theoretical receptive field on the input, clipped to the image."""

    centre: tuple[float, float]    # input coordinates (row, column) of its centre
    size: tuple[int, int]          # the field's side per axis, before clipping
    top: float
    left: float
    bottom: float                  # inclusive pixel coordinates, clipped to the image
    right: float


def theoretical_box(record, unit: tuple[int, int], image_size: tuple[int, int]) -> FieldBox:
    """The field of ``unit`` from the summary record's size, jump and start."""
    centre = tuple(start + index * jump for start, index, jump in zip(record.rf_start, unit, record.rf_jump))
    half = [(size - 1) / 2 for size in record.rf_size]
    top, bottom = max(0.0, centre[0] - half[0]), min(image_size[0] - 1.0, centre[0] + half[0])
    left, right = max(0.0, centre[1] - half[1]), min(image_size[1] - 1.0, centre[1] + half[1])
    return FieldBox(centre, tuple(record.rf_size), top, left, bottom, right)


def unit_gradients(taps: LayerTaps, images: torch.Tensor, names: list[str], units: dict) -> dict:
    """For each layer, the gradient of its unit (summed over channels) with respect to the
    input, as |gradient| summed over input channels and averaged over ``images``: the effective
    receptive field of Luo et al. (2016). One forward pass serves every layer."""
    images = images.detach().clone().requires_grad_(True)
    fields = {}
    with torch.enable_grad(), frozen(taps.model):
        outputs = taps.outputs(images, names)
        for position, name in enumerate(names):
            row, col = units[name]
            unit = outputs[name][:, :, row, col].sum()  # images are independent in eval mode
            (gradient,) = torch.autograd.grad(unit, images, retain_graph=position < len(names) - 1)
            fields[name] = gradient.abs().sum(1).mean(0)
    return fields


def centred_square_side(mass: torch.Tensor, centre: tuple[float, float], share: float) -> float:
    """The side of the smallest square centred on ``centre`` holding ``share`` of ``mass``
    (h x w, non-negative); squares run past the image border where they have to."""
    h, w = mass.shape
    rows = (torch.arange(h, dtype=torch.float64) - centre[0]).abs().view(-1, 1)
    cols = (torch.arange(w, dtype=torch.float64) - centre[1]).abs().view(1, -1)
    distance = torch.maximum(rows, cols).flatten()  # Chebyshev: the half-side that includes a pixel
    order = distance.argsort()
    cumulative = mass.double().flatten()[order].cumsum(0)
    total = cumulative[-1]
    if total <= 0:
        return float("nan")  # the unit does not depend on the input at all
    index = int(torch.searchsorted(cumulative, share * total).clamp_max(len(order) - 1))
    return float(2 * distance[order[index]] + 1)


# ------------------------------------------------------------------------------ Grad-CAM


class GradCam(NamedTuple):
    maps: torch.Tensor        # N x H x W in [0, 1]; all zero where nothing raises the score
    logits: torch.Tensor      # N x K
    reached: torch.Tensor     # N booleans: some gradient of the score reaches the layer's maps


def grad_cam(taps: LayerTaps, images: torch.Tensor, layer: str, classes: torch.Tensor | None = None) -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) on ``layer`` for each image: the layer's maps weighted by
    the spatial mean of the class score's gradient, summed over channels, ReLU, upsampled to
    the input and scaled to [0, 1]. ``classes`` defaults to the predicted ones."""
    images = images.detach()
    with torch.enable_grad():  # the maps need a gradient: the weights keep requires_grad here
        layer_name = taps.row(layer).name
        outputs = taps.outputs(images, [layer_name, _last(taps)])
        maps, logits = outputs[layer_name], outputs[_last(taps)]
        if maps is None or maps.dim() != 4:
            raise UsageError(f"cam needs a layer with feature maps; {layer} outputs "
                             f"{tuple(maps.shape[1:]) if maps is not None else 'nothing'}")
        chosen = logits.argmax(1) if classes is None else classes
        score = logits.gather(1, chosen.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, maps)
    weights = gradient.mean((2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return GradCam(cam / peak, logits.detach(), gradient.flatten(1).ne(0).any(1))


def _last(taps: LayerTaps) -> str:
    """The row whose output is the model's: the last step of the recorded pass."""
    return taps.graph.steps[-1].name


def predict(taps: LayerTaps, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of every image, in batches."""
    with torch.no_grad(), eval_mode(taps.model):
        return torch.cat([taps.model(batch) for batch in images.split(batch_size)])
