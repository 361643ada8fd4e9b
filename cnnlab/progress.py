"""How training reports its progress: one plain line per epoch (logs, pipes, tests), or a live
rich progress bar on a terminal. The loop calls the same five methods on either."""

from __future__ import annotations

import os
import sys
import time

from cnnlab.errors import UsageError


def format_row(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  "
            f"lr {row['lr']:.3g}  {row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s")


class PlainLines:
    """One line per epoch on stdout: for logs, pipes and tests."""

    refresh_seconds = 10.0  # how often the loop reads its sums mid-epoch (to stop on NaN early)

    def __init__(self, quiet: bool = False, final_only: bool = False):
        self.quiet, self.final_only = quiet, final_only
        self.last_refresh = time.monotonic()

    def print(self, text: str) -> None:
        if not self.final_only:
            self.write(text)

    def write(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(text, flush=True)
        except OSError:  # stdout closed (`cnnlab train ... | head`) or its device full: training goes on
            self.quiet = True
            discard_stdout()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last_refresh < self.refresh_seconds:
            return False
        self.last_refresh = now
        return True

    def start(self, text: str) -> None:
        self.print(text)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.last_refresh = time.monotonic()

    def step(self, step: int, loss: float, acc: float, images_per_second: float) -> None:
        pass

    def epoch_end(self, row: dict, epochs: int) -> None:
        self.print(format_row(row, epochs))

    def close(self) -> None:
        pass

    def finish(self, run, best_val_acc: float, best_epoch: int) -> None:
        if best_epoch:
            self.write(f"best val_acc {best_val_acc:.4f} at epoch {best_epoch}; run saved in {run.path}")


def run_seconds_left(step: int, steps: int, epoch: int, epochs: int, epoch_seconds: float,
                     finished_epoch_seconds: list[float]) -> float:
    """The whole run's time left at ``step`` of ``steps`` in ``epoch`` of ``epochs``, this epoch
    having run ``epoch_seconds``: the epoch's rest at its own pace, then each later epoch as long
    as the epochs finished in this process took (evaluation included), or as this one's steps
    would take before any has finished."""
    per_step = epoch_seconds / max(step, 1)
    later_epoch = (sum(finished_epoch_seconds) / len(finished_epoch_seconds) if finished_epoch_seconds
                   else per_step * steps)
    return per_step * (steps - step) + later_epoch * (epochs - epoch)


def clock(seconds: float) -> str:
    """3725 -> '1:02:05', 75 -> '1:15'."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class RichProgress(PlainLines):
    """A live bar for the epoch in progress (batch, loss, acc, images/s, the epoch's and the whole
    run's time left); epoch lines above."""

    refresh_seconds = 0.25

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        super().__init__()
        self.bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}  "
                                       "{task.fields[speed]:.0f} img/s"),
                            TimeRemainingColumn(), TextColumn("run {task.fields[run_left]} left"), transient=True)
        self.task = None
        self.epoch_seconds: list[float] = []  # the epochs finished in this process, evaluation included
        self.epoch, self.epochs, self.steps, self.epoch_started = 0, 0, 0, time.monotonic()
        self.bar.start()

    def write(self, text: str) -> None:
        self.bar.console.print(text, highlight=False)  # wrapped between words at the terminal's width

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        super().epoch_start(epoch, epochs, steps)
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.epoch, self.epochs, self.steps, self.epoch_started = epoch, epochs, steps, time.monotonic()
        self.task = self.bar.add_task("", total=steps, epoch=f"{epoch}/{epochs}", loss=0.0, acc=0.0, speed=0.0,
                                      run_left="-:--")

    def step(self, step: int, loss: float, acc: float, images_per_second: float) -> None:
        left = run_seconds_left(step, self.steps, self.epoch, self.epochs, time.monotonic() - self.epoch_started,
                                self.epoch_seconds)
        self.bar.update(self.task, completed=step, loss=loss, acc=acc, speed=images_per_second, run_left=clock(left))

    def epoch_end(self, row: dict, epochs: int) -> None:
        self.epoch_seconds.append(time.monotonic() - self.epoch_started)
        super().epoch_end(row, epochs)

    def close(self) -> None:
        self.bar.stop()


def discard_stdout() -> None:
    """Point the process's stdout at /dev/null, so that what is still buffered, and the
    interpreter's last flush, go nowhere instead of failing again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor behind it (a test's capture)
        pass


def make_reporter(progress: str) -> PlainLines:
    """auto (a bar on a terminal, plain lines otherwise), rich, plain, final (the last line
    only: where the run was saved and its best accuracy) or none."""
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "plain"
    if progress == "rich":
        return RichProgress()
    if progress in ("plain", "none", "final"):
        return PlainLines(quiet=progress == "none", final_only=progress == "final")
    raise UsageError(f"progress must be auto, rich, plain, final or none, not {progress!r}")
