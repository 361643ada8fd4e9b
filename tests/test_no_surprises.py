"""Nothing changes behind the user's back: a recipe's warm-up is cut to a fifth of a short run
and says so, a resume that lengthens the run says what happens to the schedule, eval and show
use the same checkpoint and name it, compare counts the experiment runs it leaves out, and the
progress bar's time left is the whole run's."""

import csv
import inspect
import math

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app, evaluate, show
from cnnlab.progress import run_seconds_left
from synthetic_runs import make_run

STEPS = 1438 // 64  # the digits' training split in full batches of 64: 22 steps an epoch


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def lr_column(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two epochs of the MLP with the small recipe (lr 0.01, a 2-epoch warm-up, cosine)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = invoke("train", "mlp", "--epochs", "2", "--runs-dir", runs_dir, "--name", "short")
    return runs_dir / "short", result.stdout


def test_a_recipes_warmup_longer_than_a_fifth_of_the_run_is_cut_with_a_note(short_run):
    run_dir, output = short_run
    assert "warm-up shortened from the recipe's 2 epoch(s) to 0.4, a fifth of this 2-epoch run" in output
    # metrics.csv's lr is each epoch's first step: a warm-up of round(0.4 * 22) = 9 steps, then cosine
    warmup = round(0.4 * STEPS)
    assert lr_column(run_dir) == pytest.approx([0.01 / warmup,
                                                0.01 * (1 + math.cos(math.pi * (STEPS - warmup) / (2 * STEPS - warmup))) / 2])


def test_an_explicit_warmup_is_kept(tmp_path):
    output = invoke("train", "mlp", "--epochs", "1", "--warmup-epochs", "1", "--runs-dir", tmp_path,
                    "--name", "kept").stdout
    assert "shortened" not in output
    assert lr_column(tmp_path / "kept") == pytest.approx([0.01 / STEPS])


def test_a_resume_that_lengthens_the_run_says_the_schedule_is_replanned(short_run, tmp_path):
    import shutil

    run_dir = tmp_path / "short"
    shutil.copytree(short_run[0], run_dir)
    output = invoke("train", "--resume", run_dir, "--epochs", "4").stdout
    warmup = round(0.4 * STEPS)
    replanned = 0.01 * (1 + math.cos(math.pi * (2 * STEPS - warmup) / (4 * STEPS - warmup))) / 2
    assert f"2 of 2 planned epochs done, now 4: the cosine schedule is re-planned over 4 epochs " \
           f"(the next step's learning rate {replanned:.3g}, not 0)" in output
    assert lr_column(run_dir)[2] == pytest.approx(replanned)


def test_eval_and_show_default_to_the_same_checkpoint_and_name_it(short_run):
    defaults = {inspect.signature(command).parameters["checkpoint"].default for command in (evaluate, show)}
    assert len(defaults) == 1
    run_dir, _ = short_run
    assert invoke("eval", run_dir).stdout.startswith(f"{run_dir / 'last.pt'} (epoch 2)")
    result = invoke("show", "errors", run_dir, "--count", "4", "--out", run_dir.parent / "errors.png")
    assert "(short, last.pt, epoch 2)" in result.stderr


def test_compare_counts_the_experiment_runs_it_leaves_out(tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "lenet-a")
    for name in ("mlp-1", "mlp-2"):
        make_run(runs_dir / "depth-20260101-120000", name, model="mlp")
    result = invoke("compare", "--runs-dir", runs_dir, "--format", "csv")
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == ["lenet-a"]
    assert (f"left out 2 runs inside 1 experiment folder under {runs_dir} (depth-20260101-120000); "
            f"compare one with --runs-dir {runs_dir / 'depth-20260101-120000'}") in result.stderr
    nested = invoke("compare", "--runs-dir", runs_dir / "depth-20260101-120000", "--format", "csv").stdout
    assert len(nested.splitlines()) == 3


def test_the_time_left_is_the_whole_runs():
    # half of the first of 3 epochs of 10 steps, 1 s a step: 5 s of this epoch and 2 more of 10 s
    assert run_seconds_left(5, 10, 1, 3, 5.0, []) == pytest.approx(25.0)
    # once an epoch has finished (12 s with its evaluation), later epochs are expected to take as long
    assert run_seconds_left(5, 10, 2, 3, 5.0, [12.0]) == pytest.approx(5.0 + 12.0)
    assert run_seconds_left(10, 10, 3, 3, 9.0, [12.0, 11.0]) == 0
