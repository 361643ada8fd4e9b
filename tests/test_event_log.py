"""--log tensorboard: TensorBoard's own EventAccumulator reads back every epoch's metrics.csv
row once, and the learning rate of every step, also after an interrupted epoch and a resume."""

import csv
import sys

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app

STEPS = 1438 // 64  # the digits' training split in full batches of 64


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


def scalars(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_epoch_once_after_an_interrupted_epoch_and_a_resume(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "tb"
    result = invoke("train", "mlp", "--epochs", "2", "--log", "tensorboard", "--runs-dir", tmp_path, "--name", "tb")
    assert result.exit_code == 0, result.output
    # an epoch 3 that was killed part way: its first steps' rates and a stray value reached the log
    stray = SummaryWriter(str(run_dir / "tensorboard"))
    for step in range(2 * STEPS, 2 * STEPS + 5):
        stray.add_scalar("lr", 99.0, step)
    stray.add_scalar("val_acc", -1.0, 3 * STEPS - 1)
    stray.close()
    result = invoke("train", "--resume", run_dir, "--epochs", "3")
    assert result.exit_code == 0, result.output
    logged = scalars(run_dir)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "images_per_second"):
        assert logged[column] == [(int(row["epoch"]) * STEPS - 1, pytest.approx(float(row[column]), rel=1e-6))
                                  for row in rows], column
    assert [step for step, _ in logged["lr"]] == list(range(3 * STEPS))  # every step once
    rates = dict(logged["lr"])
    for row in rows:  # metrics.csv's lr is the rate of each epoch's first step
        assert rates[(int(row["epoch"]) - 1) * STEPS] == pytest.approx(float(row["lr"]), rel=1e-6)
    assert max(rates.values()) < 99


def test_without_tensorboard_it_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = invoke("train", "mlp", "--epochs", "1", "--log", "tensorboard", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr == "error: --log tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'\n"
    assert not (tmp_path / "runs").exists()
