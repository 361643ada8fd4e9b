"""``--log tensorboard``: TensorBoard event files in the run's ``tensorboard/`` folder, so that
``tensorboard --logdir runs`` compares runs as it compares any others.

Every scalar is plotted against the optimiser step: each metrics.csv column once per epoch, at
the epoch's last step, and the learning rate at every step (get_lr, the value the optimiser was
given). The options go in once, as TensorBoard's hyper-parameters. A resumed run opens the log
with ``purge_step`` at the first step it trains again, so TensorBoard drops whatever an
interrupted epoch had logged past it: every epoch appears once.

The writer is PyTorch's (torch.utils.tensorboard), which needs the ``tensorboard`` package: the
optional extra ``cnnlab[tensorboard]``.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import UsageError

FOLDER = "tensorboard"
INSTALL = "pip install 'cnnlab[tensorboard]'"
NOT_PLOTTED = ("epoch", "lr")  # the x axis, and the rate that is logged per step instead


def require_tensorboard() -> None:
    """A one-line error, before anything is written, where the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError(f"--log tensorboard needs the tensorboard package: {INSTALL}") from None


class EventLog:
    """The event files of one run, from ``first_step`` (0 for a new run) on."""

    def __init__(self, run_path: Path, first_step: int, steps_per_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.steps_per_epoch = steps_per_epoch
        self.writer = SummaryWriter(str(Path(run_path) / FOLDER), purge_step=first_step or None)

    def options(self, options: dict) -> None:
        """The run's options as hyper-parameters (None shown as 'none'), linked to val_acc."""
        from torch.utils.tensorboard.summary import hparams

        shown = {name: value if isinstance(value, (int, float, str, bool)) else str(value).lower()
                 for name, value in options.items()}
        for summary in hparams(shown, {"val_acc": 0.0}):
            self.writer.file_writer.add_summary(summary)

    def epoch(self, row: dict, rates: list[float]) -> None:
        """One finished epoch: its metrics row and the learning rate of each of its steps."""
        first = (row["epoch"] - 1) * self.steps_per_epoch
        for step, rate in enumerate(rates, start=first):
            self.writer.add_scalar("lr", rate, step)
        for name, value in row.items():
            if name not in NOT_PLOTTED:
                self.writer.add_scalar(name, value, first + self.steps_per_epoch - 1)
        self.writer.flush()  # an epoch on disk in metrics.csv is on disk here too

    def close(self) -> None:
        self.writer.close()
