"""Tab completion: model names from the registry, run directories, experiment names, all
without importing torch (a shell runs the completion on every <Tab>)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.completion import ZOO, complete_run


def test_the_completion_list_is_the_registrys():
    from cnnlab.models import list_models

    assert sorted(ZOO) == sorted(list_models())


def completions(*words, cwd=None):
    """What bash's completion of ``cnnlab WORDS`` offers, asked of the command as bash asks."""
    env = {**os.environ, "_CNNLAB_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(["cnnlab", *words]),
           "COMP_CWORD": str(len(words))}
    result = CliRunner().invoke(app, [], env=env, prog_name="cnnlab", catch_exceptions=False)
    return result.stdout.split()


def test_train_completes_the_resnets_and_experiment_its_names():
    from cnnlab.experiments import EXPERIMENTS
    from cnnlab.models import list_models

    assert completions("train", "res") == [name for name in list_models() if name.startswith("res")]
    assert completions("summary", "vgg16_") == ["vgg16_bn"]
    assert completions("experiment", "") == list(EXPERIMENTS)


def test_run_directories_complete_and_folders_of_runs_lead_to_them(tmp_path, monkeypatch):
    for run in ("runs/lenet-a", "runs/lenet-b", "runs/mlp-c", "runs/depth-1/resnet20-x"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "config.json").write_text("{}")
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert complete_run("") == ["runs/"]
    assert complete_run("runs/") == ["runs/depth-1/", "runs/lenet-a", "runs/lenet-b", "runs/mlp-c"]
    assert complete_run("runs/len") == ["runs/lenet-a", "runs/lenet-b"]
    assert complete_run("runs/depth-1/") == ["runs/depth-1/resnet20-x"]
    assert complete_run("nowhere/x") == []
    assert completions("eval", "runs/m") == ["runs/mlp-c"]
    assert completions("show", "filters", "lenet") == ["lenet", "lenet_relu"]  # no run starts so here


@pytest.mark.slow
def test_completing_model_names_imports_no_torch():
    # the console script, as a shell calls it; PYTHONPROFILEIMPORTTIME lists every import on stderr
    env = {**os.environ, "_CNNLAB_COMPLETE": "complete_bash", "COMP_WORDS": "cnnlab train res", "COMP_CWORD": "2",
           "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([str(Path(sys.executable).with_name("cnnlab"))], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "resnet18" in result.stdout.split()
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "typer" in imported and not {name for name in imported if name.split(".")[0] == "torch"}
