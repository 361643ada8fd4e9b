"""cnnlab experiment: real short runs on the embedded digits, judged by what the papers and the
course claim (the permutation hurts the CNN, not the MLP; deeper plain nets train worse)."""

import csv
import signal

import pytest
import torch
from matplotlib.figure import Figure
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data import ImageDataset, permute_pixels
from cnnlab.errors import TrainingInterrupted
from cnnlab.experiments import run_experiment
from cnnlab.runs import Run

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def permuted(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    result = cli("experiment", "permuted-pixels", "--epochs", 5, "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.output
    return next(runs_dir.iterdir())


def test_permuting_pixels_costs_the_cnn_and_not_the_mlp(permuted):
    accuracy = {(row["net"], row["permuted"]): float(row["final_val_acc"])
                for row in read_csv(permuted / "results.csv")}
    assert accuracy["cnn", "False"] > 0.94 and accuracy["mlp", "False"] > 0.93  # both learn the digits
    assert accuracy["cnn", "False"] - accuracy["cnn", "True"] > 0.02  # measured: 0.961 -> 0.922
    assert abs(accuracy["mlp", "False"] - accuracy["mlp", "True"]) < 0.015  # an MLP cannot tell
    report = (permuted / "report.md").read_text()
    cost = 100 * (accuracy["cnn", "False"] - accuracy["cnn", "True"])
    assert f"cost the CNN {cost:.1f} points" in report and "![curves](curves.png)" in report


def test_eval_reproduces_the_accuracy_of_a_permuted_run(permuted):
    run = Run(permuted / "cnn-permuted-seed0")
    assert run.read_record().options.permute_pixels == 0
    assert cnnlab.evaluate(run.path, write=False).top1 == run.metrics.rows()[-1]["val_acc"]


def test_one_permutation_moves_every_pixel_of_both_splits_alike():
    positions = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)  # each pixel holds its own index
    dataset = ImageDataset("grid", positions.repeat(3, 1, 1, 1), torch.zeros(3, dtype=torch.long),
                           positions + 100, torch.zeros(1, dtype=torch.long), ["a"], False)
    shuffled = permute_pixels(dataset, 7)
    order = shuffled.train_images[0].flatten()
    assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))
    assert (shuffled.train_images.flatten(1) == order).all()
    assert torch.equal(shuffled.test_images.flatten(), order + 100)  # the same shuffle for the test split
    assert torch.equal(permute_pixels(dataset, 7).train_images, shuffled.train_images)  # fixed by the seed
    assert not torch.equal(permute_pixels(dataset, 8).train_images, shuffled.train_images)
    assert permute_pixels(dataset, None) is dataset


def test_an_interrupted_experiment_keeps_its_runs_and_resumes(tmp_path, monkeypatch, ctrl_c_reaches_python):
    records = []
    real_record = Run.record_epoch

    def ctrl_c_in_the_second_run(run, row, state, improved):
        real_record(run, row, state, improved)
        records.append(run.name)
        if len(records) == 3:  # after epoch 1 of the second run
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Run, "record_epoch", ctrl_c_in_the_second_run)
    with pytest.raises(TrainingInterrupted, match=r"1 finished run\(s\) are kept in .* --resume"):
        run_experiment("permuted-pixels", epochs=2, runs_dir=tmp_path, progress="none",
                       options=dict(batch_size=128, lr=0.005))
    monkeypatch.undo()
    folder = next(tmp_path.iterdir())
    first = (folder / "cnn-original-seed0" / "last.pt").read_bytes()
    cut = Run(folder / "cnn-permuted-seed0").metrics.rows()
    assert len(cut) == 1 and not (folder / "results.csv").exists()

    for other, message in ((["depth"], "holds the permuted-pixels experiment, not depth"),
                           (["permuted-pixels", "--epochs", 3], "--epochs 3 is not what")):
        refused = cli("experiment", *other, "--resume", folder)
        assert refused.exit_code != 0 and message in refused.output
    command = ["experiment", "permuted-pixels", "--epochs", 2, "--runs-dir", tmp_path, "--batch-size", 128,
               "--lr", 0.005]
    assert cli(*command, "--resume", folder).exit_code == 0  # the same command, --resume DIR added
    assert (folder / "cnn-original-seed0" / "last.pt").read_bytes() == first  # a finished run is kept
    assert Run(folder / "cnn-permuted-seed0").metrics.rows()[0] == cut[0]  # the cut run continued
    rows = read_csv(folder / "results.csv")
    assert [(row["net"], row["permuted"]) for row in rows] == [
        ("cnn", "False"), ("cnn", "True"), ("mlp", "False"), ("mlp", "True")]
    for row in rows:  # the train options reached every run
        run = Run(folder / row["run"])
        options = run.read_record().options
        assert (options.batch_size, options.lr, options.epochs) == (128, 0.005, 2)
        assert float(row["final_train_error"]) == pytest.approx(1 - run.metrics.rows()[-1]["train_acc"])


def test_depth_draws_the_training_error_curves_plain_dashed(tmp_path, monkeypatch):
    saved = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda figure, *args, **kwargs: (saved.append(figure), real_savefig(figure, *args, **kwargs)))
    result = run_experiment("depth", epochs=1, depths=[20, 32], runs_dir=tmp_path, progress="none",
                            options=dict(resize=8, batch_size=256))  # 8x8: the digits' own side, quick
    figure = saved[0]  # training_error.png, drawn first
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert sorted(lines) == ["plain-20", "plain-32", "resnet-20", "resnet-32"]
    for row in result.rows:
        line = lines[f"{'resnet' if row['shortcuts'] else 'plain'}-{row['depth']}"]
        assert line.get_linestyle() == ("-" if row["shortcuts"] else "--")
        errors = [1 - metrics["train_acc"] for metrics in Run(row["path"]).metrics.rows()]
        assert list(line.get_ydata()) == pytest.approx(errors)
    report = (result.path / "report.md").read_text()
    assert "![training_error](training_error.png)" in report and "Final training error, plain 20 -> 32" in report


@pytest.mark.parametrize("args, message", [
    (["experiment", "no-such"], "unknown experiment 'no-such'"),
    (["experiment", "permuted-pixels", "--permute-pixels", "3"], "--permute-pixels does not apply"),
    (["experiment", "attention", "--depths", "20,56"], "--depths applies to the depth experiment"),
    (["experiment", "depth", "--depths", "20,57"], "--depths takes 20, 32, 44, 56, 110"),
    (["experiment", "depth", "--lr", "-1"], "--lr must be above 0"),
    (["experiment", "--resume", "."], "is not an experiment folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli(*args, *(["--runs-dir", "out"] if "--resume" not in args else []))
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_list_describes_every_experiment():
    result = cli("experiment", "--list")
    assert result.exit_code == 0
    for name in ("permuted-pixels", "depth", "one-by-one", "attention"):
        assert name in result.output
