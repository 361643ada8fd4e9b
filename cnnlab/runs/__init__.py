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
Whatever is read back is checked before it is used or anything is written: config.json's values
against each other (record.py), each checkpoint field by field and against the run's config.json
(checkpoint.py; a file from another run, or a config.json edited since, is refused), and on resume
config.json against what the data gives now (training.py). Checkpoints are read with
``torch.load(weights_only=True)``, so a crafted file cannot run code.

The modules, each readable alone: files.py (atomic writes, the lock), record.py (config.json),
checkpoint.py (last.pt and best.pt), metrics.py (metrics.csv), run.py (a run directory: claiming,
opening, recording an epoch, reconciling), reading.py (many runs for plot and compare).
"""

from cnnlab.runs.checkpoint import Checkpoint, peek_epoch
from cnnlab.runs.files import RunLock, atomic_write_bytes, atomic_write_text, slugify
from cnnlab.runs.metrics import METRICS_COLUMNS, METRICS_FILE, MetricsLog
from cnnlab.runs.reading import LoadedRun, ProblemHandler, RunProblem, list_runs, load_run, load_runs, warn_problem
from cnnlab.runs.record import CONFIG_FILE, RunRecord
from cnnlab.runs.run import Run, name_taken, run_exists, usable_runs_dir

__all__ = ["CONFIG_FILE", "Checkpoint", "LoadedRun", "METRICS_COLUMNS", "METRICS_FILE", "MetricsLog", "ProblemHandler",
           "Run", "RunLock", "RunProblem", "RunRecord", "atomic_write_bytes", "atomic_write_text", "list_runs",
           "load_run", "load_runs", "name_taken", "peek_epoch", "run_exists", "slugify", "usable_runs_dir", "warn_problem"]
