"""A run directory: claiming a new one, opening an existing one, recording an epoch, and
reconciling what a killed writer left behind (see cnnlab/runs/__init__.py for the guarantees)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from cnnlab.errors import NotARun, RunBusy, RunExists, RunInconsistent
from cnnlab.runs.checkpoint import Checkpoint, peek_epoch
from cnnlab.runs.files import LOCK_FILE, TEMPORARY, RunLock, atomic_write_bytes, atomic_write_text, slugify
from cnnlab.runs.metrics import METRICS_FILE, MetricsLog
from cnnlab.runs.record import CONFIG_FILE, RunRecord, read_record


class Run:
    """A run directory. Create with ``Run.create``, open an existing one with ``Run.open``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock: RunLock | None = None
        self.metrics = MetricsLog(self.path / METRICS_FILE)

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
        runs_dir = usable_runs_dir(runs_dir)
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
            raise NotARun(f"{str(path)!r} is not a directory" if path.exists() else f"{str(path)!r} does not exist")
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
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def write_record(self, record: RunRecord) -> None:
        atomic_write_text(self.config_path, json.dumps(record.to_json(), indent=2) + "\n")

    def read_record(self) -> RunRecord:
        return read_record(self.config_path)

    # -- checkpoints ----------------------------------------------------------------------
    def record_epoch(self, row: dict, checkpoint: Checkpoint, improved: bool) -> None:
        """One finished epoch, in the order that makes last.pt the authority: last.pt, then
        best.pt if the epoch improved on the best, then the metrics row."""
        data = checkpoint.to_bytes()
        atomic_write_bytes(self.path / "last.pt", data)
        if improved:
            atomic_write_bytes(self.path / "best.pt", data)
        self.metrics.append(row)

    def checkpoint(self, which: str = "last", map_location="cpu") -> Checkpoint:
        """``which`` (last or best) of this run, checked against the run's config.json."""
        path = self.path / f"{which}.pt"
        checkpoint = Checkpoint.read(path, map_location)
        checkpoint.check_belongs(self.read_record(), path, self.config_path)
        return checkpoint

    def reconcile(self, map_location="cpu") -> Checkpoint | None:
        """Check what is on disk adds up and repair what last.pt can re-derive; return last.pt
        (None for a run that never finished an epoch). Needs the lock (open_for_writing).

        Refused, with nothing changed: a last.pt or best.pt that is unreadable or not of this
        run (another run's file, or a config.json edited since); metrics rows or a best.pt
        without any last.pt; metrics rows that last.pt's history does not hold. Repaired:
        metrics.csv behind last.pt (rewritten from its history), best.pt older than last.pt's
        best epoch (when that best epoch is last.pt's own: copied from it).
        """
        assert self.lock is not None, "reconcile needs the run's lock"
        record = self.read_record()
        rows = self.metrics.rows()
        last_path, best_path = self.path / "last.pt", self.path / "best.pt"
        if not last_path.exists():
            if rows or best_path.exists():
                raise RunInconsistent(
                    f"{self.path} has {len(rows)} finished epoch(s) in {METRICS_FILE}"
                    f"{' and a best.pt' if best_path.exists() else ''} but no last.pt to resume from; "
                    f"nothing was changed (restore last.pt, or start a new run)")
            return None
        last = Checkpoint.read(last_path, map_location)
        last.check_belongs(record, last_path, self.config_path)
        best_needs_copy = last.best_epoch == last.epoch and peek_epoch(best_path) != last.epoch
        if best_path.exists() and not best_needs_copy:
            Checkpoint.read(best_path, "cpu").check_belongs(record, best_path, self.config_path)
        history = last.history
        if history is None:  # written before checkpoints carried the history: trust the rows it covers
            history = rows[:last.epoch]
            if [row["epoch"] for row in history] != list(range(1, last.epoch + 1)):
                raise RunInconsistent(f"{self.path}: {METRICS_FILE} does not hold the {last.epoch} epoch(s) "
                                      f"of last.pt; nothing was changed")
        if [row["epoch"] for row in rows] != [row["epoch"] for row in history[:len(rows)]] \
                or len(rows) > len(history):
            raise RunInconsistent(
                f"{self.path}: {METRICS_FILE} holds epochs {describe_epochs(rows)} but last.pt has "
                f"finished epochs {describe_epochs(history)} (two writers, or files copied between "
                f"runs?); nothing was changed")
        if len(rows) < len(history):  # killed between last.pt and the metrics row
            self.metrics.replace(history)
        if best_needs_copy:  # killed before best.pt, or best.pt damaged: last.pt holds the best epoch
            shutil.copyfile(last_path, self.path / ".best.pt.repair.tmp")
            os.replace(self.path / ".best.pt.repair.tmp", best_path)
        last.history = history
        return last


def usable_runs_dir(runs_dir) -> Path:
    """``runs_dir``, created if needed; one line when it cannot hold runs."""
    runs_dir = Path(runs_dir)
    blocking = next((p for p in (runs_dir, *runs_dir.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise NotARun(f"--runs-dir {runs_dir} cannot hold runs: {blocking} is a file, not a directory")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NotARun(f"--runs-dir {runs_dir} cannot be created ({e.strerror or e})") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise NotARun(f"--runs-dir {runs_dir} is not writable by this user")
    return runs_dir


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
