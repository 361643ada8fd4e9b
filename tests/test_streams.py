"""stdout carries the data and nothing else: --format json parses as it comes (`| jq`),
--format csv is the table alone, notes and warnings go to stderr; train --quiet prints its last
line only."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from synthetic_runs import make_run


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def runs_with_a_problem(tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "lenet-a")
    make_run(runs_dir, "mlp-b", model="mlp")
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "config.json").write_text("{")  # reported on stderr, skipped
    return runs_dir


def test_summary_and_models_json_on_stdout_is_the_data_alone():
    summary = json.loads(invoke("summary", "lenet", "--format", "json").stdout)
    assert summary["model"] == "lenet" and summary["totals"]["params"] == 61_706
    resnets = json.loads(invoke("models", "resnet*", "--format", "json").stdout)
    assert {"resnet18", "resnet50", "resnet152"} <= {row["name"] for row in resnets}
    assert all(row["name"].startswith("resnet") for row in resnets)
    (lenet,) = json.loads(invoke("models", "lenet", "--format", "json").stdout)  # its options ride in the row
    assert lenet["params"] == 61_706 and "options" in lenet


def test_compare_json_and_csv_hold_only_the_runs_while_the_problem_goes_to_stderr(runs_with_a_problem):
    result = invoke("compare", "--runs-dir", runs_with_a_problem, "--format", "json")
    assert sorted(row["name"] for row in json.loads(result.stdout)) == ["lenet-a", "mlp-b"]
    assert "broken" in result.stderr
    rows = list(csv.DictReader(io.StringIO(invoke("compare", "--runs-dir", runs_with_a_problem,
                                                  "--format", "csv").stdout)))
    assert sorted(row["name"] for row in rows) == ["lenet-a", "mlp-b"]


def test_summary_csv_is_the_table_alone():
    rows = list(csv.DictReader(io.StringIO(invoke("summary", "lenet", "--format", "csv").stdout)))
    assert sum(int(row["params"]) for row in rows) == 61_706  # one row per layer: they add up


def test_train_quiet_prints_only_its_last_line(tmp_path):
    result = invoke("train", "mlp", "--epochs", "1", "--quiet", "--runs-dir", tmp_path, "--name", "q")
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("best val_acc ") and result.stdout.rstrip().endswith(f"{tmp_path / 'q'}")
