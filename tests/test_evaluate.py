import csv
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.evaluation import EVAL_COLUMNS, confusion_figure, evaluate, score
from cnnlab.training import TrainConfig, train

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def snapshot(directory) -> dict:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_eval_reproduces_the_final_val_acc_of_metrics_csv(default_run):
    final = default_run.metrics.rows()[-1]
    result = evaluate(default_run.path, write=False)
    assert result.top1 == final["val_acc"]
    assert result.loss == pytest.approx(final["val_loss"], rel=1e-5)
    assert (result.epoch, result.images, result.data) == (final["epoch"], 359, "digits")
    assert result.top1 <= result.top5 <= 1


def test_best_checkpoint_holds_the_best_epoch(default_run):
    rows = default_run.metrics.rows()
    best = max(rows, key=lambda row: row["val_acc"])
    result = evaluate(default_run.path / "best.pt", write=False)
    assert (result.epoch, result.top1) == (best["epoch"], best["val_acc"])
    assert evaluate(default_run.path, checkpoint="best", write=False).top1 == best["val_acc"]


def test_cli_eval_writes_eval_and_confusion_files_into_the_run(default_run):
    final = default_run.metrics.rows()[-1]
    result = cli("eval", default_run.path, "--plot")
    assert result.exit_code == 0, result.output
    assert f"top-1 {final['val_acc']:.4f}" in result.stdout
    table = read_csv(default_run.path / "eval.csv")
    assert table[0] == EVAL_COLUMNS
    assert [row[0] for row in table[1:]] == ["all", *map(str, range(10))]
    overall = dict(zip(EVAL_COLUMNS, table[1]))
    assert float(overall["accuracy"]) == final["val_acc"] and int(overall["support"]) == 359
    matrix = read_csv(default_run.path / "confusion.csv")
    assert matrix[0] == ["true\\predicted", *map(str, range(10))]
    counts = torch.tensor([[int(v) for v in row[1:]] for row in matrix[1:]])
    assert counts.sum() == 359 and counts.diag().sum() / 359 == pytest.approx(final["val_acc"])
    assert [int(row[1]) for row in table[2:]] == counts.sum(1).tolist()
    assert (default_run.path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_match_a_hand_worked_example():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = 10 * torch.nn.functional.one_hot(predicted, 3).float()
    result = score(logits, labels, ["a", "b", "c"])
    assert result.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rows = {row["class"]: row for row in result.per_class}
    assert [rows[c]["precision"] for c in "abc"] == [1.0, 0.5, 0.5]
    assert [rows[c]["recall"] for c in "abc"] == [2 / 3, 0.5, 1.0]
    assert [rows[c]["accuracy"] for c in "abc"] == [2 / 3, 0.5, 1.0]
    assert [rows[c]["support"] for c in "abc"] == [3, 2, 1]
    right, wrong = -math.log(math.exp(10) / (math.exp(10) + 2)), -math.log(1 / (math.exp(10) + 2))
    assert rows["all"]["loss"] == pytest.approx((4 * right + 2 * wrong) / 6, rel=1e-5)
    assert rows["b"]["loss"] == pytest.approx((right + wrong) / 2, rel=1e-5)
    assert (rows["all"]["accuracy"], rows["all"]["top5_accuracy"]) == (4 / 6, 1.0)
    assert rows["all"]["precision"] == pytest.approx(2 / 3) and rows["all"]["recall"] == pytest.approx(13 / 18)


class RunsCode:
    """Unpickling this calls open(path, "w"): a crafted checkpoint's payload."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "cnnlab-checkpoint", "model": RunsCode(marker)}, tmp_path / "zip.pt")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    for name in ("zip.pt", "pickle.pt"):
        result = cli("eval", tmp_path / name)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "refused by the safe loader" in lines[0], result.stderr
    assert not marker.exists()


def test_truncated_checkpoint_is_one_line_and_damages_nothing(default_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(default_run.path, run)
    last = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(last[: len(last) // 2])
    before = snapshot(run)
    result = cli("eval", run)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: checkpoint '{run / 'last.pt'}' is corrupt or truncated")
    assert result.stderr.count("\n") == 1
    assert snapshot(run) == before
    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 1 and "corrupt or truncated" in resumed.stderr and snapshot(run) == before


def test_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    result = cli("eval", tmp_path)
    assert result.exit_code == 1 and result.stderr == f"error: '{tmp_path}' is not a cnnlab run (no config.json)\n"
    assert cli("eval", tmp_path / "missing").stderr == f"error: '{tmp_path / 'missing'}' does not exist\n"


def write_tree(root, per_class=4):
    from PIL import Image

    for name, colour in {"dark": (20, 20, 20), "light": (230, 230, 230)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (9, 9), tuple(c + i for c in colour)).save(root / name / f"{i}.png")
    return root


def test_eval_on_another_data_set_keeps_the_runs_own_results(default_run, tmp_path):
    first, second = write_tree(tmp_path / "first"), write_tree(tmp_path / "second", per_class=5)
    run = train(TrainConfig(model="mlp", data=str(first), epochs=1, batch_size=4, runs_dir=str(tmp_path / "runs")),
                progress="none")
    result = evaluate(run.path, data=str(second))
    assert result.data == "second" and result.images == 2
    assert [p.name for p in result.files] == ["eval-second.csv", "confusion-second.csv"]
    assert not (run.path / "eval.csv").exists()
    refused = cli("eval", default_run.path, "--data", first)
    assert refused.exit_code == 1
    assert refused.stderr == ("error: first (3 channel(s), 2 classes) does not fit lenet trained on digits "
                              "(1 channel(s), 10 classes)\n")


def test_confusion_figure_is_titled_with_the_run_checkpoint_and_epoch():
    labels = torch.arange(10).repeat(3)
    result = score(10 * torch.nn.functional.one_hot(labels, 10).float(), labels, list(map(str, range(10))))
    result.checkpoint, result.epoch, result.data = Path("runs/lenet-digits-20250101-120000/best.pt"), 4, "digits"
    figure = confusion_figure(result)
    title = figure.axes[0].title
    assert title.get_text() == "lenet-digits-20250101-120000/best.pt, epoch 4\ndigits: top-1 1.0000 (30 images)"
    figure.canvas.draw()
    box, outer = title.get_window_extent(), figure.bbox
    assert outer.x0 <= box.x0 and box.x1 <= outer.x1 and box.y1 <= outer.y1
