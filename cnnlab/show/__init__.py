"""``cnnlab show``: pictures of what a network sees and what it has learned.

    from cnnlab.show import load_subject, receptive_field, save_picture
    subject = load_subject("resnet18")                           # random weights, 3x224x224
    picture = receptive_field(subject, ["layer1", "layer4"], samples=16)
    save_picture(picture, "rf.png")                              # and rf.csv beside it

A subject is a trained run (its weights, transform and test split) or a model name (random
weights, or torchvision's ImageNet weights with ``weights="imagenet"``). Each view returns a
Picture: the figure and the rows of numbers it drew, written beside the figure as CSV or JSON.
Measuring lives in measure.py, drawing in draw.py.
"""

from __future__ import annotations

import csv
import inspect
import io
import itertools
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from cnnlab.errors import UsageError
from cnnlab.show import draw
from cnnlab.show.measure import (LayerTaps, UnknownLayer, centred_square_side, conv_layers, grad_cam,
                                 kernel_tiles, mosaic, predict, scaled_maps, theoretical_box, unit_gradients)

__all__ = ["Picture", "Subject", "UnknownLayer", "activations", "cam", "errors", "filters",
           "load_subject", "parse_unit", "receptive_field", "save_picture", "view_options"]

MAPS_SHOWN = 32       # feature maps drawn per layer (the first ones)
DEFAULT_SHARE = 0.95  # of the gradient mass inside the effective field
SAMPLES_SEED = 0
WEIGHTS_SEED = 0      # a model name's random weights
PASS_THROUGH = (torch.nn.Identity, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d)


@dataclass
class Subject:
    """What a view looks at: a model ready to run, how to feed it, and its images if any."""

    model: torch.nn.Module
    name: str                                 # the model's name
    description: str                          # "lenet trained on digits (run, last.pt, epoch 6)", ...
    input_size: tuple[int, int, int]
    transform: object                         # uint8 N x C x H x W -> the model's input
    classes: list[str] | None = None
    test_images: torch.Tensor | None = None   # uint8, for a trained run
    test_labels: torch.Tensor | None = None
    directory: Path = Path(".")               # where figures go by default
    autocast: Callable = nullcontext          # the run's precision, for predictions eval would make
    _taps: LayerTaps | None = field(default=None, repr=False)

    @property
    def taps(self) -> LayerTaps:
        if self._taps is None:
            self._taps = LayerTaps(self.model, self.input_size)
        return self._taps


@dataclass
class Picture:
    figure: object      # matplotlib Figure
    rows: list[dict]    # the numbers drawn
    stem: str           # default file name, e.g. "rf-layer4"


# ------------------------------------------------------------------------------ subjects


def load_subject(target, *, checkpoint: str = "last", weights: str | None = None,
                 input_size=None, model_source: str | None = None) -> Subject:
    """A run directory (trained weights) or a model name or reference (random or ImageNet weights)."""
    from cnnlab.data import BatchTransform
    from cnnlab.models import create_model, is_reference, model_spec, uninitialized

    if checkpoint not in ("best", "last"):
        raise UsageError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    path = Path(target)
    if not is_reference(str(target)) and (path.exists() or "/" in str(target)):  # Run.open says what is wrong
        if weights is not None or input_size is not None:
            raise UsageError("--weights and --input apply to a model name; a run has its own")
        from cnnlab.evaluation import load_trained

        trained = load_trained(path, checkpoint, device="cpu", model_source=model_source)
        record, dataset = trained.record, trained.test_split()
        return Subject(trained.model, record.model, f"{record.model} trained on {record.data} "
                       f"({path.name}, {checkpoint}.pt, epoch {trained.epoch})", tuple(record.input_size), trained.transform,
                       dataset.classes, dataset.test_images, dataset.test_labels, path, trained.placement.autocast)
    spec = model_spec(str(target))  # UnknownModel for a name that is neither
    size = full_input_size(spec.input_size, input_size)
    if weights is None:
        with torch.random.fork_rng():  # the same random weights, hence the same pictures, every time
            torch.manual_seed(WEIGHTS_SEED)
            model = create_model(spec.name, in_channels=size[0])
        mean, std, classes, description = [0.5] * size[0], [0.5] * size[0], None, f"{spec.name}, random weights"
    else:
        from cnnlab.pretrained import WEIGHT_SETS, load_imagenet_weights, torchvision_twin

        if weights not in WEIGHT_SETS:
            raise UsageError(f"unknown weights {weights!r}: choose {', '.join(WEIGHT_SETS)}")
        torchvision_twin(spec.name)  # a model without one fails before anything is built
        if size[0] != 3:
            raise UsageError("ImageNet weights take 3-channel images")
        with uninitialized():  # the weights are about to be replaced
            model = create_model(spec.name, in_channels=3, num_classes=1000)
        loaded = load_imagenet_weights(model, spec.name)
        (mean, std), classes, description = loaded.mean_std, loaded.categories, f"{spec.name}, ImageNet weights"
    return Subject(model.eval(), spec.name, description, size, BatchTransform(size[1:], mean, std), classes)


def full_input_size(natural, requested) -> tuple[int, int, int]:
    """A requested size (one side, HxW or CxHxW; None: the natural one) completed from the natural one."""
    if requested is None:
        return tuple(natural)
    size = (requested,) if isinstance(requested, int) else tuple(requested)
    if len(size) == 1:
        return (natural[0], size[0], size[0])
    return (natural[0], *size) if len(size) == 2 else size


def chosen_images(subject: Subject, image, count: int = 1) -> tuple[torch.Tensor, list[int | None]]:
    """uint8 images and their test-split indices: ``image`` is an index into the run's test
    split, an image file, or None (the first ``count`` test images)."""
    from cnnlab.data.folder import decode_image

    if image is None or str(image).isdigit():
        if subject.test_images is None:
            raise UsageError(f"{subject.name} is a model name, not a run: give --image FILE")
        total = len(subject.test_images)
        indices = list(range(min(count, total))) if image is None else [int(image)]
        if indices[-1] >= total:
            raise UsageError(f"--image {image} is out of range: the test split has {total} images (0-{total - 1})")
        return subject.test_images[indices], indices
    decoded = torch.tensor(decode_image(str(image), subject.input_size[1]))[None]  # DataMissing if not an image
    if subject.input_size[0] == 1:
        decoded = decoded.float().mean(1, keepdim=True).round().to(torch.uint8)
    return decoded, [None]


# ---------------------------------------------------------------------------------- views


def filters(subject: Subject, layers: list[str] | None = None, dpi: int = 150) -> Picture:
    """The kernels of a convolution (default: the first) as a grid of tiles."""
    convs = dict(conv_layers(subject.model))
    if not convs:
        raise UsageError(f"{subject.name} has no 2-D convolution")
    name = one_layer(layers, "filters") or next(iter(convs))
    if name not in convs:
        row = subject.taps.row(name)  # UnknownLayer for a name that is no layer at all
        raise UsageError(f"{row.name} is a {row.type}, not a convolution; convolutions: "
                         f"{', '.join(list(convs)[:6])}{' ...' if len(convs) > 6 else ''}")
    weight = convs[name].weight.detach()
    tiles = kernel_tiles(weight)
    grid = mosaic(tiles, columns=min(16, math.ceil(math.sqrt(len(tiles)))))
    shown = "RGB" if weight.shape[1] == 3 else ("" if weight.shape[1] == 1 else "input channel 0 of each")
    title = (f"{subject.description}\n{name}, {weight.shape[0]} kernels "
             f"{weight.shape[2]}x{weight.shape[3]}{', ' + shown if shown else ''}")
    drawn = weight if weight.shape[1] == 3 else weight[:, :1]  # the numbers the tiles show
    rows = [dict(layer=name, kernel=k, channel=c, row=r, column=col, weight=value)
            for (k, c, r, col), value in zip(itertools.product(*map(range, drawn.shape)), drawn.flatten().tolist())]
    return Picture(draw.filters_figure(grid, title, dpi), rows, f"filters-{name}")


def default_stage_layers(taps: LayerTaps) -> list[str]:
    """One layer per stage: for each spatial size the maps pass through, the last layer of
    that size at the shallowest nesting level (``layer1`` ... ``layer4`` of a ResNet), leaving
    out layers that pass maps on unchanged at the usual input."""
    finished = {}  # row name -> position of its last step: a container's output comes then
    for position, row in enumerate(taps.graph.rows):
        for name in (*row.scope, row.name):
            finished[name] = position
    chosen = {}
    for row in taps.graph.rows:
        shape = row.output.shape[1:] if row.output is not None else ()
        if len(shape) != 3 or min(shape[1:]) < 2 or isinstance(getattr(row, "module", None), PASS_THROUGH):
            continue
        best = chosen.get(tuple(shape[1:]))
        if best is None or row.depth <= best.depth:
            chosen[tuple(shape[1:])] = row
    if not chosen:
        raise UsageError(f"{type(taps.model).__name__} has no layer with a spatial output (a map) to draw")
    return [row.name for row in sorted(chosen.values(), key=lambda row: finished[row.name])]


def spatial_layer(taps: LayerTaps, name: str, view: str):
    row = taps.row(name)
    shape = taps.output_shape(row.name)
    if len(shape) != 3:
        raise UsageError(f"{view} needs a layer with a spatial output; {name} ({row.type}) outputs "
                         f"{'x'.join(map(str, shape)) or 'no tensor'}")
    return row


def activations(subject: Subject, image=None, layers: list[str] | None = None, dpi: int = 150) -> Picture:
    """Feature maps of one image at each chosen layer (default: one per stage)."""
    images, indices = chosen_images(subject, 0 if image is None and subject.test_images is not None else image)
    taps = subject.taps
    layers = layers or default_stage_layers(taps)
    for name in layers:
        spatial_layer(taps, name, "activations")
    with torch.no_grad():
        outputs = taps.outputs(subject.transform(images), layers)
    grids, rows = {}, []
    for name in layers:
        maps = outputs[name][0]
        grids[f"{name} · {maps.shape[0]} maps {maps.shape[1]}×{maps.shape[2]}"
              f"{f', first {MAPS_SHOWN} shown' if maps.shape[0] > MAPS_SHOWN else ''}"] = (
            mosaic(scaled_maps(maps[:MAPS_SHOWN]), gap=max(1, maps.shape[-1] // 16)))
        rows += [dict(layer=name, channel=c, mean=float(m.mean()), min=float(m.min()), max=float(m.max()))
                 for c, m in enumerate(maps)]
    source = f"test image {indices[0]}" if indices[0] is not None else Path(str(image)).name
    figure = draw.activations_figure(draw.as_picture(images, subject.input_size[1:])[0], grids,
                                     f"{subject.description}\nfeature maps of {source}", dpi)
    return Picture(figure, rows, f"activations-{indices[0] if indices[0] is not None else Path(str(image)).stem}")


def receptive_field(subject: Subject, layers: list[str] | None = None, unit: tuple[int, int] | None = None,
                    samples: int = 16, share: float = DEFAULT_SHARE, dpi: int = 150) -> Picture:
    """Theoretical and effective receptive field of one unit of each layer (default: the
    centre unit of the last layer with a spatial output)."""
    from cnnlab.summary import summarize

    if not 0 < share < 1:
        raise UsageError(f"the share of gradient mass must be between 0 and 1, not {share}")
    if samples < 1:
        raise UsageError("--samples must be at least 1")
    taps = subject.taps
    layers = layers or default_stage_layers(taps)[-1:]
    records = {record.name: record for record in summarize(subject.model, input_size=subject.input_size).layers}
    units = {}
    for name in layers:
        row = spatial_layer(taps, name, "rf")
        record = records[row.name]
        if record.rf_status != "ok":
            raise UsageError(f"the receptive field of {name} is {record.rf_status} (see 'cnnlab summary')")
        height, width = taps.output_shape(name)[1:]
        units[name] = (height // 2, width // 2) if unit is None else tuple(unit)
        if not (0 <= units[name][0] < height and 0 <= units[name][1] < width):
            raise UsageError(f"unit {units[name][0]},{units[name][1]} is outside {name}'s {height}x{width} map")
    inputs = _field_samples(subject, samples)
    fields = unit_gradients(taps, inputs, layers, units)
    panels, rows = [], []
    for name in layers:
        box = theoretical_box(records[name], units[name], subject.input_size[1:])
        effective = centred_square_side(fields[name], box.centre, share)
        theoretical = box.size[0]
        ratio = effective / theoretical
        caption = (f"{name}, unit {units[name][0]},{units[name][1]}\ntheoretical {theoretical}, "
                   f"effective {effective:g} ({ratio:.0%})")
        panels.append(dict(mass=fields[name], box=box, effective_size=effective, caption=caption))
        rows.append(dict(layer=name, unit_row=units[name][0], unit_column=units[name][1],
                         theoretical_size=theoretical, effective_size=effective, share=share, ratio=ratio,
                         box_top=box.top, box_left=box.left, box_bottom=box.bottom, box_right=box.right,
                         samples=len(inputs)))
    source = "test images" if subject.test_images is not None else "random inputs"
    title = (f"{subject.description}\nreceptive field (box) and effective field: |gradient| "
             f"over {len(inputs)} {source}, dashed square {share:.0%} of it")
    return Picture(draw.receptive_field_figure(panels, title, dpi), rows, f"rf-{'-'.join(layers)}")


def _field_samples(subject: Subject, samples: int) -> torch.Tensor:
    """The inputs the effective field averages over: a run's test images, else N(0, 1) noise
    in the model's normalised input space."""
    if subject.test_images is not None:
        return subject.transform(subject.test_images[:samples])
    generator = torch.Generator().manual_seed(SAMPLES_SEED)
    return torch.randn((samples, *subject.input_size), generator=generator)


def cam(subject: Subject, image=None, count: int = 8, layers: list[str] | None = None, dpi: int = 150) -> Picture:
    """Grad-CAM of the predicted class over one image (``image``) or the first ``count`` test images."""
    images, indices = chosen_images(subject, image, count)
    taps = subject.taps
    layer = one_layer(layers, "cam") or default_stage_layers(taps)[-1]
    spatial_layer(taps, layer, "cam")
    heat, logits, reached = grad_cam(taps, subject.transform(images), layer)
    probabilities = logits.softmax(1)
    rows, captions, notes = [], [], []
    for i, index in enumerate(indices):
        top = probabilities[i].topk(min(3, probabilities.shape[1]))
        predicted = int(top.indices[0])
        row = dict(image=index if index is not None else str(image), predicted=_class_name(subject, predicted),
                   probability=float(top.values[0]))
        if index is not None and subject.test_labels is not None:
            row["true"] = _class_name(subject, int(subject.test_labels[index]))
            captions.append(f"#{index} true {row['true']}, predicted {row['predicted']}")
        else:
            captions.append("\n".join(f"{_class_name(subject, int(c))} {p:.0%}" for p, c in zip(*top)))
        notes.append(_blank_cam_note(layer, bool(reached[i])) if heat[i].max() == 0 else None)
        # a blank map has no peak: argmax would name its first pixel
        peak = divmod(int(heat[i].argmax()), heat.shape[2]) if notes[-1] is None else (None, None)
        rows.append({**row, "peak_row": peak[0], "peak_column": peak[1], "note": notes[-1]})
    figure = draw.overlay_figure(draw.as_picture(images, subject.input_size[1:]), heat, captions,
                                 f"{subject.description}\nGrad-CAM of the predicted class on {layer}", dpi,
                                 notes=notes)
    stem = f"cam-{layer}" + (f"-{indices[0]}" if image is not None and indices[0] is not None else "")
    return Picture(figure, rows, stem)


def _blank_cam_note(layer: str, reached: bool) -> str:
    """Why a Grad-CAM map is all zero: the score does not depend on the layer at all (a dead
    ReLU after it, say), or every region of its maps lowers the score (the ReLU of Grad-CAM)."""
    return f"no gradient reaches {layer}" if not reached else f"no region of {layer} raises the score"


def one_layer(layers: list[str] | None, view: str) -> str | None:
    if layers and len(layers) > 1:
        raise UsageError(f"{view} draws one layer at a time; got {', '.join(layers)}")
    return layers[0] if layers else None


def parse_unit(text: str | None) -> tuple[int, int] | None:
    """'3,4' -> (3, 4): a unit's row and column in a layer's map."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise UsageError(f"a unit is ROW,COL, e.g. 3,3; got {text!r}")
    return int(parts[0]), int(parts[1])


def _class_name(subject: Subject, index: int) -> str:
    return subject.classes[index] if subject.classes else str(index)


def errors(subject: Subject, count: int = 32, dpi: int = 150) -> Picture:
    """The test images the run gets wrong (the first ``count``), with true and predicted labels."""
    if subject.test_images is None:
        raise UsageError(f"errors needs a trained run, not a model name ({subject.name})")
    with subject.autocast():  # eval's arithmetic: an image near the boundary is wrong in both or neither
        logits = predict(subject.taps, subject.transform(subject.test_images)).float()
    predicted = logits.argmax(1)
    wrong = (predicted != subject.test_labels).nonzero().flatten().tolist()
    shown = wrong[:count]
    confidence = logits.softmax(1).amax(1)
    rows = [dict(image=i, true=_class_name(subject, int(subject.test_labels[i])),
                 predicted=_class_name(subject, int(predicted[i])), probability=float(confidence[i]))
            for i in shown]
    captions = [f"#{r['image']} true {r['true']}\npredicted {r['predicted']}" for r in rows]
    title = (f"{subject.description}\n{len(wrong)} of {len(predicted)} test images wrong"
             + (f", first {len(shown)} shown" if len(shown) < len(wrong) else ""))
    if not shown:
        figure, _ = draw.grid_figure(1, dpi=dpi)
        draw.fitted_title(figure, title)
    else:
        figure = draw.overlay_figure(draw.as_picture(subject.test_images[shown], subject.input_size[1:]), None, captions, title, dpi,
                                     columns=min(8, len(shown)))
    return Picture(figure, rows, "errors")


# ---------------------------------------------------------------------------------- files


def save_picture(picture: Picture, out, numbers_format: str = "csv", dpi: int = 150) -> list[Path]:
    """Write the figure to ``out`` (png, svg or pdf by its extension) and its numbers beside
    it (same name, .csv or .json). Returns both paths."""
    from cnnlab.plots import save_figure

    out = Path(out)
    if numbers_format not in ("csv", "json"):
        raise UsageError(f"numbers are written as csv or json, not {numbers_format!r}")
    numbers = out.with_suffix(f".{numbers_format}")
    save_figure(picture.figure, out, dpi, show=False)
    numbers.write_text(_numbers_text(picture.rows, numbers_format), encoding="utf-8")
    return [out, numbers]


def _numbers_text(rows: list[dict], numbers_format: str) -> str:
    if numbers_format == "json":
        return json.dumps(rows, indent=1) + "\n"
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


VIEWS = {"filters": filters, "activations": activations, "rf": receptive_field, "cam": cam, "errors": errors}


def view_options(view: str) -> list[str]:
    """The options ``view`` takes: its function's parameters besides the subject and dpi, which
    every view takes."""
    return [name for name in inspect.signature(VIEWS[view]).parameters if name not in ("subject", "dpi")]
