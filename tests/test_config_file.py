"""train --config FILE / --print-config: a TOML file trains what the same flags train, the
command line overrides the file, a run's own config.json trains the same curve again, and a
bad file is one line naming the file and the key, with nothing written."""

import csv
import json
import tomllib

import pytest
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.config_file import config_from_file, options_toml, read_options
from cnnlab.runs.metrics import TIMING_COLUMNS

FLAGS = ["lenet", "--epochs", "1", "--batch-size", "64", "--lr", "0.005", "--no-flip", "--model-arg", "width=0.5"]
TOML = """model = "lenet"
epochs = 1
batch-size = 64
lr = 0.005
flip = false
model-arg = ["width=0.5"]
"""


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


def train(*args):
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    return result


def record(runs_dir, name) -> dict:
    return json.loads((runs_dir / name / "config.json").read_text())


def curve(runs_dir, name) -> list[dict]:
    with open(runs_dir / name / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_a_toml_file_trains_the_run_its_flags_train(tmp_path):
    runs_dir = tmp_path / "runs"
    config = tmp_path / "lenet.toml"
    config.write_text(TOML)
    train(*FLAGS, "--runs-dir", runs_dir, "--name", "flags")
    train("--config", config, "--runs-dir", runs_dir, "--name", "file")
    by_flags, by_file = record(runs_dir, "flags"), record(runs_dir, "file")
    assert by_flags["model_args"] == ["width=0.5"] and by_flags["lr"] == 0.005
    for key in ("name", "created"):
        by_flags.pop(key), by_file.pop(key)
    assert by_file == by_flags
    assert curve(runs_dir, "file") == curve(runs_dir, "flags")


def test_a_flag_overrides_the_file_and_print_config_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet.toml").write_text(TOML)
    printed = tomllib.loads(train("--config", "lenet.toml", "--lr", "0.02", "-b", "32", "--print-config").stdout)
    assert (printed["lr"], printed["batch_size"], printed["epochs"], printed["flip"]) == (0.02, 32, 1, False)
    assert printed["optimizer"] == "adamw" and printed["recipe"] == "small"  # the model's recipe filled in
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.toml"]


def test_print_config_reads_back_to_the_same_options(tmp_path):
    printed = train("resnet20", "--epochs", "3", "--print-config").stdout
    again = tmp_path / "printed.toml"
    again.write_text(printed)
    assert train("--config", again, "--print-config").stdout == printed
    assert config_from_file(again) == cnnlab.TrainConfig(**tomllib.loads(printed))
    assert options_toml(config_from_file(again)) == printed


def test_a_runs_config_json_trains_the_same_curve_again(tmp_path):
    runs_dir = tmp_path / "runs"
    train("mlp", "--epochs", "2", "--batch-size", "128", "--crop-padding", "2", "--runs-dir", runs_dir,
          "--name", "first")
    train("--config", runs_dir / "first", "--name", "again")  # the run's own runs_dir
    train("--config", runs_dir / "first" / "config.json", "--name", "once-more", "--runs-dir", runs_dir)
    first = record(runs_dir, "first")
    for name in ("again", "once-more"):
        assert curve(runs_dir, name) == curve(runs_dir, "first")
        rerun = record(runs_dir, name)
        assert {k: rerun[k] for k in read_options(runs_dir / "first")} == \
            {k: first[k] for k in read_options(runs_dir / "first")}


@pytest.mark.parametrize("name, text, message", [
    ("syntax.toml", "lr = \n", "syntax.toml is not valid TOML: Invalid value (at line 1, column 6)"),
    ("syntax.json", '{"lr": 0.1,}', "syntax.json is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 12)"),
    ("type.toml", 'lr = "fast"\n', "type.toml: lr is 'fast', not float (or null)"),
    ("type.toml", "epochs = 2.5\n", "type.toml: epochs is 2.5, not int (or null)"),
    ("choice.toml", 'schedule = "linear"\n', "choice.toml: schedule is 'linear', not one of constant, step"),
    ("bound.json", '{"epochs": 0}', "bound.json: --epochs must be at least 1, not 0"),
    ("unknown.toml", "batch_sise = 32\n", "unknown.toml: unknown option 'batch_sise' (did you mean 'batch_size'?)"),
    ("unknown.toml", "[optimizer]\nlr = 1\n", "unknown.toml: optimizer is {'lr': 1}, not one of sgd"),
    ("list.json", "[1, 2]", "list.json holds list, not a table of options"),
])
def test_a_bad_file_is_one_line_naming_it_and_nothing_is_written(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    result = invoke("train", "--config", name)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_directory_that_is_not_a_run_and_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model": "lenet"}')
    for args, message in ((["notes"], "notes is a directory but not a run (it has no config.json)"),
                          (["missing.toml"], "config file missing.toml does not exist"),
                          (["broken"], "broken/config.json has no")):
        result = invoke("train", "--config", *args)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "notes"]


def test_experiment_takes_a_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.toml").write_text("learning-rate = 0.1\n")
    result = invoke("experiment", "permuted-pixels", "--config", "e.toml")
    assert result.exit_code == 2 and result.stderr.startswith("error: e.toml: unknown option 'learning-rate'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.toml"]
