"""Reading runs for plot and compare: every run that has something to show, and one line for
each that has not (never an exception for a damaged run among many)."""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cnnlab.config import DEFAULT_RUNS_DIR
from cnnlab.errors import CnnlabError, NotARun, first_line
from cnnlab.runs.metrics import METRICS_COLUMNS
from cnnlab.runs.record import CONFIG_FILE, RunRecord
from cnnlab.runs.run import Run

ProblemHandler = Callable[[str], None]


class RunProblem(UserWarning):
    """A run that was skipped or is compared with blanks (older or damaged files)."""


def warn_problem(message: str) -> None:
    warnings.warn(message, RunProblem, stacklevel=3)


def list_runs(runs_dir=DEFAULT_RUNS_DIR, pattern: str = "*") -> list[Run]:
    """Runs directly under ``runs_dir`` whose names match ``pattern``, sorted by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [Run(p) for p in sorted(runs_dir.iterdir())
            if p.is_dir() and fnmatch.fnmatch(p.name, pattern) and (p / CONFIG_FILE).is_file()]


@dataclass
class LoadedRun:
    """A run with its record and the epochs finished so far (a DataFrame, at least one row)."""

    run: Run
    record: RunRecord
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


def load_run(path, on_problem: ProblemHandler | None = None) -> LoadedRun | None:
    """Read one run for comparison or plotting; None (after reporting why) if it has nothing
    to show."""
    on_problem = on_problem or warn_problem
    path = Path(getattr(path, "path", path))
    try:
        run = Run.open(path)
        record = run.read_record()
    except CnnlabError as e:
        on_problem(f"skipped {path}: {e}{_not_a_run_hint(path)}")
        return None
    try:
        metrics = run.metrics.frame()
    except (CnnlabError, OSError) as e:  # unreadable, or not text at all
        why = "not UTF-8 text" if isinstance(e, CnnlabError) else first_line(e)
        on_problem(f"skipped {path}: {run.metrics.path.name} cannot be read ({why})")
        return None
    if metrics.empty:
        on_problem(f"skipped {path}: {_why_no_epochs(run)}")
        return None
    missing = [column for column in METRICS_COLUMNS if column not in metrics.columns]
    if missing:
        on_problem(f"{run.name}: metrics.csv has no {', '.join(missing)} column"
                   f"{'s' if len(missing) > 1 else ''} (an older run?); left blank")
    return LoadedRun(run, record, metrics.sort_values("epoch").reset_index(drop=True))


def load_runs(paths: Iterable, on_problem: ProblemHandler | None = None, purpose: str = "compare") -> list[LoadedRun]:
    """Every run among ``paths`` that has at least one finished epoch; an error (saying there is
    nothing to ``purpose``) if none. A single run that cannot be read is that one error, with why."""
    paths = list(paths)
    if len(paths) == 1:
        problems = []
        loaded = load_run(paths[0], problems.append)
        if loaded is None:
            raise NotARun(f"nothing to {purpose}: {problems[0].removeprefix('skipped ')}")
        for problem in problems:  # a run that loaded, with blanks
            (on_problem or warn_problem)(problem)
        return [loaded]
    loaded = [run for run in (load_run(p, on_problem) for p in paths) if run is not None]
    if not loaded:
        raise NotARun(f"nothing to {purpose}: could not read a finished epoch from any of the {len(paths)} runs")
    return loaded


def _not_a_run_hint(path: Path) -> str:
    """Point at --runs-dir when someone passes the directory that holds the runs."""
    if path.is_dir() and list_runs(path):
        return f"; it holds {len(list_runs(path))} runs: did you mean --runs-dir {path}?"
    return ""


def _why_no_epochs(run: Run) -> str:
    path = run.metrics.path
    if not path.exists():
        return f"no {path.name} yet"
    header = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    if not header.strip():
        return f"{path.name} is empty"
    if "epoch" not in [name.strip() for name in header.split(",")]:
        return f"{path.name} is not a cnnlab metrics file (no 'epoch' column)"
    return f"no finished epoch in {path.name}"
