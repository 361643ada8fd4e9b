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
or counted again for older runs; mean_epoch_seconds and images_per_second (training) averaged
over the epochs after the first, which also pays one-time warm-up; device; path.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cnnlab.errors import CnnlabError, NotARun, UsageError
from cnnlab.runs import CONFIG_FILE, DEFAULT_RUNS_DIR, METRICS_COLUMNS, Run, list_runs

ProblemHandler = Callable[[str], None]


class RunProblem(UserWarning):
    """A run that was skipped or is compared with blanks (older or damaged files)."""


def warn_problem(message: str) -> None:
    warnings.warn(message, RunProblem, stacklevel=3)


@dataclass
class LoadedRun:
    """A run with its config and the epochs finished so far (a DataFrame, at least one row)."""

    run: Run
    config: dict
    metrics: "object"  # pandas.DataFrame; the annotation is a string so pandas loads lazily

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def best_epoch_index(self):
        """Row label of the best validation accuracy (the first, on ties), or None."""
        if "val_acc" not in self.metrics or self.metrics["val_acc"].isna().all():
            return None
        return self.metrics["val_acc"].idxmax()


# -- choosing and reading runs ------------------------------------------------------------
def select_runs(runs: Iterable | None = None, runs_dir=None, pattern: str = "*") -> list[Path]:
    """The run directories to compare: the given ones, plus every run under ``runs_dir``
    (``runs/`` when no run is given), keeping names that match ``pattern``."""
    paths = [Path(getattr(r, "path", r)) for r in (runs or [])]
    if runs_dir is not None or not paths:
        runs_dir = Path(runs_dir if runs_dir is not None else DEFAULT_RUNS_DIR)
        if not runs_dir.is_dir():
            raise NotARun(f"runs directory {str(runs_dir)!r} does not exist")
        listed = [run.path for run in list_runs(runs_dir, pattern)]
        if not listed:
            what = f"matching {pattern!r} " if pattern != "*" else ""
            raise NotARun(f"no runs {what}under {str(runs_dir)!r}")
        paths += [p for p in listed if p not in paths]
    selected = [p for p in paths if fnmatch.fnmatch(p.name, pattern)]
    if not selected:
        raise NotARun(f"none of the {len(paths)} given runs matches {pattern!r}")
    return selected


def _not_a_run_hint(path: Path) -> str:
    """Point at --runs-dir when someone passes the directory that holds the runs."""
    if path.is_dir() and list_runs(path):
        return f"; it holds {len(list_runs(path))} runs: did you mean --runs-dir {path}?"
    return ""


def _why_no_epochs(run: Run) -> str:
    path = run.metrics_path
    if not path.exists():
        return f"no {path.name} yet"
    header = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    if not header.strip():
        return f"{path.name} is empty"
    if "epoch" not in [name.strip() for name in header.split(",")]:
        return f"{path.name} is not a cnnlab metrics file (no 'epoch' column)"
    return f"no finished epoch in {path.name}"


def load_run(path, on_problem: ProblemHandler | None = None) -> LoadedRun | None:
    """Read one run for comparison or plotting; None (after reporting why) if it has nothing
    to compare."""
    on_problem = on_problem or warn_problem
    path = Path(getattr(path, "path", path))
    try:
        run = Run.open(path)
        config = run.read_config()
    except NotARun as e:
        on_problem(f"skipped {path}: {e}{_not_a_run_hint(path)}")
        return None
    if not isinstance(config, dict):
        on_problem(f"skipped {path}: {CONFIG_FILE} does not hold a JSON object")
        return None
    try:
        metrics = run.read_metrics()
    except (OSError, ValueError) as e:  # unreadable, or not text at all
        on_problem(f"skipped {path}: {run.metrics_path.name} cannot be read ({e})")
        return None
    if metrics.empty:
        on_problem(f"skipped {path}: {_why_no_epochs(run)}")
        return None
    missing = [column for column in METRICS_COLUMNS if column not in metrics.columns]
    if missing:
        on_problem(f"{run.name}: metrics.csv has no {', '.join(missing)} column"
                   f"{'s' if len(missing) > 1 else ''} (an older run?); left blank")
    return LoadedRun(run, config, metrics.sort_values("epoch").reset_index(drop=True))


def load_runs(paths: Iterable, on_problem: ProblemHandler | None = None) -> list[LoadedRun]:
    """Every run among ``paths`` that has at least one finished epoch; an error if none."""
    paths = list(paths)
    loaded = [run for run in (load_run(p, on_problem) for p in paths) if run is not None]
    if not loaded:
        count = "the run" if len(paths) == 1 else f"any of the {len(paths)} runs"
        raise NotARun(f"nothing to compare: could not read a finished epoch from {count}")
    return loaded


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


def model_stats(config: dict, run_name: str = "", on_problem: ProblemHandler | None = None):
    """(params, MACs) at the trained input size: as ``cnnlab train`` recorded them in
    config.json, the missing ones counted again for older runs; None where neither works."""
    recorded = config.get("model_stats") or {}
    stats = {key: recorded.get(key) for key in ("params", "macs")}
    if None in stats.values():
        model, input_size = config.get("model"), config.get("input_size")
        try:
            if not model or not input_size:
                raise ValueError("config.json names no model or input_size")
            counted = _counted_stats(model, tuple(input_size), config.get("num_classes"))
        except (CnnlabError, ImportError, TypeError, ValueError, AttributeError, KeyError,
                RuntimeError) as e:  # an unknown model, or a summary that cannot count it
            (on_problem or warn_problem)(f"{run_name}: could not count the params and MACs "
                                         f"of {model!r} ({type(e).__name__}: {e}); left blank")
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
    config, metrics = loaded.config, loaded.metrics
    best = loaded.best_epoch_index
    params, macs = model_stats(config, loaded.name, on_problem)
    device = config.get("device")
    if device and (config.get("world_size") or 1) > 1:
        device = f"{device} x{config['world_size']}"
    return {
        "name": loaded.name,
        "model": config.get("model"),
        "data": config.get("data"),
        "epochs": int(metrics["epoch"].iloc[-1]),
        "epochs_planned": config.get("epochs"),
        "best_val_acc": math.nan if best is None else float(metrics.at[best, "val_acc"]),
        "best_epoch": None if best is None else int(metrics.at[best, "epoch"]),
        "final_val_acc": _last(metrics, "val_acc"),
        "final_train_loss": _last(metrics, "train_loss"),
        "final_val_loss": _last(metrics, "val_loss"),
        "params": params,
        "macs": macs,
        "mean_epoch_seconds": _steady_mean(metrics, "epoch_seconds"),
        "images_per_second": _steady_mean(metrics, "images_per_second"),
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
    loaded = load_runs(select_runs(runs, runs_dir, pattern), on_problem)
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
FORMATS = ("table", "csv", "json", "markdown")
FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}


def output_format(requested: str | None, out=None) -> str:
    """The format asked for; else the one ``out``'s extension names; else a table."""
    if requested is not None:
        return requested
    return FORMAT_BY_SUFFIX.get(Path(out).suffix.lower(), "table") if out else "table"
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
    return str(value)


def display_rows(frame) -> list[list[str]]:
    return [[_cell(name, row[name], row) for name, _ in DISPLAY_COLUMNS]
            for _, row in frame.iterrows()]


def to_markdown(frame) -> str:
    header = [title for _, title in DISPLAY_COLUMNS]
    align = ["---" if name in TEXT_COLUMNS else "---:" for name, _ in DISPLAY_COLUMNS]
    lines = [header, align] + display_rows(frame)
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def to_rich_table(frame):
    """A rich Table; data and device move into the title when every run shares them, and
    the run with the best validation accuracy is highlighted."""
    from rich import box
    from rich.table import Table

    shared = {name for name in ("data", "device") if frame[name].nunique(dropna=False) == 1}
    kept = [i for i, (name, _) in enumerate(DISPLAY_COLUMNS) if name not in shared]
    rows = display_rows(frame)
    title = f"{len(frame)} run{'s' if len(frame) != 1 else ''}"
    if shared:
        title += " on " + ", ".join(cell for (name, _), cell in zip(DISPLAY_COLUMNS, rows[0])
                                    if name in shared)
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for i in kept:
        name, heading = DISPLAY_COLUMNS[i]
        # one word per heading line keeps each column as narrow as its numbers
        table.add_column(heading.replace(" ", "\n"),
                         justify="left" if name in TEXT_COLUMNS else "right", overflow="fold",
                         no_wrap=name == "name")
    best = frame["best_val_acc"].idxmax() if frame["best_val_acc"].notna().any() else None
    for position, cells in enumerate(rows):
        table.add_row(*(cells[i] for i in kept),
                      style="bold green" if len(frame) > 1 and position == best else None)
    return table


def render(frame, fmt: str) -> str:
    """The comparison as text: csv and json hold the raw numbers, markdown and table the
    rounded ones a person reads."""
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n"
    if fmt == "markdown":
        return to_markdown(frame)
    if fmt == "table":
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=200).print(to_rich_table(frame))
        return buffer.getvalue()
    raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
