"""metrics.csv: one row per finished epoch, appended and forced to disk as each epoch ends."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from cnnlab.errors import RunInconsistent, first_line
from cnnlab.runs.files import atomic_write_text

METRICS_FILE = "metrics.csv"
# train_tflops: the training FLOPs (cnnlab.summary.cost) done per second of the training pass;
# utilisation: that over the device's peak (config.json's device_peak). Runs written before
# these two columns lack them: readers take a missing or empty cell as not measured.
METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_seconds", "images_per_second", "train_tflops", "utilisation"]
TIMING_COLUMNS = ("epoch_seconds", "images_per_second", "train_tflops", "utilisation")  # vary run to run
COST_COLUMNS = ("train_tflops", "utilisation")


class MetricsLog:
    """A run's metrics.csv."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        """Append one epoch's row and force it to disk (header first on a new file)."""
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if not new_file and self._header() != METRICS_COLUMNS:  # an older run's file: rewritten with the columns
            self.replace(self.rows())
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS, extrasaction="raise")
            if new_file:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in METRICS_COLUMNS})  # "": not measured
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict]:
        """Complete epoch rows as dicts of floats (epoch as int).

        A truncated last line (a crash while appending) is dropped, and so is any row that
        does not parse: the epochs before it stay readable. A file that is not text at all is
        RunInconsistent (one line).
        """
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise RunInconsistent(f"{self.path} cannot be read ({first_line(e)}); move it away and "
                                  f"--resume rewrites it from last.pt") from None
        if text and not text.endswith("\n"):  # the last line was cut short
            text = text[: text.rfind("\n") + 1]
        rows = []
        for raw in csv.DictReader(io.StringIO(text)):
            try:  # only the cost columns may be empty (not measured): any other gap is a damaged row
                row = {key: float(value) for key, value in raw.items()
                       if key is not None and not (key in COST_COLUMNS and value in ("", None))}
                row["epoch"] = int(row["epoch"])
            except (TypeError, ValueError, KeyError, OverflowError):
                break
            rows.append(row)
        return rows

    def _header(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])

    def frame(self):
        """metrics.csv as a pandas DataFrame (empty, with the columns, if no epoch finished)."""
        import pandas as pd

        rows = self.rows()
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=METRICS_COLUMNS)

    def replace(self, rows: list[dict]) -> None:
        """Replace metrics.csv with ``rows`` (reconciling it with last.pt's history)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "epoch": int(row["epoch"])})
        atomic_write_text(self.path, out.getvalue())
