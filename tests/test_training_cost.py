"""The training cost against PyTorch's own counters: FLOPs against FlopCounterMode over one
forward and backward pass, activations against the tensors autograd really keeps
(saved_tensors_hooks), optimiser state against a real optimiser's, and the fit search."""

import io
import json

import pytest
import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.errors import InputSizeMismatch, InputTooSmall
from cnnlab.models import create_model
from cnnlab.summary import cost_to_csv, cost_to_json, render_cost_table, summarize, training_cost
from cnnlab.summary.fit import fit_batch, largest_batch

runner = CliRunner()
BATCH = 2  # two images: batch norm trains on it, and the per-image figures are doubled


def measured(name, side, model_args=None, amp=None):
    """What PyTorch itself counts over one forward and backward pass in training mode, per
    batch of BATCH: FLOPs (FlopCounterMode: convolutions, linear layers and matrix products,
    2 per multiply-accumulate; it skips batch norm, pooling, activations and additions, and so
    does training_cost) and the bytes of the distinct storages autograd keeps for backward
    (saved_tensors_hooks, by data pointer; parameters and buffers left out); ``amp``: under
    CPU autocast in that 16-bit type."""
    torch.manual_seed(0)
    model = create_model(name, **(model_args or {})).train()
    channels = cnnlab.model_spec(name).input_size[0]
    images = torch.randn(BATCH, channels, side, side)
    persistent = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in persistent:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            outputs = model(images)
        getattr(outputs, "logits", outputs).sum().backward()
    return counter.get_total_flops(), sum(kept.values())


def check_against_pytorch(name, side, model_args=None):
    flops, saved = measured(name, side, model_args)
    cost = training_cost(name, input_size=side, batch_size=BATCH, model_args=model_args)
    assert cost.per_batch.train_flops == pytest.approx(flops, rel=0.02), (name, side)
    assert cost.memory.activations == pytest.approx(saved, rel=0.10), (name, side)
    leaves = [row for row in cost.layers if not row.is_container]
    assert sum(row.saved_bytes for row in leaves) == cost.memory.activations
    assert sum(row.forward_flops + row.backward_flops for row in leaves) == cost.per_image.train_flops


def reduced(name):
    """A quarter of the width where the model has the option, to keep the test cheap."""
    return {"width": 0.25} if "width" in cnnlab.model_spec(name).options else None


# one model per family and every kind of layer the zoo uses (LRN, dropout, concatenations,
# in-place ReLUs, attention products, projection shortcuts), at two sizes each; LeNet, the MLP
# and the MNIST course nets take only their 28x28, alexnet_2012 and zfnet their 224 (their first
# linear layer is sized for it): None. The rest of the zoo is in the slow test below.
REPRESENTATIVE = [("lenet", 28, None), ("mlp", 28, None), ("small_cnn", 8, None), ("alexnet", 96, 128),
                  ("alexnet_2012", 224, None), ("zfnet", 224, None), ("vgg11", 32, 48), ("nin_d2l", 96, 128),
                  ("googlenet", 8, 16), ("resnet18", 8, 16), ("resnet50", 8, 16), ("resnet20", 8, 16),
                  ("densenet_small", 32, 48), ("cbam_resnet18", 8, 16), ("eca_resnet18", 8, 16),
                  ("mnist_inception", 28, None)]
# torchvision's own networks, at full width (they have no width option)
TWINS = [("torchvision:alexnet", 64, 96), ("torchvision:vgg11", 32, 48), ("torchvision:resnet18", 16, 32)]
SLOW_TWINS = ["torchvision:resnet50", "torchvision:googlenet", "torchvision:densenet121"]  # seconds each


@pytest.mark.parametrize("name, small, large", REPRESENTATIVE + TWINS)
def test_flops_and_activations_match_pytorch(name, small, large):
    for side in (small, large) if large else (small,):
        check_against_pytorch(name, side, reduced(name))


def two_sides(name, model_args):
    """The two smallest of a few sides the model takes (one for a model that takes only one)."""
    sides = []
    for side in (8, 16, 28, 32, 48, 64, 96, 128, 160, 224):
        try:
            summarize(name, input_size=side, model_args=model_args)
        except (InputTooSmall, InputSizeMismatch):
            continue
        sides.append(side)
        if len(sides) == 2:
            break
    assert sides, f"{name} takes none of the sides tried"
    return sides


@pytest.mark.slow
@pytest.mark.parametrize("name", cnnlab.list_models() + SLOW_TWINS)
def test_every_zoo_model_matches_pytorch(name):
    for side in two_sides(name, reduced(name)):
        check_against_pytorch(name, side, reduced(name))


def test_containers_add_up_their_layers():
    cost = training_cost("resnet18", input_size=32, batch_size=4, model_args={"width": 0.25})
    top = cost.rows(depth=1)
    assert sum(row.forward_flops for row in top) == cost.per_image.forward_flops
    assert sum(row.backward_flops for row in top) == cost.per_image.backward_flops
    assert sum(row.saved_bytes for row in top) == cost.memory.activations
    assert cost.per_batch.train_flops == 4 * cost.per_image.train_flops


@pytest.mark.parametrize("optimizer, momentum, copies", [("sgd", 0.0, 0), ("sgd", 0.9, 1), ("adam", 0.0, 2),
                                                          ("adamw", 0.0, 2)])
def test_weights_gradients_and_optimizer_state_match_a_real_step(optimizer, momentum, copies):
    model = create_model("lenet")
    make = {"sgd": lambda p: torch.optim.SGD(p, 0.1, momentum=momentum), "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW}[optimizer]
    step = make(model.parameters())
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    step.step()
    state = sum(t.numel() * t.element_size() for s in step.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.ndim > 0)  # Adam's step counter is a scalar
    cost = training_cost("lenet", batch_size=8, optimizer=optimizer, momentum=momentum)
    assert cost.memory.optimizer_state == state
    assert cost.memory.gradients == sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    assert cost.memory.weights == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert cost.memory.peak == sum(getattr(cost.memory, key) for key in (
        "weights", "gradients", "optimizer_state", "activations", "transient"))
    assert state == copies * cost.memory.weights


@pytest.mark.parametrize("name, side", [("resnet18", 32), ("vgg11", 32), ("lenet", 28)])
def test_bf16_activations_and_weight_copies_match_autocast(name, side):
    """Under autocast activations are 16-bit and autograd keeps a 16-bit copy of every weight."""
    flops, saved = measured(name, side, reduced(name), amp=torch.bfloat16)
    cost = training_cost(name, input_size=side, batch_size=BATCH, model_args=reduced(name), amp="bf16")
    assert cost.memory.activations == pytest.approx(saved, rel=0.10)
    assert cost.per_batch.train_flops == pytest.approx(flops, rel=0.02)


def test_formats_hold_the_same_numbers():
    cost = training_cost("lenet", batch_size=32, optimizer="adam")
    document = json.loads(cost_to_json(cost))
    assert document["per_image"]["train_flops"] == cost.per_image.train_flops
    assert document["per_batch"]["train_flops"] == 32 * cost.per_image.train_flops
    for key in ("weights", "gradients", "optimizer_state", "activations", "peak"):
        assert document["memory"][key] == getattr(cost.memory, key)
    lines = cost_to_csv(cost).splitlines()
    header, total = lines[0].split(","), dict(zip(lines[0].split(","), lines[-1].split(",")))
    assert {"forward_flops", "backward_flops", "train_flops", "activations", "peak"} <= set(header)
    assert int(total["peak"]) == cost.memory.peak and int(total["train_flops"]) == cost.per_batch.train_flops


def test_the_table_fits_80_columns_and_states_the_convention():
    cost = training_cost("googlenet", input_size=96, batch_size=128, optimizer="sgd", momentum=0.9)
    console = Console(file=io.StringIO(), width=80, color_system=None, record=True)
    console.print(render_cost_table(cost, depth=2))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80
    assert "FLOPs = 2 x MACs" in text and "peak" in text


def test_cli_training_and_its_bad_values():
    result = runner.invoke(app, ["summary", "lenet", "--training", "-b", "64", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["memory"]["batch_size"] == 64
    for bad in (["-b", "0"], ["--optimizer", "rmsprop"], ["--amp", "fp8"], ["--fit", "--device", "cuda:7"]):
        result = runner.invoke(app, ["summary", "lenet", "--training", *bad])
        assert result.exit_code != 0
        assert result.output.strip().count("\n") == 0 and result.output.startswith("error: "), result.output


def test_fit_finds_the_largest_batch_under_the_free_memory():
    cost = training_cost("lenet", batch_size=1)
    assert largest_batch(cost, cost.memory_at(37).peak) == 37
    assert largest_batch(cost, cost.memory_at(37).peak - 1) == 36
    assert largest_batch(cost, cost.memory_at(0).peak - 1) == 0


def test_fit_measure_runs_one_step_on_the_cpu():
    found = fit_batch("lenet", device="cpu", limit=32, measure=True)
    assert found.batch_size == 32 and found.limited_by == "the limit"
    assert found.measured_batch == 32 and found.measured_peak > 0
    assert found.margin == found.free - found.cost.memory.peak > 0


def test_training_stops_before_writing_when_the_estimate_does_not_fit(tmp_path, monkeypatch):
    import cnnlab.training
    from cnnlab.errors import DoesNotFit

    monkeypatch.setattr(cnnlab.training, "device_free_memory", lambda device: 2 * 2**20)  # 2 MiB free
    config = cnnlab.TrainConfig(model="lenet", batch_size=64, epochs=1, runs_dir=str(tmp_path / "runs"), device="cpu",
                                amp="off")
    with pytest.raises(DoesNotFit, match=r"--batch-size (\d+) would fit") as refused:
        cnnlab.train(config, progress="none")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    suggested = int(refused.value.args[0].split("--batch-size ")[1].split()[0])
    step = dict(optimizer="adamw", momentum=0.0, device="cpu")  # lenet's recipe: AdamW
    assert training_cost("lenet", batch_size=suggested, **step).memory.peak <= 2 * 2**20
    assert training_cost("lenet", batch_size=suggested + 1, **step).memory.peak > 2 * 2**20
    run = cnnlab.train(cnnlab.TrainConfig(**{**config.to_dict(), "fit_check": False}), progress="none")
    (row,) = run.metrics.rows()
    peak = run.read_record().device_peak["flops_per_second"]
    flops = training_cost("lenet", batch_size=64, **step).per_image.train_flops
    assert row["train_tflops"] == pytest.approx(flops * row["images_per_second"] / 1e12)
    assert row["utilisation"] == pytest.approx(row["train_tflops"] * 1e12 / peak)


def test_the_device_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    import cnnlab.devices as devices

    calls = []
    monkeypatch.setattr(devices, "measured_matmul_flops", lambda placement: calls.append(1) or 1e11)
    placement = devices.Placement.choose("cpu", "off")
    first = devices.peak_flops(placement, tmp_path)
    second = devices.peak_flops(placement, tmp_path)
    assert first == second and first["flops_per_second"] == 1e11 and len(calls) == 1


def test_an_older_metrics_file_gains_the_cost_columns_when_an_epoch_is_appended(tmp_path):
    from cnnlab.runs.metrics import METRICS_COLUMNS, MetricsLog

    older = METRICS_COLUMNS[:-2]  # written before train_tflops and utilisation
    log = MetricsLog(tmp_path / "metrics.csv")
    log.path.write_text(",".join(older) + "\n" + ",".join(["1"] + ["0.5"] * (len(older) - 1)) + "\n")
    assert log.rows()[0]["val_acc"] == 0.5 and "utilisation" not in log.rows()[0]
    log.append({**dict.fromkeys(older, 0.25), "epoch": 2, "train_tflops": 0.01, "utilisation": 0.02})
    header = log.path.read_text().splitlines()[0].split(",")
    assert header == METRICS_COLUMNS
    first, second = log.rows()
    assert first["val_acc"] == 0.5 and "utilisation" not in first  # not measured then: left empty
    assert second["utilisation"] == 0.02 and second["train_tflops"] == 0.01


def test_cli_fit_names_the_batch_and_the_measured_step():
    result = runner.invoke(app, ["summary", "lenet", "--fit", "--measure", "--device", "cpu", "-b", "16"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "batch 16 fits" in lines[0] and "margin" in lines[1] and "one real step at batch 16" in lines[2]
    assert max(map(len, lines)) <= 80
