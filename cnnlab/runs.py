"""The run store: one directory per training run under ``runs/``.

    runs/<name>/config.json   every option, resolved, plus versions and device
    runs/<name>/metrics.csv   one row per finished epoch (METRICS_COLUMNS), flushed each epoch
    runs/<name>/summary.csv   the model's layer table at its training input size
    runs/<name>/last.pt       state after the last finished epoch (for --resume)
    runs/<name>/best.pt       state at the best validation accuracy
    runs/<name>/eval.csv, confusion.csv   written by ``cnnlab eval``

Every file is replaced atomically (written beside, then renamed) except metrics.csv, which is
appended one flushed line per epoch; a crash can only lose the epoch in progress. Checkpoints
are read with ``torch.load(weights_only=True)``, so a crafted file cannot run code.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
import re
import time
from pathlib import Path

from cnnlab.errors import BadCheckpoint, NotARun, RunExists, first_line

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_seconds", "images_per_second"]
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
DEFAULT_RUNS_DIR = "runs"


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
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


class Run:
    """A run directory. Create with ``Run.create``, open an existing one with ``Run.open``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self):
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- creating and opening -------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir, name: str | None = None, *, model: str = "", data: str = "") -> "Run":
        """Make a new, empty run directory; an existing run is never reused or overwritten.

        An explicit ``name`` that exists is an error; the default name
        ``<model>-<data>-<timestamp>`` gets a numeric suffix instead.
        """
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        if name is not None:
            path = runs_dir / name
            try:
                path.mkdir()
            except FileExistsError:
                raise run_exists(path) from None
            return cls(path)
        base = slugify(f"{model}-{Path(data).name or data}-{time.strftime('%Y%m%d-%H%M%S')}")
        for attempt in range(1, 1000):
            path = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise RunExists(f"could not find a free run name under {runs_dir}")

    @classmethod
    def open(cls, path) -> "Run":
        """Open an existing run; anything without a config.json is not a run."""
        path = Path(path)
        if not path.is_dir():
            raise NotARun(f"{str(path)!r} is not a directory")
        if not (path / CONFIG_FILE).is_file():
            raise NotARun(f"{str(path)!r} is not a cnnlab run (no {CONFIG_FILE})")
        return cls(path)

    # -- config ---------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_text(self.path / CONFIG_FILE, json.dumps(config, indent=2, default=str) + "\n")

    def read_config(self) -> dict:
        try:
            return json.loads((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise NotARun(f"{self.path / CONFIG_FILE} cannot be read: {e}") from None

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

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep only rows up to ``last_epoch`` (used on resume, to match last.pt)."""
        rows = [row for row in self.read_metric_rows() if row["epoch"] <= last_epoch]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "epoch": int(row["epoch"])})
        atomic_write_text(self.metrics_path, out.getvalue())

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, filename: str, state: dict) -> None:
        """torch.save to a temporary file, then rename: a crash never leaves half a file."""
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.path / filename, buffer.getvalue())

    def load_checkpoint(self, filename: str = "last.pt", map_location="cpu") -> dict:
        return load_checkpoint(self.path / filename, map_location)


def run_exists(path: Path) -> RunExists:
    """The error for a run name already taken: runs are never reused or overwritten."""
    return RunExists(f"run {str(path)!r} already exists; choose another --name "
                     f"or continue it with --resume {path}")


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


def refusal_reason(error: Exception) -> str:
    """The specific line of torch's weights-only refusal (e.g. "Trying to load unsupported GLOBAL
    posix.system ..."), without the boilerplate around it that suggests weights_only=False."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    specific = [line for line in lines if line and not line.startswith(boilerplate)]
    return specific[0] if specific else "not a checkpoint of tensors"


def list_runs(runs_dir=DEFAULT_RUNS_DIR, pattern: str = "*") -> list[Run]:
    """Runs directly under ``runs_dir`` whose names match ``pattern``, sorted by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [Run(p) for p in sorted(runs_dir.iterdir())
            if p.is_dir() and fnmatch.fnmatch(p.name, pattern) and (p / CONFIG_FILE).is_file()]
