"""cnnlab compare: every number in a row is checked against the run's own files, read here
with the csv and json modules rather than through cnnlab."""

import csv
import io
import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.compare import COLUMN_NAMES, compare_runs, efficiency_frontier
from cnnlab.runs import RunProblem
from cnnlab.runs import METRICS_COLUMNS
from synthetic_runs import make_run

EXPECTED_HEADER = ["name", "model", "data", "epochs", "epochs_planned", "best_val_acc",
                   "best_epoch", "final_val_acc", "final_train_loss", "final_val_loss", "params",
                   "macs", "mean_epoch_seconds", "images_per_second", "train_tflops", "utilisation", "device",
                   "path"]


def invoke(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def expected_row(run) -> dict:
    """What compare must report, computed from metrics.csv and config.json directly."""
    with open(run.metrics.path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    config = json.loads((run.path / "config.json").read_text())
    best = max(rows, key=lambda row: row["val_acc"])  # max() keeps the first of equals
    return {
        "name": run.name, "model": config["model"], "data": config["data"],
        "epochs": int(rows[-1]["epoch"]), "epochs_planned": config["epochs"],
        "best_val_acc": best["val_acc"], "best_epoch": int(best["epoch"]),
        "final_val_acc": rows[-1]["val_acc"], "final_train_loss": rows[-1]["train_loss"],
        "final_val_loss": rows[-1]["val_loss"],
        "params": config["model_stats"]["params"], "macs": config["model_stats"]["macs"],
        # averaged over the epochs after the first (warm-up), the documented rule
        "mean_epoch_seconds": sum(r["epoch_seconds"] for r in rows[1:]) / (len(rows) - 1),
        "images_per_second": sum(r["images_per_second"] for r in rows[1:]) / (len(rows) - 1),
        "train_tflops": sum(r["train_tflops"] for r in rows[1:]) / (len(rows) - 1),
        "utilisation": sum(r["utilisation"] for r in rows[1:]) / (len(rows) - 1),
        "device": config["device"], "path": str(run.path),
    }


@pytest.fixture
def three_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    return runs_dir, [
        make_run(runs_dir, "lenet-a", peak=4, ceiling=0.95),
        make_run(runs_dir, "mlp-b", model="mlp", peak=2, ceiling=0.90, params=50890, macs=50816),
        # still training: 3 of 8 epochs, best so far is the last
        make_run(runs_dir, "resnet-c", model="resnet_mnist", epochs=8, finished=3, peak=5,
                 ceiling=0.98, params=1_200_000, macs=30_000_000, device="cuda:0"),
    ]


def test_csv_columns_and_values_match_each_runs_files(three_runs):
    runs_dir, runs = three_runs
    result = invoke("--runs-dir", runs_dir, "--format", "csv")
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(table[0]) == EXPECTED_HEADER == COLUMN_NAMES
    assert [row["name"] for row in table] == ["lenet-a", "mlp-b", "resnet-c"]
    for row, run in zip(table, runs):
        expected = expected_row(run)
        for column, value in expected.items():
            if isinstance(value, float):
                assert float(row[column]) == pytest.approx(value, rel=1e-9), (run.name, column)
            else:
                assert row[column] == str(value), (run.name, column)
    # the synthetic curves peak before the end, so best and final must differ
    lenet = {row["name"]: row for row in table}["lenet-a"]
    assert lenet["best_epoch"] == "4"
    assert float(lenet["best_val_acc"]) > float(lenet["final_val_acc"])


def test_sort_puts_the_best_first_and_rejects_unknown_columns(three_runs):
    runs_dir, _ = three_runs
    by_accuracy = compare_runs(runs_dir=runs_dir, sort="best_val_acc")
    assert list(by_accuracy["name"]) == ["resnet-c", "lenet-a", "mlp-b"]
    assert by_accuracy["best_val_acc"].is_monotonic_decreasing
    by_macs = compare_runs(runs_dir=runs_dir, sort="macs")
    assert list(by_macs["name"]) == ["mlp-b", "lenet-a", "resnet-c"]
    reverse = invoke("--runs-dir", runs_dir, "--sort", "macs", "--reverse", "-f", "csv")
    assert [row["name"] for row in csv.DictReader(io.StringIO(reverse.stdout))] == \
        ["resnet-c", "lenet-a", "mlp-b"]
    bad = invoke("--runs-dir", runs_dir, "--sort", "accuracy")
    assert bad.exit_code == 2 and "cannot sort by 'accuracy'" in bad.stderr
    assert "Traceback" not in bad.output


def test_json_markdown_and_table_renderings(three_runs, tmp_path):
    runs_dir, runs = three_runs
    records = json.loads(invoke("--runs-dir", runs_dir, "-f", "json").stdout)
    assert [r["name"] for r in records] == ["lenet-a", "mlp-b", "resnet-c"]
    assert records[0]["best_val_acc"] == pytest.approx(expected_row(runs[0])["best_val_acc"])
    assert records[2]["params"] == 1_200_000

    out = tmp_path / "table.md"  # the extension picks markdown
    assert invoke("--runs-dir", runs_dir, "--out", out).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| run | model | data | epochs | best val acc |")
    assert len(lines) == 2 + 3 and all(line.count("|") == lines[0].count("|") for line in lines)
    resnet = lines[4].split(" | ")
    assert resnet[3] == "3/8"  # in progress: epochs done of planned
    assert resnet[4] == f"{100 * expected_row(runs[2])['best_val_acc']:.2f}%"
    assert "1.2M" in lines[4] and "30M" in lines[4]

    table = invoke("--runs-dir", runs_dir, "--filter", "*-[ab]")  # a rich table on screen
    assert table.exit_code == 0
    assert "lenet-a" in table.stdout and "mlp-b" in table.stdout and "resnet-c" not in table.stdout
    assert "2 runs on digits, cpu" in table.stdout


def test_bad_directories_are_reported_and_the_good_runs_still_compared(three_runs, tmp_path):
    runs_dir, runs = three_runs
    (tmp_path / "notes").mkdir()
    empty = make_run(runs_dir, "empty", finished=0)
    empty.metrics.path.write_text("")
    header_only = make_run(runs_dir, "header-only", finished=0)
    header_only.metrics.path.write_text(",".join(METRICS_COLUMNS) + "\n")
    foreign = make_run(runs_dir, "foreign")
    foreign.metrics.path.write_text("step,loss\n1,0.5\n")
    binary = make_run(runs_dir, "binary")
    binary.metrics.path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    broken_config = make_run(runs_dir, "broken-config")
    (broken_config.path / "config.json").write_text('{"model": "lenet", ')

    args = [runs[0].path, tmp_path / "notes", tmp_path / "missing", empty.path, header_only.path,
            foreign.path, binary.path, broken_config.path, runs_dir, "-f", "csv"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in csv.DictReader(io.StringIO(result.stdout))] == ["lenet-a"]
    messages = result.stderr
    assert "notes' is not a cnnlab run (no config.json)" in messages
    assert "missing' does not exist" in messages
    assert "metrics.csv is empty" in messages
    assert "no finished epoch in metrics.csv" in messages
    assert "not a cnnlab metrics file (no 'epoch' column)" in messages
    assert "config.json cannot be read" in messages
    assert "binary: metrics.csv cannot be read" in messages
    assert f"did you mean --runs-dir {runs_dir}?" in messages
    assert "Traceback" not in result.output

    nothing = invoke(tmp_path / "notes", empty.path)
    assert nothing.exit_code == 1
    assert nothing.stderr.strip().splitlines()[-1].startswith("error: nothing to compare")


def test_no_runs_matching_a_filter_or_no_runs_dir_fail_with_one_line(three_runs, tmp_path):
    runs_dir, _ = three_runs
    for args, message in [
        (["--runs-dir", runs_dir, "--filter", "vgg*"],
         f"no runs matching 'vgg*' under '{runs_dir}'"),
        (["--runs-dir", tmp_path / "nowhere"], "does not exist"),
        ([runs_dir / "lenet-a", "--filter", "vgg*"], "none of the 1 given runs matches 'vgg*'"),
        (["--runs-dir", runs_dir, "--plot", tmp_path / "curves.gif"],
         "cannot tell the image format"),
    ]:
        result = invoke(*args)
        assert result.exit_code in (1, 2) and message in result.stderr, (args, result.output)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_truncated_last_line_counts_only_the_finished_epochs(tmp_path):
    run = make_run(tmp_path, "crashed", epochs=10, finished=5)
    fifth_val_acc = expected_row(run)["final_val_acc"]
    with open(run.metrics.path, "a") as f:
        f.write("6,0.2,0.93,0.3")  # the process died while writing epoch 6
    row = compare_runs([run.path]).iloc[0]
    assert row["epochs"] == 5 and row["epochs_planned"] == 10
    assert row["final_val_acc"] == pytest.approx(fifth_val_acc)


def test_older_runs_with_fewer_columns_are_compared_with_blanks(tmp_path):
    new = make_run(tmp_path, "new")
    # an older run: no timing columns, no model_stats, a model no summary can count
    old = make_run(tmp_path, "old", model="retired_net", params=None, macs=None,
                   columns=["epoch", "train_loss", "train_acc", "val_loss", "val_acc"])
    problems = []
    table = compare_runs([new.path, old.path], on_problem=problems.append)
    old_row = table.set_index("name").loc["old"]
    assert old_row["best_val_acc"] == pytest.approx(expected_row(new)["best_val_acc"])
    for column in ("mean_epoch_seconds", "images_per_second", "params", "macs"):
        assert pd.isna(old_row[column]), column
    assert any("no lr, epoch_seconds, images_per_second, train_tflops, utilisation columns" in p for p in problems)
    assert any("could not count the params and MACs of 'retired_net'" in p for p in problems)
    with pytest.warns(RunProblem) as caught:  # the Python API warns by default
        compare_runs([old.path])
    assert any("older run" in str(warning.message) for warning in caught)


def test_params_and_macs_of_older_runs_are_counted_from_the_model(tmp_path):
    summary = pytest.importorskip("cnnlab.summary")
    if not hasattr(summary, "summarize"):
        pytest.skip("cnnlab.summary is still being written")
    old = make_run(tmp_path, "old-lenet", model="lenet", params=None, macs=None)
    row = compare_runs([old.path]).iloc[0]
    # LeNet-5 on 1x28x28, by hand: conv 6x28x28x25 + conv 16x10x10x150 + fc 400x120 + 120x84
    # + 84x10 multiply-accumulates; params 156 + 2416 + 48120 + 10164 + 850
    assert row["macs"] == 117_600 + 240_000 + 48_000 + 10_080 + 840 == 416_520
    assert row["params"] == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    # an ImageNet-sized older run, against torchvision's published figures
    old = make_run(tmp_path, "old-resnet18", model="resnet18", params=None, macs=None,
                   input_size=[3, 224, 224], num_classes=1000)
    row = compare_runs([old.path]).iloc[0]
    assert row["params"] == 11_689_512 and row["macs"] / 1e9 == pytest.approx(1.814, rel=1e-3)


def test_efficiency_frontier_keeps_runs_no_other_beats_on_cost_and_accuracy():
    costs = [4.0, 1.0, 2.0, 3.0, 1.0, math.nan, 5.0]
    accuracies = [0.7, 0.5, 0.4, 0.7, 0.6, 0.99, 0.95]
    # cheapest first: (1, .6) beats (1, .5); (2, .4) is beaten; (3, .7) ties (4, .7) at less cost
    assert efficiency_frontier(costs, accuracies) == [4, 3, 6]


def test_a_real_training_run_is_compared_and_plotted(tmp_path):
    """The contract with 'cnnlab train': its files are what compare and plot read."""
    import cnnlab

    config = cnnlab.TrainConfig(model="mlp", data="digits", epochs=2, batch_size=128,
                                device="cpu", runs_dir=str(tmp_path), name="mlp")
    run = cnnlab.train(config, progress="none")
    result = invoke(run.path, "-f", "csv", "--plot", tmp_path / "curves.png")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    expected = expected_row(run)
    assert row["params"] == "203530" == str(expected["params"])  # 784*256+256 + 256*10+10
    assert float(row["best_val_acc"]) == pytest.approx(expected["best_val_acc"])
    assert expected["best_val_acc"] > 0.8  # a real MLP on the digits gets past 90 % at once
    assert float(row["images_per_second"]) == pytest.approx(expected["images_per_second"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "curves_efficiency.png").stat().st_size > 0
