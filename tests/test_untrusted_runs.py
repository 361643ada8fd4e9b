"""A run store that trusts nothing it reads back: files copied between runs, a hand-edited
config.json, text or random bytes where a checkpoint or metrics.csv should be. Each ends in a
repair or one line, changes nothing, and leaves no later command to fail on what an earlier one
accepted (the damage walk at the end)."""

import json
import os
import random
import re
import shutil
import signal
import time

import pytest
import torch
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import TrainConfig
from cnnlab.errors import BadCheckpoint, RunInconsistent
from cnnlab.evaluation import evaluate
from cnnlab.runs import Checkpoint, Run
from cnnlab.training import resume, train
from processes import start

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(directory) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def one_line_error(result) -> str:
    """The error line of a failed command: exactly one line on stderr, no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs of the same model, options and data, differing only in their seed."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return [train(TrainConfig(model="mlp", epochs=2, seed=seed, name=f"seed{seed}", runs_dir=str(runs_dir)),
                  progress="none") for seed in (0, 1)]


@pytest.fixture
def copy_of(tmp_path):
    def copy(run: Run, name: str = "copy") -> Run:
        shutil.copytree(run.path, tmp_path / name)
        return Run(tmp_path / name)
    return copy


# -- another run's checkpoint ---------------------------------------------------------------------

@pytest.mark.parametrize("which", ["last", "best"])
def test_resume_refuses_another_runs_checkpoint_and_changes_nothing(two_runs, copy_of, which):
    run = copy_of(two_runs[0])
    shutil.copyfile(two_runs[1].path / f"{which}.pt", run.path / f"{which}.pt")
    before = snapshot(run.path)
    with pytest.raises(BadCheckpoint, match=f"{which}.pt belongs to another run \\(seed1, .*not to the run of"):
        resume(run.path, epochs=3, progress="none")
    message = one_line_error(cli("train", "--resume", run.path, "--epochs", 3))
    assert "belongs to another run" in message and "nothing was changed" in message
    assert snapshot(run.path) == before
    assert "belongs to another run" in one_line_error(cli("eval", run.path, "--checkpoint", which))


# -- a hand-edited config.json -------------------------------------------------------------------------

EDITS = {  # key -> (value written into config.json, what the one line says)
    "num_classes": [("ten", "num_classes is \"ten\", not a positive integer"),
                    (7, "num_classes is 7 but classes names 10")],
    "mean": [(float("nan"), "mean is NaN, not a list"), ([float("nan")], "mean is \\[NaN\\], not a list of finite"),
             ([0.5], "disagrees with (last|best).pt.*mean")],
    "std": [([0], "std is \\[0\\], not a list of positive"), ([2.0, 1.0], "std has 2 value\\(s\\) for 1 channel")],
    "classes": [(list("abcdefghij"), "disagrees with (last|best).pt.*classes")],
    "input_size": [([1, 32, 32], "disagrees with (last|best).pt.*input_size")],
}


@pytest.mark.parametrize("key,value,says", [(key, value, says) for key, edits in EDITS.items() for value, says in edits])
def test_an_edited_config_json_is_one_line_for_resume_and_eval_and_changes_nothing(
        two_runs, copy_of, tmp_path, key, value, says):
    run = copy_of(two_runs[0])
    config = json.loads(run.config_path.read_text())
    config[key] = value
    run.config_path.write_text(json.dumps(config))  # NaN as JSON's extension writes it
    before = snapshot(run.path)
    for command in (["train", "--resume", run.path, "--epochs", 3], ["eval", run.path],
                    ["show", "filters", run.path, "-o", tmp_path / "f.png"]):
        assert re.search(says, one_line_error(cli(*command)))
    plotted = cli("plot", run.path, "-o", tmp_path / "p.png")  # plot reads no checkpoint: the curves are whole
    assert plotted.exit_code == 0 or one_line_error(plotted).startswith(f"error: nothing to plot: {run.path}: ")
    assert snapshot(run.path) == before


def test_an_edited_config_json_of_a_run_without_epochs_is_checked_against_the_data(two_runs, copy_of):
    """No checkpoint to compare with: resume compares config.json with what the data give now."""
    run = copy_of(two_runs[0])
    for name in ("last.pt", "best.pt", "metrics.csv"):
        (run.path / name).unlink()
    config = json.loads(run.config_path.read_text())
    config["mean"], config["std"] = [0.0], [1.0]  # valid values, but not the digits' statistics
    run.config_path.write_text(json.dumps(config))
    before = snapshot(run.path)
    with pytest.raises(RunInconsistent, match="records mean \\[0.0\\], but the data and model give"):
        resume(run.path, progress="none")
    assert snapshot(run.path) == before


def test_resumed_run_checkpoints_stay_evaluable(two_runs, copy_of):
    """What a resume writes, eval reads back: the record in the new checkpoints is the run's."""
    run = copy_of(two_runs[0])
    resume(run.path, epochs=3, progress="none")
    assert Checkpoint.read(run.path / "last.pt").record.options.epochs == 3
    assert evaluate(run.path, write=False).epoch == 3


# -- files that are not what their names say ------------------------------------------------------------

@pytest.mark.parametrize("content", [b"hello\n", b"abc", b"", bytes(range(256)) * 8, b"PK\x03\x04" + b"\x00" * 60])
@pytest.mark.parametrize("which", ["last", "best"])
def test_a_checkpoint_that_is_not_one_is_one_line(two_runs, copy_of, content, which):
    run = copy_of(two_runs[0])
    (run.path / f"{which}.pt").write_bytes(content)
    before = snapshot(run.path)
    assert f"{which}.pt" in one_line_error(cli("eval", run.path, "--checkpoint", which))
    with pytest.raises(BadCheckpoint):
        Checkpoint.read(run.path / f"{which}.pt")
    if which == "last":
        one_line_error(cli("train", "--resume", run.path, "--epochs", 3))
        assert snapshot(run.path) == before


def test_a_bare_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert "bare state_dict" in one_line_error(cli("eval", path))


def test_a_text_file_as_torchvision_weights_is_one_line(monkeypatch, tmp_path):
    from cnnlab import pretrained

    weights = pretrained.imagenet_weights("resnet18")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights.path.parent.mkdir(parents=True, exist_ok=True)
    weights.path.write_text("hello\n")
    message = one_line_error(cli("show", "filters", "resnet18", "--weights", "imagenet", "-o", tmp_path / "f.png"))
    assert "corrupt or truncated" in message and not (tmp_path / "f.png").exists()


def test_a_binary_metrics_csv_is_one_line_on_resume_and_a_warning_elsewhere(two_runs, copy_of):
    run = copy_of(two_runs[0])
    run.metrics.path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    before = snapshot(run.path)
    message = one_line_error(cli("train", "--resume", run.path, "--epochs", 3))
    assert "metrics.csv cannot be read" in message and "move it away" in message
    assert snapshot(run.path) == before
    run.metrics.path.unlink()  # as the line says: resume rewrites it from last.pt
    resume(run.path, epochs=3, progress="none")
    assert [row["epoch"] for row in run.metrics.rows()] == [1, 2, 3]


def test_a_weight_that_does_not_fit_names_the_parameter(two_runs, copy_of):
    run = copy_of(two_runs[0])
    checkpoint = Checkpoint.read(run.path / "last.pt")
    name = next(iter(checkpoint.model))
    checkpoint.model[name] = torch.zeros(3, 3)
    (run.path / "last.pt").write_bytes(checkpoint.to_bytes())
    message = one_line_error(cli("eval", run.path))
    assert f"size mismatch for {name}" in message and not message.rstrip().endswith(":")


# -- bad places and sizes --------------------------------------------------------------------------------

def test_a_runs_dir_that_cannot_hold_runs_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    message = one_line_error(cli("train", "mlp", "--epochs", 1, "--runs-dir", tmp_path / "file" / "runs"))
    assert f"{tmp_path / 'file'} is a file, not a directory" in message
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):  # root writes anywhere: the permission case cannot be made
            return
        assert "cannot be created" in one_line_error(cli("train", "mlp", "--runs-dir", tmp_path / "runs"))
    finally:
        os.chmod(tmp_path, 0o700)


def test_a_huge_input_size_is_one_line():
    assert "too large" in one_line_error(cli("summary", "lenet", "--input", "99999999999"))


def test_a_diverged_run_has_nothing_to_plot_not_to_compare(two_runs, copy_of, tmp_path):
    run = copy_of(two_runs[0])
    run.metrics.path.write_text(run.metrics.path.read_text().splitlines()[0] + "\n")
    assert "nothing to plot" in one_line_error(cli("plot", run.path, "-o", tmp_path / "p.png"))


# -- signals and a closed stdout -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_closed_terminal_keeps_the_epochs_and_says_how_to_resume(tmp_path):
    process = start(["-m", "cnnlab", "train", "mlp", "--epochs", "200", "--runs-dir", tmp_path, "--name", "hup"])
    run = Run(tmp_path / "hup")
    while len(run.metrics.rows()) < 2 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 129
    line, = stderr.strip().splitlines()
    assert line.startswith("error: the terminal closed (SIGHUP); ") and f"--resume {run.path}" in line
    assert len(run.metrics.rows()) == Checkpoint.read(run.path / "last.pt").epoch >= 2


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_training(tmp_path):
    """`cnnlab train ... | head -2`: the pipe closes after two lines; training goes on to the end."""
    process = start(["-m", "cnnlab", "train", "mlp", "--epochs", "4", "--runs-dir", tmp_path, "--name", "piped"])
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=300)
    assert process.returncode == 0 and stderr == ""
    assert len(Run(tmp_path / "piped").metrics.rows()) == 4


# -- the damage walk ---------------------------------------------------------------------------------------

def damaged(content: bytes, kind: str, other: bytes) -> bytes:
    return {"truncated": content[: len(content) // 2], "empty": b"",
            "random": random.Random(len(content)).randbytes(max(64, len(content) // 4)),
            "text": b"hello, not what this file should be\n", "from another run": other}[kind]


RUN_FILES = ["config.json", "metrics.csv", "last.pt", "best.pt", "eval.csv", ".lock"]
DAMAGE = ["truncated", "empty", "random", "text", "from another run"]


@pytest.fixture(scope="module")
def evaluated_runs(two_runs):
    for run in two_runs:
        evaluate(run.path)
    return two_runs


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_FILES)
def test_damage_walk_every_command_repairs_or_says_one_line(evaluated_runs, tmp_path, name):
    """Each damage to each file, then every command that reads a run, in the order a user might
    run them: each ends in success (a repair) or one line; nothing the run had is lost unless a
    command succeeded in repairing it; and a command after a successful one does not fail
    because of what that one accepted."""
    original, other = evaluated_runs
    for kind in DAMAGE:
        run = Run(tmp_path / f"{name}-{kind}".replace(" ", "-"))
        shutil.copytree(original.path, run.path)
        (run.path / name).write_bytes(damaged((original.path / name).read_bytes(), kind,
                                              (other.path / name).read_bytes()))
        outcomes = {}
        for command in (["eval", run.path], ["compare", run.path, "-f", "csv"], ["plot", run.path, "-o",
                        tmp_path / "p.png"], ["show", "filters", run.path, "-o", tmp_path / "f.png"],
                        ["train", "--resume", run.path, "--epochs", 3], ["eval", run.path]):
            result = cli(*command)
            assert "Traceback" not in result.output, (name, kind, command, result.output)
            if result.exit_code != 0:
                assert result.stderr.count("\n") == 1 or command[0] in ("compare", "plot"), (name, kind, result.stderr)
                assert result.stderr.rstrip().splitlines()[-1].startswith("error: "), (name, kind, result.stderr)
            outcomes[" ".join(map(str, command[:2]))] = result.exit_code
        if outcomes["train --resume"] == 0:  # the resume accepted (or repaired) the run: all of it works
            assert cli("eval", run.path).exit_code == 0, (name, kind)
            assert [row["epoch"] for row in run.metrics.rows()] == [1, 2, 3], (name, kind)
            assert cli("compare", run.path, "-f", "csv").exit_code == 0, (name, kind)


@pytest.mark.slow
def test_damage_walk_of_the_image_folder_cache_rebuilds_it_and_evaluates_the_same(tmp_path):
    """An ImageFolder run's decode cache (images.u8, meta.json) truncated, emptied, filled with
    random bytes or text, or replaced by another tree's: eval rebuilds it and gets the same
    numbers as before, or says one line; never a traceback, never silently other numbers."""
    from PIL import Image

    def tree(root, shade):
        for label, name in enumerate(("dark", "light")):
            (root / name).mkdir(parents=True)
            for i in range(8):
                value = (40 + 170 * label + 3 * i + shade) % 256
                Image.new("RGB", (12, 12), (value, 255 - value, value // 2)).save(root / name / f"{i}.png")
        return root

    data_dir = tmp_path / "data"
    run = train(TrainConfig(model="mlp", data=str(tree(tmp_path / "shades", 0)), data_dir=str(data_dir), epochs=1,
                            resize=28, runs_dir=str(tmp_path / "runs")), progress="none")
    expected = evaluate(run.path, write=False)
    cache = next((data_dir / "imagefolder").iterdir())
    other_run = train(TrainConfig(model="mlp", data=str(tree(tmp_path / "other" / "shades", 7)),
                                  data_dir=str(data_dir), epochs=1, resize=28, runs_dir=str(tmp_path / "runs")),
                      progress="none")
    other_cache = next(p for p in (data_dir / "imagefolder").iterdir() if p != cache)
    assert other_run.path.exists()
    for name in ("images.u8", "meta.json"):
        original = (cache / name).read_bytes()
        for kind in DAMAGE:
            (cache / name).write_bytes(damaged(original, kind, (other_cache / name).read_bytes()))
            result = cli("eval", run.path)
            assert "Traceback" not in result.output, (name, kind, result.output)
            if result.exit_code == 0:
                again = evaluate(run.path, write=False)
                assert (again.loss, again.top1) == (expected.loss, expected.top1), (name, kind)
            else:
                one_line_error(result)
