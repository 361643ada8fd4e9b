"""Compare finished (or still running) runs side by side: one row per run.

Measuring and rendering are separate: ``compare_runs`` reads the run store and returns a
pandas DataFrame of raw numbers (accuracies as fractions 0..1, counts as integers);
``render`` turns that frame into a rich table, CSV, JSON or Markdown.

Bad input never stops the comparison of the good runs: a directory that is not a run, a run
without a finished epoch, an unreadable config or an older metrics.csv without some columns is
reported through ``on_problem`` (by default a ``RunProblem`` warning) and skipped or left
blank. Only when no run at all can be compared is an error raised.

The columns: name, model, data; epochs finished and epochs_planned; best_val_acc and the
best_epoch that first reached it; final_val_acc, final_train_loss and final_val_loss of the
last finished epoch; params and macs (per image) at the trained input size, from config.json
or counted again for older runs; mean_epoch_seconds, images_per_second, train_tflops and
utilisation (training) averaged over the epochs after the first, which also pays one-time
warm-up (blank for runs written before the last two were measured); device; path.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
from pathlib import Path
from typing import Iterable

from cnnlab.config import DEFAULT_RUNS_DIR
from cnnlab.errors import CnnlabError, NotARun, UsageError
from cnnlab.runs import CONFIG_FILE, LoadedRun, ProblemHandler, RunRecord, list_runs, load_runs, warn_problem

# -- choosing and reading runs ------------------------------------------------------------
def select_runs(runs: Iterable | None = None, runs_dir=None, pattern: str = "*",
                on_problem: ProblemHandler | None = None) -> list[Path]:
    """The run directories to compare: the given ones, plus every run under ``runs_dir``
    (``runs/`` when no run is given), keeping names that match ``pattern``. The runs of an
    experiment, one folder further down, are left out and counted through ``on_problem``."""
    paths = [Path(getattr(r, "path", r)) for r in (runs or [])]
    if runs_dir is not None or not paths:
        runs_dir = Path(runs_dir if runs_dir is not None else DEFAULT_RUNS_DIR)
        if not runs_dir.is_dir():
            raise NotARun(f"runs directory {str(runs_dir)!r} does not exist")
        report_nested_runs(runs_dir, pattern, on_problem or warn_problem)
        listed = [run.path for run in list_runs(runs_dir, pattern)]
        if not listed:
            what = f"matching {pattern!r} " if pattern != "*" else ""
            raise NotARun(f"no runs {what}under {str(runs_dir)!r}")
        paths += [p for p in listed if p not in paths]
    selected = [p for p in paths if fnmatch.fnmatch(p.name, pattern)]
    if not selected:
        raise NotARun(f"none of the {len(paths)} given runs matches {pattern!r}")
    return selected


def report_nested_runs(runs_dir: Path, pattern: str, on_problem: ProblemHandler) -> None:
    """One line counting the runs inside folders under ``runs_dir`` that are not runs
    themselves (an experiment's), which a comparison of ``runs_dir`` leaves out."""
    folders = {folder: len(list_runs(folder, pattern)) for folder in sorted(runs_dir.iterdir())
               if folder.is_dir() and not (folder / CONFIG_FILE).is_file()}
    nested = {folder: count for folder, count in folders.items() if count}
    if nested:
        total, first = sum(nested.values()), next(iter(nested))
        on_problem(f"left out {total} run{'s' if total != 1 else ''} inside {len(nested)} experiment "
                   f"folder{'s' if len(nested) != 1 else ''} under {runs_dir} ({', '.join(f.name for f in nested)}); "
                   f"compare one with --runs-dir {first}")


# -- measuring ----------------------------------------------------------------------------
# name, how a person reads it, and whether a higher value is better (None: not a measure)
COLUMNS = [
    ("name", "run", None),
    ("model", "model", None),
    ("data", "data", None),
    ("epochs", "epochs", True),
    ("epochs_planned", "of", None),
    ("best_val_acc", "best val acc", True),
    ("best_epoch", "best epoch", None),
    ("final_val_acc", "final val acc", True),
    ("final_train_loss", "final train loss", False),
    ("final_val_loss", "final val loss", False),
    ("params", "params", False),
    ("macs", "MACs", False),
    ("mean_epoch_seconds", "s/epoch", False),
    ("images_per_second", "images/s", True),
    ("train_tflops", "TFLOP/s", True),
    ("utilisation", "util", True),
    ("device", "device", None),
    ("path", "path", None),
]
COLUMN_NAMES = [name for name, _, _ in COLUMNS]
INTEGER_COLUMNS = ["epochs", "epochs_planned", "best_epoch", "params", "macs"]


@functools.lru_cache(maxsize=None)
def _counted_stats(model_name: str, input_size: tuple, num_classes) -> tuple[int, int]:
    """Params and MACs counted the way ``cnnlab train`` records them (summarize builds the
    model without initialising its weights, so VGG costs no more than LeNet)."""
    from cnnlab.summary import summarize

    totals = summarize(model_name, input_size=input_size, num_classes=num_classes).totals
    return int(totals.params), int(totals.macs)


def model_stats(record: RunRecord, run_name: str = "", on_problem: ProblemHandler | None = None):
    """(params, MACs) at the trained input size: as ``cnnlab train`` recorded them in
    config.json, the missing ones counted again for older runs; None where neither works."""
    recorded = record.model_stats or {}
    stats = {key: recorded.get(key) for key in ("params", "macs")}
    if None in stats.values():
        try:
            if record.input_size is None:
                raise ValueError("config.json names no input_size")
            counted = _counted_stats(record.model, tuple(record.input_size), record.num_classes)
        except (CnnlabError, ImportError, TypeError, ValueError, AttributeError, KeyError,
                RuntimeError) as e:  # an unknown model, or a summary that cannot count it
            (on_problem or warn_problem)(f"{run_name}: could not count the params and MACs "
                                         f"of {record.model!r} ({type(e).__name__}: {e}); left blank")
            counted = (None, None)
        stats = {key: counted[i] if stats[key] is None else stats[key]
                 for i, key in enumerate(("params", "macs"))}
    return tuple(None if stats[key] is None else int(stats[key]) for key in ("params", "macs"))


def _last(metrics, column):
    if column not in metrics:
        return math.nan
    values = metrics[column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def _steady_mean(metrics, column):
    """Mean over the epochs after the first, which also pays one-time costs (loading the
    data, warming up kernels) and would make short runs look slow; the only epoch if one."""
    if column not in metrics:
        return math.nan
    values = metrics[column].dropna()
    return float((values.iloc[1:] if len(values) > 1 else values).mean())


def measure(loaded: LoadedRun, on_problem: ProblemHandler | None = None) -> dict:
    """One comparison row of raw numbers for a run."""
    record, metrics = loaded.record, loaded.metrics
    best = loaded.best_epoch_index
    params, macs = model_stats(record, loaded.name, on_problem)
    device = record.options.device
    if record.world_size > 1:
        device = f"{device} x{record.world_size}"
    return {
        "name": loaded.name,
        "model": record.model,
        "data": record.data,
        "epochs": int(metrics["epoch"].iloc[-1]),
        "epochs_planned": record.options.epochs,
        "best_val_acc": math.nan if best is None else float(metrics.at[best, "val_acc"]),
        "best_epoch": None if best is None else int(metrics.at[best, "epoch"]),
        "final_val_acc": _last(metrics, "val_acc"),
        "final_train_loss": _last(metrics, "train_loss"),
        "final_val_loss": _last(metrics, "val_loss"),
        "params": params,
        "macs": macs,
        "mean_epoch_seconds": _steady_mean(metrics, "epoch_seconds"),
        "images_per_second": _steady_mean(metrics, "images_per_second"),
        "train_tflops": _steady_mean(metrics, "train_tflops"),
        "utilisation": _steady_mean(metrics, "utilisation"),
        "device": device,
        "path": str(loaded.run.path),
    }


def table_from_rows(rows: list[dict]):
    """A DataFrame with the COLUMNS, integers as nullable Int64 (no '61706.0' in CSV)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMN_NAMES)
    for column in INTEGER_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def sort_table(frame, column: str, reverse: bool = False):
    """Best first: accuracies and images/s descending; losses, sizes and seconds ascending;
    text alphabetical. Blanks go last."""
    if column not in COLUMN_NAMES:
        raise UsageError(f"cannot sort by {column!r}; choose one of {', '.join(COLUMN_NAMES)}")
    higher_is_better = {name: better for name, _, better in COLUMNS}[column]
    ascending = not higher_is_better
    if reverse:
        ascending = not ascending
    return frame.sort_values(column, ascending=ascending, na_position="last",
                             kind="stable").reset_index(drop=True)


def compare_runs(runs: Iterable | None = None, *, runs_dir=None, pattern: str = "*",
                 sort: str | None = None, reverse: bool = False,
                 on_problem: ProblemHandler | None = None):
    """One row per run (see COLUMNS) as a pandas DataFrame.

    ``runs`` are run directories (or Run objects); ``runs_dir`` adds every run below it
    (``runs/`` when neither is given); ``pattern`` keeps run names matching a shell glob.
    Runs that cannot be read are reported through ``on_problem`` (default: a RunProblem
    warning) and left out; NotARun is raised when none is left.
    """
    loaded = load_runs(select_runs(runs, runs_dir, pattern, on_problem), on_problem)
    frame = table_from_rows([measure(run, on_problem) for run in loaded])
    return sort_table(frame, sort, reverse) if sort else frame


def efficiency_frontier(costs, accuracies) -> list[int]:
    """Positions of the runs no other run beats on both cost and accuracy, cheapest first
    (the Pareto frontier: each one is more accurate than every cheaper run)."""
    points = sorted((c, -a, i) for i, (c, a) in enumerate(zip(costs, accuracies))
                    if not (math.isnan(c) or math.isnan(a)))
    frontier, best = [], -math.inf
    for _, negative_accuracy, position in points:
        if -negative_accuracy > best:
            frontier.append(position)
            best = -negative_accuracy
    return frontier


# -- rendering ----------------------------------------------------------------------------
# what a person sees: epochs shows "done/planned" while a run is in progress; paths stay in CSV
DISPLAY_COLUMNS = [(name, title) for name, title, _ in COLUMNS
                   if name not in ("epochs_planned", "path")]
TEXT_COLUMNS = ("name", "model", "data", "device")


def _blank(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _si(value: float) -> str:
    """61706 -> 61.7k, 138357544 -> 138M, 15.47e9 -> 15.5G."""
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{unit}"
    return f"{value:.0f}"


def _cell(column: str, value, row) -> str:
    if _blank(value):
        return "-"
    if column == "epochs":
        planned = row["epochs_planned"]
        in_progress = not _blank(planned) and int(planned) > int(value)
        return f"{int(value)}/{int(planned)}" if in_progress else f"{int(value)}"
    if column.endswith("_acc"):
        return f"{100 * value:.2f}%"
    if column.endswith("_loss"):
        return f"{value:.4f}"
    if column in ("params", "macs"):
        return _si(float(value))
    if column == "mean_epoch_seconds":
        return f"{value:.2f}"
    if column == "images_per_second":
        return f"{value:,.0f}"
    if column == "train_tflops":
        return f"{value:.3g}"
    if column == "utilisation":
        return f"{100 * value:.1f}%"
    return str(value)


def display_rows(frame) -> list[list[str]]:
    return [[_cell(name, row[name], row) for name, _ in DISPLAY_COLUMNS]
            for _, row in frame.iterrows()]


def to_markdown(frame) -> str:
    header = [title for _, title in DISPLAY_COLUMNS]
    align = ["---" if name in TEXT_COLUMNS else "---:" for name, _ in DISPLAY_COLUMNS]
    lines = [header, align] + display_rows(frame)
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


# what a narrow terminal leaves out first; the run's name and its best accuracy stay
NARROW_DROP_ORDER = ("device", "data", "train_tflops", "utilisation", "images_per_second", "mean_epoch_seconds",
                     "final_train_loss", "best_epoch", "macs", "params", "final_val_loss", "final_val_acc", "epochs", "model")


def to_rich_table(frame):
    """A table that fits the screen (see cnnlab.render.FittedTable); data and device move into
    the title when every run shares them, and the run with the best validation accuracy is
    highlighted."""
    from rich import box

    from cnnlab.render import FittedTable

    shared = {name for name in ("data", "device") if frame[name].nunique(dropna=False) == 1}
    kept = [i for i, (name, _) in enumerate(DISPLAY_COLUMNS) if name not in shared]
    rows = display_rows(frame)
    title = f"{len(frame)} run{'s' if len(frame) != 1 else ''}"
    if shared:
        title += " on " + ", ".join(cell for (name, _), cell in zip(DISPLAY_COLUMNS, rows[0])
                                    if name in shared)
    # one word per heading line keeps each column as narrow as its numbers
    headings = {name: heading.replace(" ", "\n") for name, heading in DISPLAY_COLUMNS}
    columns = [dict(header=headings[DISPLAY_COLUMNS[i][0]],
                    justify="left" if DISPLAY_COLUMNS[i][0] in TEXT_COLUMNS else "right") for i in kept]
    best = frame["best_val_acc"].idxmax() if frame["best_val_acc"].notna().any() else None
    styles = ["bold green" if len(frame) > 1 and position == best else None for position in range(len(rows))]
    return FittedTable(columns, [[cells[i] for i in kept] for cells in rows],
                       drop_order=[headings[name] for name in NARROW_DROP_ORDER], row_styles=styles,
                       title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


def render(frame, fmt: str) -> str:
    """The comparison as text: csv and json hold the raw numbers, markdown the rounded ones a
    person reads (a table on screen: ``to_rich_table``)."""
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n"
    if fmt == "markdown":
        return to_markdown(frame)
    raise UsageError(f"unknown format {fmt!r}; choose one of csv, json, markdown")
