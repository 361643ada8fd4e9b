"""cnnlab export: each format gives PyTorch's logits back when run by its own runtime
(onnxruntime, torch.jit, torch.export) for any batch size, and carries what a reader needs to
prepare the images, read back against the run's config.json."""

import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.evaluation import load_trained
from cnnlab.export import exported_subject, read_metadata


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    result = invoke("train", "lenet", "--epochs", "1", "--runs-dir", runs_dir, "--name", "tiny", "--quiet")
    assert result.exit_code == 0, result.output
    return runs_dir / "tiny"


def run_exported(path, images: torch.Tensor) -> np.ndarray:
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    if path.suffix == ".pt":
        return torch.jit.load(str(path))(images).detach().numpy()
    return torch.export.load(path).module()(images).detach().numpy()


@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".pt2"])
def test_an_exported_run_gives_pytorchs_logits_and_its_metadata(run_dir, tmp_path, suffix):
    out = tmp_path / f"tiny{suffix}"
    result = invoke("export", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.strip().endswith(f"wrote {out}")
    trained = load_trained(run_dir, "last", device="cpu")
    images = torch.randn(3, 1, 28, 28)  # a batch size other than the export's example
    with torch.no_grad():
        expected = trained.model.float()(images).numpy()
    assert np.abs(run_exported(out, images) - expected).max() < 1e-4
    config = json.loads((run_dir / "config.json").read_text())
    metadata = read_metadata(out)
    assert metadata["input_size"] == config["input_size"] == [1, 28, 28]
    assert (metadata["classes"], metadata["mean"], metadata["std"]) == (config["classes"], config["mean"], config["std"])
    assert metadata["weights"] == f"{run_dir / 'last.pt'} (epoch 1)"


def test_a_model_name_exports_at_the_input_asked_for(tmp_path):
    out = tmp_path / "resnet20.pt2"
    assert invoke("export", "resnet20", "--input", "40", "--out", out).exit_code == 0
    model, size, _ = exported_subject("resnet20", input_size=(40,))
    images = torch.randn(2, *size)
    assert size == (3, 40, 40)
    with torch.no_grad():
        assert np.abs(run_exported(out, images) - model(images).numpy()).max() < 1e-4
    assert read_metadata(out)["weights"] == "random (seed 0)"


def test_a_bad_extension_and_a_missing_onnx_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    result = invoke("export", "lenet", "--out", tmp_path / "lenet.h5")
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot tell the format of")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    result = invoke("export", "lenet", "--out", tmp_path / "lenet.onnx")
    assert result.exit_code == 2
    assert result.stderr == "error: writing .onnx needs the onnx and onnxscript packages: pip install 'cnnlab[onnx]'\n"
    assert list(tmp_path.iterdir()) == []
