"""The run store: one directory per training run under ``runs/``.

    runs/<name>/config.json   the RunRecord: every option resolved, plus data, model and versions
    runs/<name>/metrics.csv   one row per finished epoch (METRICS_COLUMNS)
    runs/<name>/summary.csv   the model's layer table at its training input size
    runs/<name>/last.pt       state after the last finished epoch (for --resume)
    runs/<name>/best.pt       state at the best validation accuracy
    runs/<name>/eval.csv, confusion.csv   written by ``cnnlab eval``
    runs/<name>/.lock         held (flock) by the one process writing the run

How a finished epoch is never lost, nor recorded twice:
- One writer: a training process holds an exclusive lock on the run; a second one is refused
  with the holder's process id. The kernel drops the lock of a process that dies, so a killed
  run's lock is simply taken over.
- One authority: ``last.pt`` is written first (to a temporary file, then renamed), and it
  holds the whole metrics history, the best epoch and its accuracy. Then ``best.pt`` (when the
  epoch improved), then the metrics.csv row. A kill anywhere in between leaves last.pt either
  at the new epoch or at the old one, and ``reconcile`` (on every resume, under the lock)
  re-derives the other two from it: a missing metrics row is rewritten, a best.pt older than
  the best epoch of last.pt is replaced by it. What does not add up (metrics rows last.pt has
  never seen, rows without any last.pt) is refused, never deleted.
- Leftover temporary files of a killed writer are removed when the run is opened for writing.
Checkpoints are read with ``torch.load(weights_only=True)``, so a crafted file cannot run code.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import fnmatch
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

from cnnlab.config import DEFAULT_RUNS_DIR, TrainConfig
from cnnlab.errors import BadCheckpoint, NotARun, RunBusy, RunExists, RunInconsistent, first_line

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_seconds", "images_per_second"]
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".lock"
CHECKPOINT_FORMAT = "cnnlab-checkpoint"
TEMPORARY = re.compile(r"\..+\.\d+\.tmp")  # what atomic_write_bytes leaves behind when killed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


# -- config.json --------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """A run's config.json: the options it trains with (every one resolved) and what readers
    need to know about it. Written and read only through this type."""

    options: TrainConfig
    set_by_recipe: dict = field(default_factory=dict)  # the options options.recipe chose (not given explicitly)
    input_size: tuple[int, int, int] | None = None  # (channels, height, width) the model trains at
    num_classes: int | None = None
    classes: list[str] | None = None
    train_images: int | None = None
    test_images: int | None = None
    mean: list[float] | None = None  # the normalisation the model was trained with
    std: list[float] | None = None
    model_stats: dict | None = None  # params, trainable_params, macs at input_size
    world_size: int = 1
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    created: str | None = None
    extended: list[dict] = field(default_factory=list)  # each resume that raised the epochs: from, to, when
    # a user's network (options.model is FILE.py:Name): reference, file, sha256, copy (cnnlab.models.user)
    model_source: dict | None = None

    def to_json(self) -> dict:
        """The flat layout of config.json: the options, then the rest."""
        described = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**self.options.to_dict(), **described,
                "input_size": None if self.input_size is None else list(self.input_size)}

    @classmethod
    def from_json(cls, saved, source: str = CONFIG_FILE) -> "RunRecord":
        options = TrainConfig.from_dict(saved, source)  # type-checked and validated
        described = {f.name: saved[f.name] for f in fields(cls) if f.name != "options" and f.name in saved}
        record = cls(options, **described)
        size = record.input_size
        if size is not None and not (isinstance(size, list) and len(size) == 3
                                     and all(isinstance(n, int) and n > 0 for n in size)):
            raise NotARun(f"{source}: input_size is {size!r}, not [channels, height, width]")
        record.input_size = None if size is None else tuple(size)
        return record

    # shorthands for what every reader asks
    @property
    def model(self) -> str:
        return self.options.model

    @property
    def data(self) -> str:
        return self.options.data


# -- the lock -------------------------------------------------------------------------------------

class RunLock:
    """An exclusive flock on ``<run>/.lock`` holding the writer's process id."""

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / LOCK_FILE
        self.file = None

    def acquire(self) -> "RunLock":
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                file.close()
                raise
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise RunBusy(f"run {str(self.path.parent)!r} is being written by {holder}; wait for it to "
                          f"finish or stop it (a run has one writer at a time)") from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}")
        file.flush()
        self.file = file
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# -- a run directory ------------------------------------------------------------------------------

class Run:
    """A run directory. Create with ``Run.create``, open an existing one with ``Run.open``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock: RunLock | None = None

    def __repr__(self):
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- creating and opening -------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir, name: str | None = None, *, model: str = "", data: str = "") -> "Run":
        """Make a new run directory and lock it for writing; an existing run is never reused.

        An explicit ``name`` that exists is an error, unless it is the empty directory of a run
        killed while being created (no config.json, nobody holding its lock): that is taken over.
        The default name ``<model>-<data>-<timestamp>`` gets a numeric suffix instead.
        """
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        if name is not None:
            run = cls._claim(runs_dir / name)
            if run is None:
                raise run_exists(runs_dir / name)
            return run
        base = slugify(f"{model}-{Path(data).name or data}-{time.strftime('%Y%m%d-%H%M%S')}")
        for attempt in range(1, 1000):
            run = cls._claim(runs_dir / (base if attempt == 1 else f"{base}-{attempt}"))
            if run is not None:
                return run
        raise RunExists(f"could not find a free run name under {runs_dir}")

    @classmethod
    def _claim(cls, path: Path) -> "Run | None":
        """The new, locked run at ``path``, or None if a run (or anything else) is there."""
        try:
            path.mkdir()
        except FileExistsError:
            if not abandoned(path):
                return None
        run = cls(path)
        try:
            run.lock = RunLock(path).acquire()
        except RunBusy:
            return None  # another process is creating it right now
        if (path / CONFIG_FILE).exists():  # created and filled between our look and our lock
            run.release()
            return None
        run.remove_temporary_files()
        return run

    @classmethod
    def open(cls, path) -> "Run":
        """Open an existing run for reading; anything without a config.json is not a run."""
        path = Path(path)
        if not path.is_dir():
            raise NotARun(f"{str(path)!r} is not a directory")
        if not (path / CONFIG_FILE).is_file():
            raise NotARun(f"{str(path)!r} is not a cnnlab run (no {CONFIG_FILE})")
        return cls(path)

    def open_for_writing(self) -> "Run":
        """Take the run's lock (a second writer is refused) and clear a killed writer's debris."""
        if self.lock is None:
            self.lock = RunLock(self.path).acquire()
            self.remove_temporary_files()
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def remove_temporary_files(self) -> None:
        for path in self.path.iterdir():
            if TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)

    # -- config.json ----------------------------------------------------------------------
    def write_record(self, record: RunRecord) -> None:
        atomic_write_text(self.path / CONFIG_FILE, json.dumps(record.to_json(), indent=2) + "\n")

    def read_record(self) -> RunRecord:
        return RunRecord.from_json(self.read_config(), f"{self.path / CONFIG_FILE}")

    def read_config(self) -> dict:
        """config.json as it is on disk (a plain dict); ``read_record`` gives the typed record."""
        try:
            return json.loads((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise NotARun(f"{self.path / CONFIG_FILE} cannot be read: {first_line(e)}") from None

    # -- metrics --------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def append_metrics(self, row: dict) -> None:
        """Append one epoch's row and force it to disk (header first on a new file)."""
        new_file = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        with open(self.metrics_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS, extrasaction="raise")
            if new_file:
                writer.writeheader()
            writer.writerow({key: row[key] for key in METRICS_COLUMNS})
            f.flush()
            os.fsync(f.fileno())

    def read_metric_rows(self) -> list[dict]:
        """Complete epoch rows as dicts of floats (epoch as int).

        A truncated last line (a crash while appending) is dropped, and so is any row that
        does not parse: the epochs before it stay readable.
        """
        if not self.metrics_path.exists():
            return []
        rows = []
        text = self.metrics_path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # the last line was cut short
            text = text[: text.rfind("\n") + 1]
        for raw in csv.DictReader(io.StringIO(text)):
            try:
                row = {key: float(value) for key, value in raw.items() if key is not None}
                row["epoch"] = int(row["epoch"])
            except (TypeError, ValueError, KeyError):
                break
            rows.append(row)
        return rows

    def read_metrics(self):
        """metrics.csv as a pandas DataFrame (empty, with the columns, if no epoch finished)."""
        import pandas as pd

        rows = self.read_metric_rows()
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=METRICS_COLUMNS)

    def write_metrics(self, rows: list[dict]) -> None:
        """Replace metrics.csv with ``rows`` (reconciling it with last.pt's history)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "epoch": int(row["epoch"])})
        atomic_write_text(self.metrics_path, out.getvalue())

    # -- checkpoints ----------------------------------------------------------------------
    def record_epoch(self, row: dict, state: dict, improved: bool) -> None:
        """One finished epoch, in the order that makes last.pt the authority: last.pt, then
        best.pt if the epoch improved on the best, then the metrics row."""
        data = checkpoint_bytes(state)
        atomic_write_bytes(self.path / "last.pt", data)
        if improved:
            atomic_write_bytes(self.path / "best.pt", data)
        self.append_metrics(row)

    def load_checkpoint(self, filename: str = "last.pt", map_location="cpu") -> dict:
        return load_checkpoint(self.path / filename, map_location)

    def reconcile(self, map_location="cpu") -> dict | None:
        """Check what is on disk adds up and repair what last.pt can re-derive; return last.pt's
        state (None for a run that never finished an epoch). Needs the lock (open_for_writing).

        Refused, with nothing changed: metrics rows or a best.pt without any last.pt; metrics
        rows that last.pt's history does not hold. Repaired: metrics.csv behind last.pt
        (rewritten from its history), best.pt older than last.pt's best epoch (when that best
        epoch is last.pt's own: copied from it).
        """
        assert self.lock is not None, "reconcile needs the run's lock"
        rows = self.read_metric_rows()
        last_path, best_path = self.path / "last.pt", self.path / "best.pt"
        if not last_path.exists():
            if rows or best_path.exists():
                raise RunInconsistent(
                    f"{self.path} has {len(rows)} finished epoch(s) in {METRICS_FILE}"
                    f"{' and a best.pt' if best_path.exists() else ''} but no last.pt to resume from; "
                    f"nothing was changed (restore last.pt, or start a new run)")
            return None
        state = load_checkpoint(last_path, map_location)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise BadCheckpoint(f"{str(last_path)!r} is not a cnnlab checkpoint")
        epoch, history = int(state["epoch"]), state.get("history")
        if history is None:  # written before checkpoints carried the history: trust the rows it covers
            history = rows[:epoch]
            if [row["epoch"] for row in history] != list(range(1, epoch + 1)):
                raise RunInconsistent(f"{self.path}: {METRICS_FILE} does not hold the {epoch} epoch(s) "
                                      f"of last.pt; nothing was changed")
        if [row["epoch"] for row in rows] != [row["epoch"] for row in history[:len(rows)]] \
                or len(rows) > len(history):
            raise RunInconsistent(
                f"{self.path}: {METRICS_FILE} holds epochs {describe_epochs(rows)} but last.pt has "
                f"finished epochs {describe_epochs(history)} (two writers, or files copied between "
                f"runs?); nothing was changed")
        if len(rows) < len(history):  # killed between last.pt and the metrics row
            self.write_metrics(history)
        if state["best_epoch"] == epoch and peek_epoch(best_path) != epoch:  # killed before best.pt
            shutil.copyfile(last_path, self.path / ".best.pt.repair.tmp")
            os.replace(self.path / ".best.pt.repair.tmp", best_path)
        return state


def abandoned(path: Path) -> bool:
    """Whether ``path`` is the directory of a run killed while being created: no config.json,
    nothing but its lock and temporary files (it may be taken over by a new run)."""
    if not path.is_dir() or (path / CONFIG_FILE).exists():
        return False
    return all(p.name == LOCK_FILE or TEMPORARY.fullmatch(p.name) for p in path.iterdir())


def name_taken(path: Path) -> bool:
    """Whether a new run cannot be created at ``path``."""
    return path.exists() and not abandoned(path)


def describe_epochs(rows: list[dict]) -> str:
    epochs = [row["epoch"] for row in rows]
    if not epochs:
        return "none"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])
    return ",".join(map(str, epochs[:12])) + ("..." if len(epochs) > 12 else "")


def run_exists(path: Path) -> RunExists:
    """The error for a run name already taken: runs are never reused or overwritten."""
    return RunExists(f"run {str(path)!r} already exists; choose another --name "
                     f"or continue it with --resume {path}")


# -- checkpoint files -----------------------------------------------------------------------------

def checkpoint_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint safely: tensors and plain containers only, never pickled code."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadCheckpoint(f"checkpoint {str(path)!r} was refused by the safe loader, which takes "
                            f"only tensors and plain containers ({refusal_reason(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise BadCheckpoint(f"checkpoint {str(path)!r} is corrupt or truncated ({first_line(e)})") from None
    if not isinstance(state, dict):
        raise BadCheckpoint(f"checkpoint {str(path)!r} does not hold a cnnlab state dictionary")
    return state


def peek_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds, None if it is missing or unreadable (memory-mapped: cheap)."""
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 -- any unreadable checkpoint is simply "not this epoch"
        return None


def refusal_reason(error: Exception) -> str:
    """The specific line of torch's weights-only refusal (e.g. "Trying to load unsupported GLOBAL
    posix.system ..."), without the boilerplate around it that suggests weights_only=False."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in str(error).splitlines()]
    specific = [line for line in lines if line and not line.startswith(boilerplate)]
    return specific[0] if specific else "not a checkpoint of tensors"


# -- reading runs for plot and compare --------------------------------------------------------------

ProblemHandler = Callable[[str], None]


class RunProblem(UserWarning):
    """A run that was skipped or is compared with blanks (older or damaged files)."""


def warn_problem(message: str) -> None:
    import warnings

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
    from cnnlab.errors import CnnlabError

    on_problem = on_problem or warn_problem
    path = Path(getattr(path, "path", path))
    try:
        run = Run.open(path)
        record = run.read_record()
    except CnnlabError as e:
        on_problem(f"skipped {path}: {e}{_not_a_run_hint(path)}")
        return None
    try:
        metrics = run.read_metrics()
    except (OSError, ValueError) as e:  # unreadable, or not text at all
        on_problem(f"skipped {path}: {run.metrics_path.name} cannot be read ({first_line(e)})")
        return None
    if metrics.empty:
        on_problem(f"skipped {path}: {_why_no_epochs(run)}")
        return None
    missing = [column for column in METRICS_COLUMNS if column not in metrics.columns]
    if missing:
        on_problem(f"{run.name}: metrics.csv has no {', '.join(missing)} column"
                   f"{'s' if len(missing) > 1 else ''} (an older run?); left blank")
    return LoadedRun(run, record, metrics.sort_values("epoch").reset_index(drop=True))


def load_runs(paths: Iterable, on_problem: ProblemHandler | None = None) -> list[LoadedRun]:
    """Every run among ``paths`` that has at least one finished epoch; an error if none."""
    paths = list(paths)
    loaded = [run for run in (load_run(p, on_problem) for p in paths) if run is not None]
    if not loaded:
        count = "the run" if len(paths) == 1 else f"any of the {len(paths)} runs"
        raise NotARun(f"nothing to compare: could not read a finished epoch from {count}")
    return loaded


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
