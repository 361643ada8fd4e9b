"""The installed ``cnnlab`` command end to end, as a user's shell script runs it.

Most CLI paths are tested in-process in each module's tests; these few start real processes,
because only a real process shows what ``--help`` imports, which exit codes a shell sees, and
that the console script and ``python -m cnnlab`` both work.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ("models", "summary", "draw", "train", "eval", "plot", "compare", "show", "experiment")


def cnnlab_executable() -> str:
    beside_python = Path(sys.executable).with_name("cnnlab")
    return str(beside_python) if beside_python.exists() else shutil.which("cnnlab")


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([cnnlab_executable(), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_lists_every_command_and_does_not_import_torch():
    # -X importtime reports every module the process imports, on stderr
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnlab", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f" {command} " in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "typer" in imported  # the report is real
    assert not {name for name in imported if name.split(".")[0] in ("torch", "torchvision", "pandas", "matplotlib")}


@pytest.mark.slow
def test_a_script_trains_evaluates_and_compares_with_the_console_script(tmp_path):
    trained = run("train", "mlp", "--epochs", "2", "--runs-dir", tmp_path, "--name", "mlp", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2/2" in trained.stdout  # plain lines when stdout is not a terminal
    with open(tmp_path / "mlp" / "metrics.csv") as f:
        final = list(csv.DictReader(f))[-1]

    evaluated = run("eval", tmp_path / "mlp")
    assert evaluated.returncode == 0, evaluated.stderr
    with open(tmp_path / "mlp" / "eval.csv") as f:
        overall = next(row for row in csv.DictReader(f) if row["class"] == "all")
    assert float(overall["accuracy"]) == pytest.approx(float(final["val_acc"]))

    compared = run("compare", "--runs-dir", tmp_path, "--format", "json")
    assert compared.returncode == 0, compared.stderr
    [row] = json.loads(compared.stdout)
    assert row["name"] == "mlp" and row["epochs"] == 2
    assert row["final_val_acc"] == pytest.approx(float(final["val_acc"]))


def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit():
    result = run("summary", "vgg61")
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown model 'vgg61'; did you mean ") and "vgg16" in line
