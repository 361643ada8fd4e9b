"""Evaluate a trained run (or a checkpoint file) on a test split.

    result = cnnlab.evaluate("runs/lenet-digits-...")          # the run's own test split
    result = cnnlab.evaluate("runs/x/best.pt", data="mnist")    # another compatible data set

Computes the test loss, top-1 and top-5 accuracy, per-class precision, recall and accuracy,
and the confusion matrix, and writes them beside the checkpoint (into the run):

    eval.csv        one row per class plus a first row "all": class, support, loss,
                    accuracy, top5_accuracy, precision, recall. A class's accuracy is the
                    share of its images classified correctly (so it equals its recall); the
                    "all" row holds the overall loss and accuracies and the macro-averaged
                    precision and recall
    confusion.csv   images counted by true class (rows) and predicted class (columns)
    confusion.png   the same as a picture, with plot=True

Evaluating on another data set than the run's writes eval-<data>.csv and so on instead, so
the run's own evaluation is never overwritten. Checkpoints load with weights_only=True.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import BatchTransform, batches, load_dataset, permute_pixels
from cnnlab.devices import Placement
from cnnlab.errors import UnknownDataset, UsageError
from cnnlab.models import create_model, model_options, rebuild_reference, recorded_model
from cnnlab.runs import Checkpoint, Run, RunRecord, atomic_write_bytes, atomic_write_text, slugify

EVAL_COLUMNS = ["class", "support", "loss", "accuracy", "top5_accuracy", "precision", "recall"]


@dataclass
class EvalResult:
    """What ``evaluate`` measured; ``per_class`` rows follow EVAL_COLUMNS."""

    checkpoint: Path
    epoch: int
    data: str
    images: int
    loss: float
    top1: float
    top5: float
    classes: list[str]
    confusion: torch.Tensor  # classes x classes, int64: rows true, columns predicted
    per_class: list[dict]
    files: list[Path] = field(default_factory=list)


@dataclass
class Trained:
    """A trained model from a run or a checkpoint file, on its device, ready to predict; what
    eval, show and the experiments read a run through."""

    model: nn.Module
    record: RunRecord               # the run's config.json, as the checkpoint carries it
    placement: Placement
    transform: BatchTransform       # uint8 images -> the model's input, as in training
    checkpoint: Path
    epoch: int

    def test_split(self, data: str | None = None, data_dir=None):
        """The run's test split (or another data set's, with the same channels and classes)."""
        channels, height, _ = self.record.input_size
        dataset = load_dataset(data or self.record.data, data_dir or self.record.options.data_dir,
                               image_size=height, device=self.placement.device)
        dataset = permute_pixels(dataset, self.record.options.permute_pixels)  # as the run was trained
        if (dataset.channels, dataset.num_classes) != (channels, self.record.num_classes):
            raise UnknownDataset(f"{dataset.name} ({dataset.channels} channel(s), {dataset.num_classes} classes) "
                                 f"does not fit {self.record.model} trained on {self.record.data} "
                                 f"({channels} channel(s), {self.record.num_classes} classes)")
        return dataset


def load_trained(run_or_checkpoint, checkpoint: str = "last", device: str = "auto",
                 model_source: str | None = None) -> Trained:
    """The model of a run directory (its ``checkpoint``: last or best) or of a .pt file, with its
    weights, placed as it was trained (fp16 checkpoints evaluate in fp32, which runs anywhere).
    A checkpoint that belongs to another run than the directory it is in is refused. A user's
    network is rebuilt from its recorded file (``model_source``: see rebuild_reference)."""
    if checkpoint not in ("last", "best"):
        raise UsageError(f"checkpoint must be 'last' or 'best', not {checkpoint!r}")
    path = Path(run_or_checkpoint)
    if path.is_file():
        checkpoint_path, saved = path, Checkpoint.read(path)
    else:
        run = Run.open(path)
        checkpoint_path, saved = run.path / f"{checkpoint}.pt", run.checkpoint(checkpoint)
    record = saved.record
    options = record.options
    placement = Placement.choose(device, "off" if options.amp == "fp16" else options.amp, options.channels_last)
    channels, height, width = record.input_size
    model_name = recorded_model(rebuild_reference(record.model, record.model_source, checkpoint_path.parent,
                                                  model_source), saved.model)
    model = create_model(model_name, in_channels=channels, num_classes=record.num_classes,
                         **model_options(model_name, options.model_args or []))
    saved.load_weights(model, checkpoint_path)
    return Trained(placement.place(model).eval(), record, placement,
                   BatchTransform((height, width), record.mean, record.std, device=placement.device,
                                  memory_format=placement.memory_format),
                   checkpoint_path, saved.epoch)


def evaluate(run_or_checkpoint, data: str | None = None, *, checkpoint: str = "last",
             data_dir=None, device: str = "auto", plot: bool = False, write: bool = True,
             model_source: str | None = None) -> EvalResult:
    """Evaluate ``run_or_checkpoint`` (a run directory or a .pt file) on a test split.

    ``checkpoint`` picks last.pt or best.pt of a run directory; ``data`` another data set
    with the same channels and classes (default: the run's own).
    """
    trained = load_trained(run_or_checkpoint, checkpoint, device, model_source)
    dataset = trained.test_split(data, data_dir)
    logits = predict_logits(trained.model, trained.placement, dataset.test_images, trained.transform,
                            trained.record.options.batch_size)
    result = score(logits, dataset.test_labels.cpu(), dataset.classes)
    result.checkpoint, result.epoch, result.data = trained.checkpoint, trained.epoch, dataset.name
    if write:
        suffix = "" if data is None or dataset.name == trained.record.data else f"-{slugify(dataset.name)}"
        result.files = write_results(result, trained.checkpoint.parent, suffix, plot)
    return result


@torch.no_grad()
def predict_logits(model, placement, images, transform, batch_size) -> torch.Tensor:
    """Logits of every image, in batches the size training evaluated with (same numbers)."""
    model.eval()
    outputs = []
    for batch, _ in batches(images, None, batch_size):
        with placement.autocast():
            outputs.append(model(transform(batch)).float().cpu())
    return torch.cat(outputs)


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> EvalResult:
    """Every number of the evaluation, from the logits and the true labels."""
    num_classes = len(classes)
    losses = F.cross_entropy(logits, labels, reduction="none")
    predicted = logits.argmax(1)
    in_top5 = (logits.topk(min(5, num_classes), dim=1).indices == labels[:, None]).any(1)
    confusion = torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2)
    confusion = confusion.view(num_classes, num_classes)
    support = confusion.sum(1)
    predicted_count = confusion.sum(0)
    correct = confusion.diag()
    rows = []
    for k, name in enumerate(classes):
        members = labels == k
        recall = correct[k].item() / support[k].item() if support[k] else float("nan")
        rows.append({
            "class": name,
            "support": support[k].item(),
            "loss": losses[members].mean().item() if support[k] else float("nan"),
            "accuracy": recall,
            "top5_accuracy": in_top5[members].sum().item() / support[k].item() if support[k] else float("nan"),
            "precision": correct[k].item() / predicted_count[k].item() if predicted_count[k] else 0.0,
            "recall": recall,
        })
    present = [row for row in rows if row["support"]]
    overall = {
        "class": "all",
        "support": len(labels),
        "loss": losses.mean().item(),
        "accuracy": correct.sum().item() / len(labels),  # counts divided in Python, as training does
        "top5_accuracy": in_top5.sum().item() / len(labels),
        "precision": sum(row["precision"] for row in present) / len(present),
        "recall": sum(row["recall"] for row in present) / len(present),
    }
    return EvalResult(checkpoint=Path(), epoch=0, data="", images=len(labels), loss=overall["loss"],
                      top1=overall["accuracy"], top5=overall["top5_accuracy"], classes=list(classes),
                      confusion=confusion, per_class=[overall, *rows])


def write_results(result: EvalResult, directory: Path, suffix: str, plot: bool) -> list[Path]:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=EVAL_COLUMNS)
    writer.writeheader()
    writer.writerows(result.per_class)
    matrix = io.StringIO()
    matrix_writer = csv.writer(matrix)
    matrix_writer.writerow(["true\\predicted", *result.classes])
    for name, counts in zip(result.classes, result.confusion.tolist()):
        matrix_writer.writerow([name, *counts])
    files = [directory / f"eval{suffix}.csv", directory / f"confusion{suffix}.csv"]
    atomic_write_text(files[0], table.getvalue())
    atomic_write_text(files[1], matrix.getvalue())
    if plot:
        files.append(directory / f"confusion{suffix}.png")
        atomic_write_bytes(files[-1], confusion_png(result))
    return files


def confusion_png(result: EvalResult) -> bytes:
    """The confusion matrix as a PNG (see confusion_figure)."""
    buffer = io.BytesIO()
    confusion_figure(result).savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def confusion_figure(result: EvalResult):
    """The confusion matrix, with the count in each cell when there are few classes, titled with
    the run (the checkpoint's directory), the checkpoint and its epoch."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    counts = result.confusion.numpy()
    side = max(4.0, 0.45 * len(result.classes) + 2)
    figure = Figure(figsize=(side, side))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if len(result.classes) <= 20:
        ticks = range(len(result.classes))
        axes.set_xticks(ticks, result.classes, rotation=90)
        axes.set_yticks(ticks, result.classes)
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > counts.max() / 2 else "black")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    checkpoint = result.checkpoint
    axes.set_title(f"{checkpoint.parent.name}/{checkpoint.name}, epoch {result.epoch}\n"
                   f"{result.data}: top-1 {result.top1:.4f} ({result.images} images)")
    return figure
