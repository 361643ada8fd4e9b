"""Figures of runs: training curves, and accuracy against model cost.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no GUI backend), so they
work on a headless machine whatever MPLBACKEND says; only ``show=True`` goes through pyplot
to open a window. The file format follows the extension of ``out`` (png, svg or pdf), and the
figure size is fixed by the number of panels: PANEL_INCHES per panel, side by side, at
``dpi`` dots per inch (a PNG of 2 panels at dpi 150 is 1350 x 600 pixels).

Colour tells the runs apart, line style the split (training dashed, validation solid), and a
star marks each run's best validation accuracy. Runs still in progress plot the epochs they
have finished.
"""

from __future__ import annotations

import math
import os
from itertools import pairwise
from pathlib import Path
from typing import Iterable

from cnnlab.compare import efficiency_frontier
from cnnlab.runs import LoadedRun, ProblemHandler, load_runs
from cnnlab.errors import UsageError

PANEL_INCHES = (4.5, 4.0)  # width, height of one panel, a legend of up to two rows included
LEGEND_ROW_INCHES = 0.2  # each legend row past the second makes the figure this much taller
LEGEND_COLUMNS_PER_PANEL = 2
DEFAULT_DPI = 150
IMAGE_FORMATS = ("png", "svg", "pdf")
SPLIT_STYLES = {"train": ("--", "training"), "val": ("-", "validation")}
BEST_MARKER = dict(marker="*", markersize=12, markeredgecolor="black", markeredgewidth=0.6,
                   linestyle="none", zorder=5)
EFFICIENCY_SUFFIX = "_efficiency"
POINT_SIZE = 7  # an efficiency point's marker, in points
# where a point's label may go, in points from the point, tried in turn: right, left, then
# further above and below
LABEL_OFFSETS = [(dx, dy) for dy in (4, -12, 14, -22, 24, -32) for dx in (5, -5)]
LABEL_GAP = 2  # pixels kept clear between a label and another label, a marker or a tick label


def run_colour(position: int, count: int = 10):
    """The colour of the run at ``position`` of ``count``; the same in every figure of one
    command. Up to ten runs get matplotlib's ten colours, up to twenty the paired twenty; more
    get hues spread evenly round the colour wheel, neighbours alternately bright and dark, so no
    two runs share one."""
    if count <= 10:
        return f"C{position % 10}"
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    if count <= 20:
        return colormaps["tab20"](position % 20)
    return tuple(hsv_to_rgb((position / count, 0.8, 0.9 if position % 2 == 0 else 0.6)))


def image_format(out: Path) -> str:
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise UsageError(f"cannot tell the image format of {str(out)!r}: "
                         f"end the file name with .{', .'.join(IMAGE_FORMATS)}")
    return fmt


def default_plot_path(runs: list) -> Path:
    """plot.png inside a single run; for several, plot.png in the directory that holds them."""
    paths = [Path(getattr(run, "path", run)) for run in runs]
    if len(paths) == 1:
        return paths[0] / "plot.png"
    try:
        parent = os.path.commonpath([path.parent for path in paths])
    except ValueError:  # absolute and relative paths mixed
        parent = ""
    return Path(parent or ".") / "plot.png"


def efficiency_path(out) -> Path:
    """Where ``compare --plot FILE`` puts its second figure: FILE_efficiency.<ext>."""
    out = Path(out)
    return out.with_name(f"{out.stem}{EFFICIENCY_SUFFIX}{out.suffix}")


def new_figure(panels: int, dpi: int, show: bool = False, legend_rows: int = 0):
    """A figure of ``panels`` side by side, taller by ``legend_rows`` lines of a legend below
    them (so that a long legend never squeezes the axes); on the Agg canvas unless it is to be
    shown."""
    figsize = (PANEL_INCHES[0] * panels, PANEL_INCHES[1] + LEGEND_ROW_INCHES * legend_rows)
    if show:
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        FigureCanvasAgg(figure)
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def save_figure(figure, out: Path, dpi: int, show: bool) -> Path:
    out = Path(out)
    fmt = image_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format=fmt, dpi=dpi)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return out


def _lr_changes(loaded: list[LoadedRun]) -> bool:
    return any("lr" in run.metrics and run.metrics["lr"].nunique() > 1 for run in loaded)


def _draw_run(axes: dict, loaded: LoadedRun, colour: str, splits) -> None:
    metrics = loaded.metrics
    epochs = metrics["epoch"]
    # a run with one finished epoch is a point, not a line: give it a marker
    marker = "o" if len(metrics) == 1 else None
    for split in splits:
        style = SPLIT_STYLES[split][0]
        for panel, quantity in (("loss", "loss"), ("accuracy", "acc")):
            column = f"{split}_{quantity}"
            if column in metrics:
                axes[panel].plot(epochs, metrics[column], linestyle=style, marker=marker,
                                 color=colour)
    best = loaded.best_epoch_index
    if "val" in splits and best is not None:
        best_epoch = metrics.at[best, "epoch"]
        axes["accuracy"].plot([best_epoch], [metrics.at[best, "val_acc"]], color=colour,
                              **BEST_MARKER)
        if "val_loss" in metrics:
            axes["loss"].plot([best_epoch], [metrics.at[best, "val_loss"]], color=colour,
                              **BEST_MARKER)
    if "lr" in axes and "lr" in metrics:
        axes["lr"].plot(epochs, metrics["lr"], marker=marker, color=colour)


def _legend_handles(names: list[str], splits, marked_best: bool) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=run_colour(i, len(names)), label=name) for i, name in enumerate(names)]
    if len(splits) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=SPLIT_STYLES[s][0],
                           label=SPLIT_STYLES[s][1]) for s in splits]
    if marked_best:
        handles.append(Line2D([], [], color="0.6", label="best val acc", **BEST_MARKER))
    return handles


def _legend_layout(entries: int, panels: int) -> tuple[int, int]:
    """(columns, rows past the two a panel's height includes) of a legend of ``entries``."""
    columns = min(entries, LEGEND_COLUMNS_PER_PANEL * panels)
    return columns, max(0, math.ceil(entries / columns) - 2)


def plot_runs(runs: Iterable, out=None, *, splits=("train", "val"), lr: bool | None = None,
              dpi: int = DEFAULT_DPI, show: bool = False, title: str | None = None,
              on_problem: ProblemHandler | None = None) -> Path:
    """Draw loss and accuracy over epochs for each run (and the learning rate when ``lr``
    is True; None means: when it changes during some run). Returns the file written.

    ``out`` defaults to ``default_plot_path(runs)``; its extension picks png, svg or pdf.
    Runs that cannot be read are reported through ``on_problem`` and left out.
    """
    runs = list(runs)
    out = Path(out) if out is not None else default_plot_path(runs)
    image_format(out)  # refuse a bad extension before reading anything
    loaded = load_runs(runs, on_problem, purpose="plot")
    figure = curves_figure(loaded, splits=splits, lr=lr, dpi=dpi, show=show, title=title)
    return save_figure(figure, out, dpi, show)


def curves_figure(loaded: list[LoadedRun], *, splits=("train", "val"), lr: bool | None = None,
                  dpi: int = DEFAULT_DPI, show: bool = False, title: str | None = None):
    """The figure ``plot_runs`` saves: a panel per quantity, a colour per run, the legend below."""
    show_lr = _lr_changes(loaded) if lr is None else lr
    panels = ["loss", "accuracy"] + (["lr"] if show_lr else [])
    marked_best = "val" in splits and any(run.best_epoch_index is not None for run in loaded)
    handles = _legend_handles([run.name for run in loaded], splits, marked_best)
    columns, extra_rows = _legend_layout(len(handles), len(panels))
    figure, axes_row = new_figure(len(panels), dpi, show, legend_rows=extra_rows)
    axes = dict(zip(panels, axes_row))
    for position, run in enumerate(loaded):
        _draw_run(axes, run, run_colour(position, len(loaded)), splits)

    from matplotlib.ticker import MaxNLocator

    labels = {"loss": "loss", "accuracy": "accuracy", "lr": "learning rate"}
    for panel, ax in axes.items():
        ax.set_xlabel("epoch")
        ax.set_ylabel(labels[panel])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if "lr" in axes and _spans_decades(loaded):
        axes["lr"].set_yscale("log")
    if title is None and len(loaded) == 1:
        record = loaded[0].record
        title = f"{loaded[0].name}: {record.model} on {record.data}"
    if title:
        figure.suptitle(title)
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize="small", frameon=False)
    return figure


def _spans_decades(loaded: list[LoadedRun]) -> bool:
    """A learning rate that falls by 10x or more reads better on a log axis."""
    rates = [value for run in loaded if "lr" in run.metrics
             for value in run.metrics["lr"].dropna() if value > 0]
    return bool(rates) and max(rates) / min(rates) >= 10


def plot_efficiency(table, out, *, dpi: int = DEFAULT_DPI, show: bool = False) -> Path:
    """Each run's best validation accuracy against its MACs and its parameters (log axes),
    labelled by model, with the efficiency frontier drawn through the runs no other run
    beats on both cost and accuracy; a run with fewer epochs done than planned is a hollow
    marker. ``table`` is a frame from ``compare_runs``. Returns the file written."""
    return save_figure(efficiency_figure(table, dpi=dpi, show=show), out, dpi, show)


def efficiency_figure(table, *, dpi: int = DEFAULT_DPI, show: bool = False):
    """The figure ``plot_efficiency`` saves."""
    from matplotlib.lines import Line2D

    figure, (macs_ax, params_ax) = new_figure(2, dpi, show)
    models = table["model"].astype(str)
    # label by model; by run name where several runs share one model
    labels = [run if (models == model).sum() > 1 else model
              for run, model in zip(table["name"], models)]
    planned = table["epochs_planned"].astype("float64").tolist()  # a blank count becomes NaN
    unfinished = [done < to_do for done, to_do in zip(table["epochs"].astype("float64").tolist(), planned)]
    accuracies = table["best_val_acc"].astype("float64").tolist()
    labelled = []  # (axes, the points drawn in it, their labels)
    legends = {}   # axes -> its legend's handles
    for ax, column, label in ((macs_ax, "macs", "MACs per image"),
                              (params_ax, "params", "parameters")):
        costs = table[column].astype("float64").tolist()
        drawn = [i for i, (c, a) in enumerate(zip(costs, accuracies))
                 if not (math.isnan(c) or math.isnan(a))]
        for i in drawn:
            colour = run_colour(i, len(costs))
            ax.plot([costs[i]], [accuracies[i]], "o", color=colour, markersize=POINT_SIZE,
                    markerfacecolor="none" if unfinished[i] else colour, markeredgewidth=1.5)
        frontier = efficiency_frontier(costs, accuracies)
        handles = []
        if len(frontier) > 1:
            handles += ax.plot([costs[i] for i in frontier], [accuracies[i] for i in frontier],
                               color="0.5", linestyle=":", zorder=0, label="efficiency frontier")
        if any(unfinished[i] for i in drawn):
            handles.append(Line2D([], [], marker="o", linestyle="none", color="0.3", markerfacecolor="none",
                                  markersize=POINT_SIZE, markeredgewidth=1.5, label="unfinished: fewer epochs than planned"))
        if drawn:
            ax.set_xscale("log")
            ax.margins(x=0.12, y=0.08)  # room for the labels right of the last points
            labelled.append((ax, [(costs[i], accuracies[i]) for i in drawn], [labels[i] for i in drawn]))
        else:
            ax.text(0.5, 0.5, f"no run has a {column} count", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
        ax.set_xlabel(f"{label} (log scale)" if drawn else label)
        ax.set_ylabel("best validation accuracy")
        ax.grid(alpha=0.3, which="both")
        legends[ax] = handles
    figure.suptitle("accuracy against cost")
    figure.canvas.draw()  # the layout settled: where points, ticks and labels will be
    for ax, points, point_labels in labelled:
        readable_log_ticks(ax)
        place_labels(ax, points, point_labels)
    for ax, handles in legends.items():
        if handles:  # after the labels, so that "best" keeps clear of them
            ax.legend(handles=handles, loc="best", fontsize="small")
    return figure


def readable_log_ticks(ax) -> None:
    """Cost ticks formatted 100k, 1M, 10M: each decade and its 2 and 5 where those labels fit side
    by side, else the decades alone (LogLocator skips decades by itself when even they would
    crowd). Needs the figure drawn once, so that the axes have their width."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())
    for subs in ((1.0, 2.0, 5.0), (1.0,)):
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        if not any(left.x1 + LABEL_GAP > right.x0 for left, right in pairwise(tick_label_boxes(ax))):
            return


def tick_label_boxes(ax) -> list:
    """The window extents of the x tick labels within the axes' span, left to right."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    boxes = [label.get_window_extent(renderer) for label in ax.xaxis.get_majorticklabels() if label.get_text()]
    return sorted((box for box in boxes if frame.x0 <= (box.x0 + box.x1) / 2 <= frame.x1), key=lambda box: box.x0)


def place_labels(ax, points: list[tuple[float, float]], labels: list[str]) -> None:
    """Each point's label beside it, at the first of LABEL_OFFSETS where it stays inside the axes
    and clear of the labels placed before and of the other points' markers (greedy: a crowded
    point keeps the first offset)."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = POINT_SIZE / 2 * ax.figure.dpi / 72
    markers = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)
               for x, y in ax.transData.transform(points)]
    placed = []
    for position, (point, label) in enumerate(zip(points, labels)):
        obstacles = placed + markers[:position] + markers[position + 1:]
        annotation = ax.annotate(label, point, textcoords="offset points", xytext=LABEL_OFFSETS[0],
                                 fontsize="small")
        for offset in LABEL_OFFSETS:
            annotation.xyann = offset
            annotation.set_horizontalalignment("left" if offset[0] > 0 else "right")
            box = annotation.get_window_extent(renderer)
            if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and not any(
                    box.padded(LABEL_GAP).overlaps(other) for other in obstacles):
                break
        else:
            annotation.xyann = LABEL_OFFSETS[0]
            annotation.set_horizontalalignment("left")
            box = annotation.get_window_extent(renderer)
        placed.append(box)
