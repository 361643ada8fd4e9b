"""The run store never loses a finished epoch: kill -9 and SIGTERM at random instants, two
writers, a full disk, missing, foreign or temporary files, names that would leave --runs-dir,
and hand-edited config files."""

import errno
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab.runs.metrics import TIMING_COLUMNS
from cnnlab.runs import run as run_module
from cnnlab.cli import app
from cnnlab.config import TrainConfig
from cnnlab.errors import BadCheckpoint, RunBusy, RunWriteFailed, UsageError
from cnnlab.evaluation import evaluate
from cnnlab.runs import Run, RunLock, peek_epoch
from cnnlab.training import resume, train
from processes import default_signals

runner = CliRunner()
EPOCHS = 12


def curve(run: Run) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in run.metrics.rows()]


def small(tmp_path, **options) -> TrainConfig:
    return TrainConfig(**{"model": "mlp", "epochs": 2, "runs_dir": str(tmp_path), **options})


def assert_consistent(path: Path) -> int:
    """Open the run as a resuming writer does (lock, reconcile) and check that metrics.csv,
    last.pt and best.pt agree; the number of finished epochs."""
    run = Run(path).open_for_writing()
    try:
        state = run.reconcile()
        rows = run.metrics.rows()
        finished = 0 if state is None else state.epoch
        assert [row["epoch"] for row in rows] == list(range(1, finished + 1))
        if finished:
            best = max(rows, key=lambda row: row["val_acc"])  # the first of equals, as training keeps it
            assert state.best_epoch == best["epoch"] == peek_epoch(path / "best.pt")
            assert [row["epoch"] for row in state.history] == [row["epoch"] for row in rows]
        assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]
        return finished
    finally:
        run.release()


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every crashed one must end up equal to."""
    return train(TrainConfig(model="mlp", epochs=EPOCHS, schedule="constant", crop_padding=1, flip=True,
                             runs_dir=str(tmp_path_factory.mktemp("whole"))), progress="none")


KILLS = EPOCHS // 2  # how many kills the test needs to have landed, SIGTERM inside the loop among them


@pytest.mark.slow
def test_kill_9_and_sigterm_at_random_instants_never_lose_or_split_an_epoch(whole, tmp_path):
    """Each cycle trains (or resumes) the run in a fresh process and kills it, alternately with
    SIGKILL and SIGTERM: usually at a random instant of the epoch after the one it finished first
    (so every phase of training and recording gets hit), every fourth time in its start-up.
    How many kills land before a run finishes depends on the machine's speed, so runs are
    trained until KILLS kills have landed (each run ending equal to the uninterrupted one)."""
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("train_server.py"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=default_signals)
    chance = random.Random(2024)
    kills, terminated_cleanly = 0, 0
    try:
        assert server.stdout.readline().strip() == "ready"
        for attempt in range(4):  # a bound, never reached but on a pathological machine
            run = Run(tmp_path / f"crash{attempt}")
            landed, cleanly = kill_until_finished(server, run, chance, first_kill=kills)
            kills, terminated_cleanly = kills + landed, terminated_cleanly + cleanly
            assert curve(run) == curve(whole)
            if kills >= KILLS and terminated_cleanly >= 1:
                break
        assert kills >= KILLS and terminated_cleanly >= 1, (kills, terminated_cleanly)
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def kill_until_finished(server, run: Run, chance: random.Random, first_kill: int) -> tuple[int, int]:
    """Train ``run`` to EPOCHS through ``server``, killing each process; (kills that landed,
    SIGTERMs handled inside the loop)."""
    kills, finished, terminated_cleanly = first_kill, 0, 0
    stderr_path = run.path.parent / "stderr.txt"
    while finished < EPOCHS:
        request = dict(runs_dir=str(run.path.parent), name=run.name, epochs=EPOCHS, stderr=str(stderr_path))
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        pid = int(server.stdout.readline())
        if kills % 4 == 3:
            time.sleep(chance.uniform(0.0, 0.3))
        else:
            deadline = time.monotonic() + 600  # only a hung process waits this long: then it is killed
            while len(run.metrics.rows()) <= finished and time.monotonic() < deadline:
                if select.select([server.stdout], [], [], 0.005)[0]:  # it ended by itself
                    break
            rows = run.metrics.rows()
            time.sleep(chance.uniform(0.0, rows[-1]["epoch_seconds"] if rows else 0.1))
        try:
            os.kill(pid, signal.SIGKILL if kills % 2 == 0 else signal.SIGTERM)
            kills += 1
        except ProcessLookupError:  # it finished first
            pass
        code = int(server.stdout.readline())
        stderr = stderr_path.read_text()
        if code == 143:  # SIGTERM inside the loop: handled like Ctrl-C, with one line
            terminated_cleanly += 1
            line, = stderr.strip().splitlines()
            assert line.startswith("error: terminated; ") and "cnnlab train --resume" in line
        else:
            assert code in (0, -signal.SIGKILL, -signal.SIGTERM), stderr
        if (run.path / "config.json").exists():
            finished = assert_consistent(run.path)
    return kills - first_kill, terminated_cleanly


# -- two writers, stale locks ---------------------------------------------------------------------

def test_a_second_writer_is_refused_with_the_holders_process_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run = train(small(tmp_path, name="r"), progress="none")
    before = curve(run)
    with RunLock(run.path):  # another process training it right now
        with pytest.raises(RunBusy, match=f"being written by process {os.getpid()}"):
            resume(run.path, epochs=3, progress="none")
        result = runner.invoke(app, ["train", "--resume", str(run.path), "--epochs", "3"])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "being written by process" in result.stderr
    assert curve(run) == before
    (run.path / ".lock").write_text("process 999999")  # a killed writer: its flock went with it
    assert len(resume(run.path, epochs=3, progress="none").metrics.rows()) == 3


# -- what the disk can do to a run ------------------------------------------------------------------

def test_a_full_disk_stops_with_one_line_and_keeps_the_epochs_before(tmp_path, monkeypatch):
    written = []
    real_write = run_module.atomic_write_bytes

    def disk_full_at_epoch_2(path, data):
        if Path(path).name == "last.pt":
            written.append(path)
            if len(written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(run_module, "atomic_write_bytes", disk_full_at_epoch_2)
    with pytest.raises(RunWriteFailed, match="could not record epoch 2 .*No space left on device.*the 1 epoch"):
        train(small(tmp_path, epochs=3, name="full"), progress="none")
    monkeypatch.undo()
    assert assert_consistent(tmp_path / "full") == 1
    assert len(resume(tmp_path / "full", progress="none").metrics.rows()) == 3


class Killed(BaseException):
    """kill -9 at one exact instant: nothing after it runs (no handler catches a BaseException)."""


def test_a_kill_between_last_pt_and_best_pt_is_repaired_from_last_pt(tmp_path, monkeypatch):
    epochs_written = []
    real_write = run_module.atomic_write_bytes

    def killed_before_a_later_best(path, data):
        name = Path(path).name
        if name == "best.pt" and len(epochs_written) >= 2:  # an epoch after the first improved
            raise Killed
        epochs_written.extend([name] if name == "last.pt" else [])
        real_write(path, data)

    monkeypatch.setattr(run_module, "atomic_write_bytes", killed_before_a_later_best)
    with pytest.raises(Killed):
        train(small(tmp_path, epochs=EPOCHS, name="r"), progress="none")
    monkeypatch.undo()
    run = Run(tmp_path / "r")
    killed_at = len(epochs_written)
    assert peek_epoch(run.path / "last.pt") == killed_at and peek_epoch(run.path / "best.pt") < killed_at
    assert len(run.metrics.rows()) == killed_at - 1  # the row comes last
    assert assert_consistent(run.path) == killed_at  # the row rewritten, best.pt copied from last.pt
    assert peek_epoch(run.path / "best.pt") == killed_at


def test_leftover_temporary_files_are_removed_and_a_run_killed_while_being_created_can_be_reused(tmp_path):
    run = train(small(tmp_path, name="r"), progress="none")
    (run.path / ".last.pt.4242.tmp").write_bytes(b"half a checkpoint")
    resume(run.path, epochs=3, progress="none")
    assert not list(run.path.glob("*.tmp"))
    # killed between making the directory and writing config.json: only its lock is there
    (tmp_path / "born").mkdir()
    (tmp_path / "born" / ".lock").write_text("process 999999")
    (tmp_path / "born" / ".config.json.999999.tmp").write_text("{")
    reborn = train(small(tmp_path, name="born", epochs=1), progress="none")
    assert len(reborn.metrics.rows()) == 1 and not list(reborn.path.glob("*.tmp"))


def test_eval_refuses_another_runs_checkpoint_dropped_into_a_run(tmp_path):
    mine = train(small(tmp_path, name="mine", epochs=1), progress="none")
    other = train(small(tmp_path, name="other", epochs=1, model="lenet_relu"), progress="none")
    (mine.path / "best.pt").write_bytes((other.path / "best.pt").read_bytes())
    with pytest.raises(BadCheckpoint, match="belongs to another run"):
        evaluate(mine.path, checkpoint="best")
    assert not (mine.path / "eval.csv").exists()
    assert evaluate(mine.path).top1 == mine.metrics.rows()[-1]["val_acc"]


# -- names and values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--name", "../escape"], "--name must be one plain name"),
    (["--name", "/tmp/absolute"], "--name must be one plain name"),
    (["--name", ".hidden"], "--name must be one plain name"),
    (["--epochs", "0"], "--epochs must be at least 1, not 0"),
    (["--epochs", "-3"], "--epochs must be at least 1"),
    (["--epochs", "10000000000"], "--epochs must be at most"),
    (["--lr", "nan"], "--lr must be a finite number, not nan"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--lr", "-1"], "--lr must be above 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--resize", "100000"], "--resize must be at most 4096"),
    (["--weight-decay", "-0.1"], "--weight-decay must be at least 0"),
    (["--momentum", "1.5"], "--momentum must be at most 1"),
    (["--label-smoothing", "1"], "--label-smoothing must be at most 0.999"),
    (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number"),
    (["--clip-grad", "0"], "--clip-grad must be above 0"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--crop-padding", "-1"], "--crop-padding must be at least 0"),
])
def test_extreme_values_are_one_line_before_anything_is_written(tmp_path, args, message):
    result = runner.invoke(app, ["train", "mlp", "--runs-dir", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_a_wrong_type_in_the_typer_layer_stays_a_short_usage_error(tmp_path):
    result = runner.invoke(app, ["train", "mlp", "--epochs", "many", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Invalid value for '--epochs'" in result.output
    assert len(result.output.strip().splitlines()) <= 6 and "Traceback" not in result.output


@pytest.mark.parametrize("field, value, message", [
    ("epochs", "30", "epochs is '30', not int"),
    ("lr", "fast", "lr is 'fast', not float (or null)"),
    ("batch_size", 1.5, "batch_size is 1.5, not int"),
    ("lr", float("inf"), "--lr must be a finite number"),
    ("optimizer", "rmsprop", "optimizer is 'rmsprop', not one of sgd, adam, adamw"),
    ("name", "../../etc", "--name must be one plain name"),
    ("input_size", [1, 28], "input_size is [1, 28], not [channels, height, width]"),
])
def test_a_hand_edited_config_is_one_line_and_changes_nothing(tmp_path, field, value, message):
    run = train(small(tmp_path, name="r", epochs=1), progress="none")
    saved = json.loads((run.path / "config.json").read_text())
    saved[field] = value
    (run.path / "config.json").write_text(json.dumps(saved))
    files = {p.name: p.read_bytes() for p in run.path.iterdir()}
    result = runner.invoke(app, ["train", "--resume", str(run.path), "--epochs", "2"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == files


def test_the_resume_rule_and_python_resume_match_the_cli(tmp_path):
    run = train(small(tmp_path, name="r", epochs=1), progress="none")
    with pytest.raises(UsageError, match="--seed cannot change"):
        run.read_record().options.resumed(1, seed=3)
    resumed = resume(run.path, epochs=2, device="cpu", progress="none")
    assert resumed.read_record().options.epochs == 2 and len(resumed.metrics.rows()) == 2
