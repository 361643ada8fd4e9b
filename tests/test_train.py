import copy
import json
import math
import signal
import time
from dataclasses import fields

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from cnnlab.runs.metrics import TIMING_COLUMNS
from cnnlab import training
from cnnlab.cli import app
from cnnlab.config import TrainConfig
from cnnlab.data import BatchTransform, load_dataset
from cnnlab.devices import Placement, native_bf16
from cnnlab.distributed import World
from cnnlab.errors import RunInconsistent, TrainingInterrupted, UsageError
from cnnlab.models import create_model
from cnnlab.progress import PlainLines
from cnnlab.runs import METRICS_COLUMNS, Run
from cnnlab.training import INITS, get_lr, init_xavier, resume, train
from processes import start

runner = CliRunner()


def learning_curve(run: Run) -> list[dict]:
    """metrics.csv without the columns that measure time."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in run.metrics.rows()]


def small(tmp_path, **options) -> TrainConfig:
    """A few seconds of training: the MLP on digits with augmentation exercised. The warm-up is
    given, so that runs planned for different lengths share it (a recipe's is cut to a fifth of
    the planned epochs)."""
    return TrainConfig(**{"model": "mlp", "epochs": 3, "crop_padding": 1, "flip": True, "warmup_epochs": 1.0,
                          "runs_dir": str(tmp_path), **options})


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- the README's main job ---------------------------------------------------------------------

def test_default_lenet_run_reaches_97_percent_on_digits(default_run):
    config = default_run.read_record().to_json()
    rows = default_run.metrics.rows()
    assert (config["model"], config["data"], config["input_size"]) == ("lenet", "digits", [1, 28, 28])
    assert [row["epoch"] for row in rows] == list(range(1, config["epochs"] + 1))
    assert rows[-1]["val_acc"] >= 0.97
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_run_directory_follows_the_contract(default_run):
    header = (default_run.path / "metrics.csv").read_text().splitlines()[0]
    assert header == ("epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_seconds,images_per_second,"
                      "train_tflops,utilisation")
    assert header.split(",") == METRICS_COLUMNS
    config = json.loads((default_run.path / "config.json").read_text())
    assert {f.name for f in fields(TrainConfig)} <= config.keys()
    assert config["resize"] == 28 and config["flip"] is False and config["device"] == "cpu"
    assert config["num_classes"] == 10 and config["classes"][3] == "3" and config["world_size"] == 1
    assert set(config["versions"]) == {"python", "torch", "torchvision", "cnnlab"}
    assert "git_commit" in config and config["created"][:2] == "20"
    # LeNet-5 at 1x28x28, counted by hand: params 156 + 2,416 + 48,120 + 10,164 + 850;
    # MACs 6*28*28*25 + 16*10*10*150 + 400*120 + 120*84 + 84*10
    assert config["model_stats"] == {"params": 61706, "trainable_params": 61706, "macs": 416520}
    assert (default_run.path / "summary.csv").read_text().startswith("name,")
    last = default_run.checkpoint("last")
    best = default_run.checkpoint("best")
    rows = default_run.metrics.rows()
    assert last.epoch == len(rows) and best.epoch == max(rows, key=lambda r: r["val_acc"])["epoch"]


# -- determinism, interruption, resumption -------------------------------------------------------

@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """Three uninterrupted epochs; a constant schedule, so two planned epochs are its first two."""
    return train(small(tmp_path_factory.mktemp("runs"), schedule="constant", name="whole"), progress="none")


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(whole_run, tmp_path):
    again = train(small(tmp_path, schedule="constant"), progress="none")
    other = train(small(tmp_path, schedule="constant", seed=1, epochs=1), progress="none")
    assert learning_curve(again) == learning_curve(whole_run)
    assert learning_curve(other)[0] != learning_curve(whole_run)[0]


def test_interruption_while_recording_an_epoch_then_resume_equals_an_uninterrupted_run(
        whole_run, tmp_path, monkeypatch, ctrl_c_reaches_python):
    saves = []
    real_record = Run.record_epoch

    def interrupted_second_record(run, row, state, improved):
        saves.append(state.epoch)
        if len(saves) == 2:  # Ctrl-C arriving while epoch 2 is being recorded
            signal.raise_signal(signal.SIGINT)
        real_record(run, row, state, improved)

    monkeypatch.setattr(Run, "record_epoch", interrupted_second_record)
    with pytest.raises(TrainingInterrupted, match="2 finished epoch"):
        train(small(tmp_path, schedule="constant", name="cut"), progress="none")
    monkeypatch.undo()
    cut = Run(tmp_path / "cut")
    assert len(cut.metrics.rows()) == cut.checkpoint().epoch == 2  # recorded whole
    resumed = resume(cut.path, progress="none")
    assert learning_curve(resumed) == learning_curve(whole_run)
    for key, tensor in whole_run.checkpoint().model.items():
        assert torch.equal(tensor, resumed.checkpoint().model[key])


def test_resume_repairs_a_cut_metrics_row_from_last_pt_and_may_extend_the_run(whole_run, tmp_path):
    cut = train(small(tmp_path, schedule="constant", epochs=2), progress="none")
    text = cut.metrics.path.read_text()
    cut.metrics.path.write_text(text[:text.rindex("\n", 0, -1) + 1] + "2,0.5,")  # a crash mid-append
    resumed = resume(cut.path, epochs=3, progress="none")
    assert learning_curve(resumed) == learning_curve(whole_run)
    record = resumed.read_record()
    assert record.options.epochs == 3
    assert [(note["from"], note["to"], note["after_epoch"]) for note in record.extended] == [(2, 3, 2)]


def test_resume_refuses_what_does_not_add_up_and_changes_nothing(tmp_path):
    run = train(small(tmp_path, epochs=2, name="r"), progress="none")
    files = {p.name: p.read_bytes() for p in run.path.iterdir()}
    with pytest.raises(UsageError, match="fewer than the 2 epoch"):  # a run is never shortened
        resume(run.path, epochs=1, progress="none")
    with open(run.metrics.path, "a") as metrics:  # a row last.pt has never seen (another writer)
        metrics.write("3,9,9,9,9,9,9,9\n")
    with pytest.raises(RunInconsistent, match="epochs 1-3 but last.pt has finished epochs 1-2"):
        resume(run.path, epochs=4, progress="none")
    run.metrics.path.write_bytes(files["metrics.csv"])
    (run.path / "last.pt").unlink()  # metrics for 2 epochs and a best.pt, but nothing to resume from
    with pytest.raises(RunInconsistent, match="2 finished epoch.* and a best.pt but no last.pt"):
        resume(run.path, progress="none")
    assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.name != ".lock"} == \
        {name: data for name, data in files.items() if name not in ("last.pt", ".lock")}


@pytest.mark.slow
def test_ctrl_c_keeps_finished_epochs_and_resume_matches_an_uninterrupted_run(tmp_path):
    # a constant schedule, so a 40-epoch run cut short and resumed to 4 epochs equals a 4-epoch run
    args = ["train", "lenet", "--schedule", "constant", "--warmup-epochs", "0.5", "--crop-padding", "1",
            "--runs-dir", tmp_path]  # a warm-up given is kept (a recipe's is cut to a fifth of the run)
    process = start(["-m", "cnnlab", *args, "--epochs", "40", "--name", "cut"])
    cut = Run(tmp_path / "cut")
    deadline = time.monotonic() + 120
    while not cut.metrics.rows():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    finished = len(cut.metrics.rows())
    assert process.returncode == 130
    assert err.strip() == (f"error: interrupted; {finished} finished epoch(s) are kept in {cut.path} "
                           f"(continue with: cnnlab train --resume {cut.path})")
    assert 1 <= finished < 4 and cut.checkpoint().epoch == finished
    assert out.count("\nepoch ") == finished

    assert cli("train", "--resume", cut.path, "--epochs", 4).exit_code == 0
    assert cli(*args, "--epochs", 4, "--name", "whole").exit_code == 0
    assert learning_curve(cut) == learning_curve(Run(tmp_path / "whole"))


def test_resume_may_change_only_epochs_and_device(tmp_path):
    run = train(small(tmp_path, epochs=1), progress="none")
    with pytest.raises(UsageError, match="--lr cannot change"):
        run.read_record().options.resumed(1, lr=0.5)
    result = cli("train", "--resume", run.path, "--lr", "0.5")
    assert result.exit_code == 2 and "--lr cannot be given" in result.stderr


def test_schedules_match_pytorchs_schedulers():
    steps_per_epoch, epochs, lr = 5, 6, 0.3
    total = steps_per_epoch * epochs
    parameter = torch.nn.Parameter(torch.zeros(1))
    references = {
        "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
        "onecycle": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                                    cycle_momentum=False),
        "step": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2 * steps_per_epoch, gamma=0.5),
        "constant": lambda opt: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0),
    }
    for schedule, make in references.items():
        optimizer = torch.optim.SGD([parameter], lr=lr)
        scheduler = make(optimizer)
        config = TrainConfig(lr=lr, epochs=epochs, schedule=schedule, step_every=2, step_gamma=0.5, warmup_epochs=0)
        for step in range(total):
            assert get_lr(config, step, steps_per_epoch) == pytest.approx(optimizer.param_groups[0]["lr"]), schedule
            optimizer.step()
            scheduler.step()
    warm = TrainConfig(lr=lr, epochs=epochs, schedule="cosine", warmup_epochs=1)
    assert [get_lr(warm, s, steps_per_epoch) for s in range(5)] == pytest.approx([0.06, 0.12, 0.18, 0.24, 0.3])
    assert get_lr(warm, 5, steps_per_epoch) == lr and get_lr(warm, total - 1, steps_per_epoch) < 0.01


def test_xavier_init_is_d2ls_uniform_bound():
    linear = torch.nn.Linear(300, 100)
    init_xavier(linear)
    bound = math.sqrt(6 / (300 + 100))
    assert linear.weight.abs().max() <= bound and linear.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_kaiming_init_keeps_a_deep_relu_stacks_signal_where_pytorchs_default_loses_it():
    """He et al.'s result: with weight variance 2 / fan_in a ReLU layer keeps the mean square of
    its input; PyTorch's default (1 / (3 fan_in)) divides it by 6 per layer, and what is left is
    the biases', the same for every image."""
    torch.manual_seed(0)
    layers = [m for _ in range(16) for m in (torch.nn.Conv2d(256, 256, 1), torch.nn.ReLU())]  # 1x1: no borders
    stack, x = torch.nn.Sequential(*layers), torch.randn(8, 256, 16, 16)
    with torch.no_grad():
        default = stack(x)
        INITS["kaiming"](stack)
        kaiming = stack(x)
    # between images, the default passes on 6^-16 of the input's variance (3.5e-13)
    assert default.var(dim=0).mean().item() < 6.0 ** -15
    # He: the mean square stays 1 (1st layer: variance 2, halved by the ReLU), give or take a
    # finite width's spread, and images still differ
    assert 1 / 3 < kaiming.pow(2).mean().item() < 3 and kaiming.var(dim=0).mean().item() > 0.01
    conv = layers[0]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.02)
    assert not conv.bias.any()


def test_d2l_settings_are_expressible(tmp_path):
    result = cli("train", "lenet", "--optimizer", "sgd", "--momentum", "0", "--lr", "0.9", "--init", "xavier",
                 "--schedule", "constant", "--warmup-epochs", "0", "--weight-decay", "0", "--label-smoothing", "0",
                 "--batch-size", "256", "--epochs", "1", "--no-normalize",
                 "--runs-dir", tmp_path, "--name", "d2l")
    assert result.exit_code == 0, result.output
    config = Run(tmp_path / "d2l").read_record().to_json()
    assert (config["optimizer"], config["lr"], config["init"], config["momentum"]) == ("sgd", 0.9, "xavier", 0)
    assert config["mean"] == [0.0] and config["std"] == [1.0]


def test_cli_prints_one_line_per_epoch_and_never_overwrites_a_run(tmp_path):
    result = cli("train", "mlp", "--epochs", "2", "--runs-dir", tmp_path, "--name", "mine")
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith("epoch")] == \
        [["epoch", "1/2"], ["epoch", "2/2"]]
    before = {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()}
    again = cli("train", "lenet", "--runs-dir", tmp_path, "--name", "mine")
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"error: run '{tmp_path / 'mine'}' already exists; choose another --name or continue it with "
        f"--resume {tmp_path / 'mine'}"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()} == before


def test_rich_progress_runs(tmp_path, capsys):
    train(small(tmp_path, epochs=1), progress="rich")
    assert "epoch 1/1" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["lenet", "--data", "nope"], "unknown data set 'nope'"),
    (["lenet", "--gpu", "1"], "GPU 1 is not available"),
    (["lenet", "--resize", "4"], "does not fit LeNet5"),
    (["lenet", "--device", "tpu"], "unknown device 'tpu'"),
    (["lenet", "--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a GPU"),
    (["--epochs", "3"], "give the MODEL to train"),
])
def test_bad_input_is_one_line_and_creates_no_run(tmp_path, args, message):
    if "--gpu" in args and torch.cuda.device_count() > 1:
        pytest.skip("this machine has a second GPU")
    result = cli("train", *args, "--runs-dir", tmp_path)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_stops_the_run_and_suggests_a_lower_learning_rate(tmp_path):
    result = cli("train", "mlp", "--optimizer", "sgd", "--lr", "1e12", "--schedule", "constant",
                 "--epochs", "3", "--runs-dir", tmp_path, "--name", "hot")
    assert result.exit_code == 1
    assert result.stderr == ("error: the loss became NaN or infinite in epoch 1; try a lower learning "
                             "rate than --lr 1e+12, e.g. --lr 1e+11\n")
    assert Run(tmp_path / "hot").metrics.rows() == []


# -- speed: the defaults that are fast, and a loop that never waits ----------------------------------

def test_auto_speed_options_use_bf16_only_where_the_hardware_multiplies_in_it(monkeypatch):
    def resolved(device, amp="auto", channels_last=None):
        placement = Placement.choose(torch.device(device), amp, channels_last)
        return placement.amp, placement.channels_last

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))  # Ampere
    assert resolved("cuda:0") == ("bf16", True) and torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))  # Turing: emulated
    assert resolved("cuda:0") == ("off", True)
    for avx512_bf16, amx, amp in [(False, False, "off"), (True, False, "bf16"), (False, True, "bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert resolved("cpu") == (amp, True)
    assert resolved("mps") == ("off", False)
    assert resolved("cpu", amp="off", channels_last=False) == ("off", False)  # given choices stay
    with pytest.raises(UsageError, match="--amp fp16 needs a GPU"):
        resolved("cpu", amp="fp16")


def test_config_records_the_speed_options_its_trial_chose(default_run):
    config = default_run.read_record().to_json()
    trial = config["speed_trial"]
    rates = trial["images_per_second"]
    assert len(rates) == (4 if native_bf16(torch.device("cpu")) else 2) and min(rates.values()) > 0
    assert trial["chosen"] == max(rates, key=rates.get)
    precision, layout = trial["chosen"].split(", ")
    assert config["amp"] == ("off" if precision == "fp32" else precision)
    assert config["channels_last"] is (layout == "channels-last")


def test_config_records_whether_the_optimizer_runs_in_pytorchs_fused_kernel(default_run):
    try:  # what this PyTorch offers for lenet's AdamW on the CPU
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        expected = "fused"
    except (RuntimeError, ValueError):
        expected = "default"
    assert default_run.read_record().optimizer_kernel == expected


def test_channels_last_and_bf16_keep_the_learning_curve_of_plain_fp32(tmp_path):
    """The fast defaults change how the arithmetic rounds, not what the run learns."""
    def curve(**options):
        run = train(TrainConfig(model="lenet", epochs=3, runs_dir=str(tmp_path), **options), progress="none")
        return {key: [row[key] for row in learning_curve(run)] for key in ("train_loss", "val_loss", "val_acc")}

    plain = curve(amp="off", channels_last=False)
    channels_last = curve(amp="off", channels_last=True)
    bf16 = curve(amp="bf16", channels_last=True)
    other_seed = curve(amp="off", channels_last=False, seed=1)
    for key in ("train_loss", "val_loss"):
        assert channels_last[key] == pytest.approx(plain[key], rel=1e-5)
        assert bf16[key] == pytest.approx(plain[key], rel=1e-2)
        assert other_seed[key] != pytest.approx(plain[key], rel=1e-2)  # what noise looks like
    assert bf16["val_acc"] == pytest.approx(plain["val_acc"], abs=0.01)


class HostTraffic(TorchDispatchMode):
    """Records the operations that make a GPU wait for the host: reading a tensor's value
    (.item(), float(), bool(), if on a tensor) and making a tensor from Python data."""

    WAITS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.lift_fresh.default)

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.WAITS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_training_step_never_waits_for_the_host():
    # SGD: Adam reads its step counter with .item(), harmlessly, as it stays on the CPU
    config = TrainConfig(model="lenet", optimizer="sgd", batch_size=16, crop_padding=1, flip=True,
                         clip_grad=1.0).with_recipe("LeNet", "small")
    dataset = load_dataset("digits")
    model = create_model("lenet", in_channels=1, num_classes=10).to(memory_format=torch.channels_last)
    transform = BatchTransform((28, 28), [0.5], [0.25], crop_padding=1, flip=True,
                               memory_format=torch.channels_last)
    reporter = PlainLines(quiet=True)
    reporter.refresh_seconds = math.inf  # the loop reads its sums at a refresh; none is due here
    cpu = torch.device("cpu")
    with HostTraffic() as traffic:
        parts = training.TrainingParts(forward=model, optimizer=training.make_optimizer(config, model),
                                       scaler=torch.amp.GradScaler("cpu", enabled=False),
                                       placement=Placement(cpu, "bf16", True), dataset=dataset, transform=transform,
                                       config=config, steps_per_epoch=4, world=World(cpu))
        training.run_epoch(parts, epoch=1, reporter=reporter)
    assert traffic.seen == []


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.9), ("adam", 0.0), ("adamw", 0.0)])
def test_the_fused_optimiser_makes_pytorchs_own_update(optimizer, momentum):
    """make_optimizer takes PyTorch's fused kernel (one kernel for every parameter); three steps
    of it end where PyTorch's plain for-loop implementation of the same optimiser does."""
    config = TrainConfig(optimizer=optimizer, lr=0.05, momentum=momentum, weight_decay=0.01)
    plain_kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    torch.manual_seed(0)
    ours, reference = create_model("lenet_relu"), create_model("lenet_relu")
    reference.load_state_dict(ours.state_dict())
    fused = training.make_optimizer(config, ours)
    assert fused.param_groups[0]["fused"]
    plain = plain_kinds[optimizer](reference.parameters(), 0.05, weight_decay=0.01, foreach=False,
                                   **({"momentum": momentum} if optimizer == "sgd" else {}))
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    for _ in range(3):
        for model, step in ((ours, fused), (reference, plain)):
            step.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            step.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        # Adam divides by sqrt(v) + eps: rounding differs in the last bits of a step of ~lr (0.05)
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def channels_last_model_and_grads(seed: int = 0):
    """LeNet-ReLU (5x5 convolutions: their weights are not contiguous in channels-last) in
    channels-last, and a loss's gradients for it."""
    torch.manual_seed(seed)
    model = create_model("lenet_relu").to(memory_format=torch.channels_last)
    assert any(not p.is_contiguous() for p in model.parameters())
    return model


def three_steps(model, optimizer, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        images = torch.randn(8, 1, 28, 28, generator=generator).to(memory_format=torch.channels_last)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), torch.arange(8)).backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_adam_on_channels_last_weights_is_pytorchs_fused_update_bit_for_bit(kind):
    """make_optimizer's Adam/AdamW hand PyTorch's fused CPU kernel 1-D aliases of channels-last
    weights (it would copy them): three steps end bit for bit where PyTorch's own fused optimiser
    ends on the same model, and its state keeps the parameters' shapes and strides, so either
    optimiser's state_dict loads into the other (checkpoints of earlier runs resume)."""
    ours_model, theirs_model = channels_last_model_and_grads(), channels_last_model_and_grads()
    config = TrainConfig(optimizer=kind, lr=0.05, weight_decay=0.01)
    ours = training.make_optimizer(config, ours_model)
    theirs = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](theirs_model.parameters(), 0.05,
                                                                        weight_decay=0.01, fused=True)
    three_steps(ours_model, ours)
    three_steps(theirs_model, theirs)
    for mine, reference in zip(ours_model.parameters(), theirs_model.parameters()):
        assert torch.equal(mine, reference) and mine.stride() == reference.stride()
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours.state[mine][key], theirs.state[reference][key])
            assert ours.state[mine][key].shape == mine.shape and ours.state[mine][key].stride() == mine.stride()
    saved_ours, saved_theirs = copy.deepcopy(ours.state_dict()), copy.deepcopy(theirs.state_dict())
    theirs.load_state_dict(saved_ours)  # as a checkpoint of each resumes into the other
    ours.load_state_dict(saved_theirs)
    three_steps(ours_model, ours, seed=2)
    three_steps(theirs_model, theirs, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(ours_model.parameters(), theirs_model.parameters()))


def test_fused_adamw_step_makes_no_copies_of_channels_last_weights():
    """The point of the aliases: no copy in the optimiser's step (PyTorch's fused CPU kernel copies
    each non-contiguous parameter, gradient and moment to contiguous memory and back)."""
    model = channels_last_model_and_grads()
    optimizer = training.make_optimizer(TrainConfig(optimizer="adamw", lr=0.05, weight_decay=0.01), model)
    three_steps(model, optimizer)  # the moments exist
    torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.arange(8)).backward()
    with torch.profiler.profile(record_shapes=True) as profile:
        optimizer.step()
    copies = [(event.key, event.input_shapes) for event in profile.key_averages(group_by_input_shape=True)
              if event.key in ("aten::copy_", "aten::clone") and event.input_shapes[0]]  # not the 0-d step counts
    assert copies == []


def test_fused_adamw_leaves_a_gradient_of_another_layout_to_pytorch():
    """A gradient whose strides are not the weight's (here made contiguous by hand) gets PyTorch's
    own copying path: the update is still PyTorch's, element for element."""
    ours_model, theirs_model = channels_last_model_and_grads(), channels_last_model_and_grads()
    ours = training.make_optimizer(TrainConfig(optimizer="adamw", lr=0.05, weight_decay=0.01), ours_model)
    theirs = torch.optim.AdamW(theirs_model.parameters(), 0.05, weight_decay=0.01, fused=True)
    images = torch.randn(8, 1, 28, 28)
    for model, optimizer in ((ours_model, ours), (theirs_model, theirs)):
        torch.nn.functional.cross_entropy(model(images), torch.arange(8)).backward()
        for param in model.parameters():
            param.grad = param.grad.contiguous()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(ours_model.parameters(), theirs_model.parameters()))
