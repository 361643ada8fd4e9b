"""Training: one loop, read top to bottom.

    run = cnnlab.train(cnnlab.TrainConfig(model="lenet", data="digits"))

``train`` resolves the configuration (everything that can fail does so before anything is
written), creates the run directory, then for each epoch: ``run_epoch`` (shuffled, augmented
batches, one optimiser step each), ``evaluate_split`` on the test split (reported as
``val_*``, d2l's convention), one metrics row, then ``last.pt`` and ``best.pt``.

In metrics.csv, ``lr`` is the learning rate of the epoch's first step, ``images_per_second``
counts training images over the training pass alone, ``epoch_seconds`` includes evaluation.

Every epoch's randomness (shuffling, augmentation, dropout) is a pure function of
``(seed, epoch)``, so a run interrupted with Ctrl-C and continued with ``resume=`` gives the
same metrics on the CPU as one that was never interrupted. Per-epoch sums (loss, correct,
count) stay on the device and are read once per progress refresh: no ``.item()`` per step.

Under torchrun every process runs this same loop (cnnlab/distributed.py): each takes its rows
of every global batch and of the test split, DDP averages the gradients, the per-epoch sums
are added up over the processes, and only rank 0 writes the run directory.
"""

from __future__ import annotations

import math
import platform
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cnnlab
from cnnlab import distributed, threads
from cnnlab.data import BatchTransform, batches, default_data_dir, load_dataset
from cnnlab.errors import (BadCheckpoint, DeviceUnavailable, PeerFailed, TrainingDiverged,
                           TrainingInterrupted, UsageError, first_line)
from cnnlab.models import create_model, model_spec
from cnnlab.runs import DEFAULT_RUNS_DIR, Run, atomic_write_text, load_checkpoint, run_exists
from cnnlab.summary import summarize, to_csv

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
INITS = ("default", "xavier")
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)
RESUME_CAN_CHANGE = ("epochs", "device")  # a resumed run keeps every other option
CHECKPOINT_FORMAT = "cnnlab-checkpoint"


@dataclass
class TrainConfig:
    """Every option of a training run. Defaults train LeNet on the embedded digits to ~98 %."""

    # -- what to train, on what
    model: str = "lenet"           # a registered model or torchvision:<name>
    data: str = "digits"           # digits | mnist | fashion-mnist | kmnist | cifar10 | cifar100 | svhn | ImageFolder dir
    data_dir: str | None = None    # where downloads go; None: $CNNLAB_DATA_DIR or ~/.cache/cnnlab
    resize: int | None = None      # input side; None: the model's natural size (28 for lenet, 224 for alexnet)
    normalize: bool = True         # subtract the training images' channel mean, divide by their std
    flip: bool | None = None       # random horizontal flips; None: on, except for digits and characters
    crop_padding: int = 0          # random crops of the image padded by this many pixels; 0: off
    # -- optimisation
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"       # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9          # sgd only
    nesterov: bool = False         # sgd only
    weight_decay: float = 0.05
    schedule: str = "cosine"       # constant | step | cosine | onecycle (per step)
    warmup_epochs: float = 2.0     # linear warm-up from 0 before the schedule (not with onecycle)
    step_every: int = 10           # step schedule: multiply the lr by step_gamma every this many epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.1   # in the training loss only; val_loss is plain cross-entropy
    clip_grad: float | None = None  # clip the gradient norm to this; None: no clipping
    init: str = "default"          # default (PyTorch's) | xavier (d2l's)
    seed: int = 0
    # -- device and speed
    device: str = "auto"           # auto | cpu | cuda | cuda:N | mps
    amp: str = "auto"              # auto | off | bf16 | fp16: mixed precision with autocast; auto: bf16
                                   # where the hardware multiplies in it (see native_bf16), else off
    channels_last: bool | None = None  # None: on for cpu and cuda, where convolutions run faster in it
    compile: bool = False          # torch.compile the model
    sync_bn: bool = False          # under torchrun: batch norm over the global batch (SyncBatchNorm, CUDA only)
    # -- the run store
    name: str | None = None        # None: <model>-<data>-<timestamp>
    runs_dir: str = DEFAULT_RUNS_DIR

    @classmethod
    def from_run(cls, run_dir) -> "TrainConfig":
        """The configuration a run was trained with, every option resolved (its config.json)."""
        saved = Run.open(run_dir).read_config()
        names = [f.name for f in fields(cls)]
        if any(name not in saved for name in names):
            raise UsageError(f"{run_dir} was not written by this version of cnnlab train; cannot resume it")
        return cls(**{name: saved[name] for name in names})

    def validate(self) -> None:
        choices = dict(optimizer=OPTIMIZERS, schedule=SCHEDULES, init=INITS, amp=AMP_CHOICES)
        for option, allowed in choices.items():
            if getattr(self, option) not in allowed:
                raise UsageError(f"--{option} must be one of {', '.join(allowed)}, not {getattr(self, option)!r}")
        positive = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, step_every=self.step_every)
        for option, value in positive.items():
            if not value > 0:
                raise UsageError(f"--{option.replace('_', '-')} must be positive, not {value}")
        if self.resize is not None and self.resize < 1:
            raise UsageError(f"--resize must be positive, not {self.resize}")
        if self.crop_padding < 0:
            raise UsageError(f"--crop-padding must be 0 or more, not {self.crop_padding}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UsageError("--nesterov needs --optimizer sgd and a positive --momentum")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")


def train(config: TrainConfig | None = None, *, resume=None, progress="auto") -> Run:
    """Train a model and record the run; returns the Run.

    ``resume``: a run directory to continue from its last finished epoch. ``config`` may then
    change only ``epochs`` and ``device``. ``progress``: "auto" (a progress bar on a terminal,
    plain lines otherwise), "rich", "plain" or "none".
    """
    # 1) the configuration: a fresh one, or the one the resumed run was started with
    run = Run.open(resume) if resume is not None else None
    config = resumed_config(run, config) if run else replace(config or TrainConfig())
    config.validate()
    if run is None and config.name and (Path(config.runs_dir) / config.name).exists():
        raise run_exists(Path(config.runs_dir) / config.name)  # say so before any slow work

    # 2) device, data, model, optimiser: everything that can fail, before anything is written
    device = resolve_device(distributed.process_device(config.device))  # under torchrun: this process's GPU
    distributed.join_process_group(device)  # under torchrun: one of several processes; else nothing
    distributed.local_batch_size(config.batch_size)  # --batch-size is global: it must split evenly
    resolve_speed_options(config, device)
    spec = model_spec(config.model)
    config.resize = config.resize or spec.input_size[1]
    config.data_dir = str(Path(config.data_dir or default_data_dir()).expanduser())
    dataset = load_dataset(config.data, config.data_dir, image_size=config.resize, device=device)
    config.flip = dataset.flip_safe if config.flip is None else config.flip
    input_size = (dataset.channels, config.resize, config.resize)
    torch.manual_seed(config.seed)
    model = create_model(config.model, in_channels=dataset.channels, num_classes=dataset.num_classes)
    if config.init == "xavier":
        init_xavier(model)
    summary = summarize(model, input_size=input_size)  # an input the model cannot take fails here
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    forward = distributed.distribute(model, device, config.sync_bn)  # under torchrun: DDP
    forward = torch.compile(forward) if config.compile else forward  # checkpoints save `model`
    mean, std = dataset.channel_stats() if config.normalize else ([0.0] * dataset.channels, [1.0] * dataset.channels)
    transform = BatchTransform(input_size[1:], mean, std, crop_padding=config.crop_padding,
                               flip=config.flip, device=device, memory_format=memory_format)
    optimizer = make_optimizer(config, model)
    autocast = make_autocast(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    # full batches only (reshuffled every epoch): a last batch of one image breaks batch norm
    steps_per_epoch = max(1, len(dataset.train_labels) // config.batch_size)

    # 3) the run directory: a new one, or the resumed one rolled back to its last checkpoint
    #    (under torchrun only rank 0 writes it; the other processes learn its path)
    main = distributed.is_main()
    if run is None:
        if main:
            run = Run.create(config.runs_dir, config.name, model=config.model, data=dataset.name)
            config.name = run.name
            atomic_write_text(run.path / "summary.csv", to_csv(summary))
            run.write_config(describe_run(config, dataset, input_size, device, mean, std, summary.totals))
        run = Run(distributed.broadcast_from_main(run and run.path))
        start_epoch, best_val_acc, best_epoch = 0, -1.0, 0
    else:
        start_epoch, best_val_acc, best_epoch = restore(run, model, optimizer, scaler, device)
        if main:
            run.truncate_metrics(start_epoch)
            run.write_config({**run.read_config(), "epochs": config.epochs, "device": str(device),
                              "world_size": distributed.world_size()})
    saved = run.read_config() if main else None  # goes into every checkpoint, so a .pt file describes itself

    # 4) the loop: train, evaluate, record; Ctrl-C discards only the epoch in progress
    reporter = make_reporter(progress if main else "none")
    reporter.start(describe_start(config, dataset, summary.totals.params, input_size, device, run, start_epoch))
    finished_epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            epoch_started = time.perf_counter()
            train_loss, train_acc, lr, images_per_second = run_epoch(
                forward, optimizer, scaler, autocast, dataset, transform, config, epoch,
                steps_per_epoch, reporter)
            val_loss, val_acc = evaluate_split(forward, autocast, dataset.test_images,
                                               dataset.test_labels, transform, config.batch_size)
            if not math.isfinite(val_loss):
                raise diverged(epoch, config)
            row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                       val_acc=val_acc, lr=lr, epoch_seconds=time.perf_counter() - epoch_started,
                       images_per_second=images_per_second)
            improved = val_acc > best_val_acc
            if improved:
                best_val_acc, best_epoch = val_acc, epoch
            state = dict(format=CHECKPOINT_FORMAT, epoch=epoch, best_val_acc=best_val_acc,
                         best_epoch=best_epoch, model=model.state_dict(),
                         optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), config=saved)
            with interrupts_deferred():  # the epoch is recorded whole, or not at all
                if main:
                    run.append_metrics(row)
                    run.save_checkpoint("last.pt", state)
                    if improved:
                        run.save_checkpoint("best.pt", state)
                finished_epoch = epoch
                reporter.epoch_end(row, config.epochs)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted; {finished_epoch} finished epoch(s) are kept in {run.path} "
            f"(continue with: cnnlab train --resume {run.path})") from None
    except RuntimeError as error:  # under torchrun: a collective failed, another process died or hung
        if not distributed.is_peer_failure(error):
            raise
        raise PeerFailed(f"{distributed.peer_failure_message(error)}; {finished_epoch} finished epoch(s) "
                         f"are kept in {run.path} (continue with --resume {run.path})") from None
    finally:
        reporter.close()
    reporter.finish(run, best_val_acc, best_epoch)
    return run


# -- the configuration ------------------------------------------------------------------------

def resumed_config(run: Run, requested: TrainConfig | None) -> TrainConfig:
    """The run's own configuration; ``requested`` may differ from it only in RESUME_CAN_CHANGE."""
    config = TrainConfig.from_run(run.path)
    if requested is None:
        return config
    changed = [f.name for f in fields(TrainConfig)
               if f.name not in RESUME_CAN_CHANGE and getattr(requested, f.name) != getattr(config, f.name)]
    if changed:
        raise UsageError(f"a resumed run keeps its options, but {', '.join(changed)} differ from "
                         f"{run.path}'s (only {' and '.join(RESUME_CAN_CHANGE)} can change)")
    return replace(config, **{name: getattr(requested, name) for name in RESUME_CAN_CHANGE})


def resolve_device(spec: str = "auto") -> torch.device:
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; a missing one is an error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            have = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s), numbered 0 to {count - 1}"
            raise DeviceUnavailable(f"GPU {index} is not available: this machine has {have} (use --device cpu)")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("the Apple GPU (mps) is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_speed_options(config: TrainConfig, device: torch.device) -> None:
    """Fill in ``amp="auto"`` and ``channels_last=None`` for ``device``: the fastest settings that
    leave results within seed-to-seed noise (measured by benchmarks/train_throughput.py)."""
    if config.amp == "auto":
        config.amp = "bf16" if native_bf16(device) else "off"
    if config.channels_last is None:
        config.channels_last = device.type in ("cpu", "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes stay fixed: time cuDNN's algorithms once


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: CUDA GPUs since Ampere (compute
    capability 8), CPUs with AVX512-BF16 or AMX. Elsewhere bf16 is emulated, and slower."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":  # torch's own CPU feature probes (private, so absent ones count as no)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def make_autocast(amp: str, device: torch.device):
    if amp == "off":
        return nullcontext
    if amp == "fp16" and device.type == "cpu":
        raise UsageError("--amp fp16 needs a GPU; on the CPU use --amp bf16")
    return lambda: torch.autocast(device.type, dtype=AMP_DTYPES[amp])


# -- the model and its optimiser -------------------------------------------------------------

def init_xavier(model: nn.Module) -> None:
    """d2l's initialisation: Xavier-uniform weights for every convolution and linear layer."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr, weight_decay=decay)
    return torch.optim.AdamW(params, lr, weight_decay=decay)


def get_lr(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step ``step`` (counted from 0 over the whole run)."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":  # the phases of PyTorch's OneCycleLR (without momentum cycling)
        # 1) cosine rise from lr/25 to lr over the first 30 % of steps, 2) cosine fall to lr/25e4
        peak = max(1.0, 0.3 * total - 1)
        if step <= peak:
            return cosine_between(config.lr / 25, config.lr, step / peak)
        return cosine_between(config.lr, config.lr / 25e4, (step - peak) / max(1.0, total - 1 - peak))
    # 1) linear warm-up
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    # 2) the schedule proper
    if config.schedule == "step":
        return config.lr * config.step_gamma ** (step // steps_per_epoch // config.step_every)
    if config.schedule == "cosine":
        return cosine_between(config.lr, 0.0, (step - warmup) / max(1, total - warmup))
    return config.lr


def cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * min(fraction, 1.0))) / 2


# -- one epoch of training, one pass of evaluation --------------------------------------------

def run_epoch(model, optimizer, scaler, autocast, dataset, transform, config, epoch,
              steps_per_epoch, reporter) -> tuple[float, float, float, float]:
    """One pass over the shuffled training images; returns loss, accuracy, first lr, images/s."""
    model.train()
    device = dataset.train_images.device
    threads.fit_to_load(device)  # on the CPU: as many threads as the cores other processes leave free
    # the epoch's randomness depends on (seed, epoch, rank) only: a resumed run repeats it exactly
    rank = distributed.rank()  # 0 unless under torchrun
    torch.manual_seed(epoch_seed(config.seed, epoch, rank))  # dropout and other in-model randomness
    generator = torch.Generator(device).manual_seed(epoch_seed(config.seed, epoch))  # data order, augmentation
    order = torch.randperm(len(dataset.train_labels), device=device, generator=generator)  # the same everywhere
    order = distributed.shard(order)  # under torchrun: this process's rows of every global batch
    batch_size = distributed.local_batch_size(config.batch_size)
    if rank:  # the other processes augment with random numbers of their own
        generator.manual_seed(epoch_seed(config.seed, epoch, rank))
    sums = torch.zeros(3, device=device)  # loss sum, correct predictions, images
    first_lr = get_lr(config, (epoch - 1) * steps_per_epoch, steps_per_epoch)
    reporter.epoch_start(epoch, config.epochs, steps_per_epoch)
    started = time.perf_counter()
    train_batches = batches(dataset.train_images, dataset.train_labels, batch_size, order, steps_per_epoch)
    for step, (images, y) in enumerate(train_batches):
        x = transform(images, augment=True, generator=generator)
        lr = get_lr(config, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.clip_grad is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        # new_full fills on the device; new_tensor would copy from the host and make a GPU wait
        sums += torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum(), sums.new_full((), len(y))])
        if reporter.due():
            loss_sum, correct, count = sums.tolist()
            if not math.isfinite(loss_sum):
                raise diverged(epoch, config)
            reporter.step(step + 1, loss_sum / count, correct / count, count / (time.perf_counter() - started))
    loss_sum, correct, count = distributed.all_reduce_sums(sums).tolist()  # under torchrun: of all processes
    seconds = time.perf_counter() - started
    if not math.isfinite(loss_sum):
        raise diverged(epoch, config)
    return loss_sum / count, correct / count, first_lr, count / seconds


@torch.no_grad()
def evaluate_split(model, autocast, images, labels, transform, batch_size) -> tuple[float, float]:
    """Mean cross-entropy (without label smoothing) and top-1 accuracy on a split."""
    model.eval()
    distributed.share_main_buffers(model)  # under torchrun: rank 0's batch-norm statistics, as it saves them
    images, labels = distributed.shard(images), distributed.shard(labels)  # every image once, on one process
    sums = torch.zeros(3, device=images.device)  # loss sum, correct predictions, images
    for batch, y in batches(images, labels, batch_size):
        x = transform(batch)
        with autocast():
            logits = model(x)
        loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
        sums += torch.stack([loss_sum, (logits.argmax(1) == y).sum(), sums.new_full((), len(y))])
    loss_sum, correct, count = distributed.all_reduce_sums(sums).tolist()  # the whole split
    return loss_sum / count, correct / count


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return seed * 1_000_003 + epoch + rank * 1_000_003 ** 2


def diverged(epoch: int, config: TrainConfig) -> TrainingDiverged:
    return TrainingDiverged(f"the loss became NaN or infinite in epoch {epoch}; try a lower learning "
                            f"rate than --lr {config.lr:g}, e.g. --lr {config.lr / 10:g}")


# -- what the run records -----------------------------------------------------------------------

@contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) until the block has run, then deliver it to the usual handler."""
    if threading.current_thread() is not threading.main_thread():  # only it receives signals
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)


def restore(run: Run, model, optimizer, scaler, device) -> tuple[int, float, int]:
    """Load last.pt into the model and optimiser; (epoch, best val acc, best epoch)."""
    path = run.path / "last.pt"
    if not path.exists():  # interrupted before the first epoch finished
        return 0, -1.0, 0
    state = load_checkpoint(path, map_location=device)
    load_model_state(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return int(state["epoch"]), float(state["best_val_acc"]), int(state["best_epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BadCheckpoint(f"checkpoint {str(path)!r} cannot resume this run ({e})") from None


def load_model_state(model: nn.Module, state: dict, path) -> None:
    """Put a checkpoint's weights into ``model``; anything else is a BadCheckpoint."""
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("model"), dict):
        raise BadCheckpoint(f"{str(path)!r} is not a cnnlab checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise BadCheckpoint(f"checkpoint {str(path)!r} does not fit the model ({first_line(e)})") from None


def describe_run(config: TrainConfig, dataset, input_size, device, mean, std, totals) -> dict:
    """config.json: every option resolved, plus what plot/compare/eval need to know."""
    return {
        **asdict(config),
        "device": str(device),
        "input_size": list(input_size),
        "num_classes": dataset.num_classes,
        "classes": dataset.classes,
        "train_images": len(dataset.train_labels),
        "test_images": len(dataset.test_labels),
        "mean": mean,
        "std": std,
        "model_stats": {"params": totals.params, "trainable_params": totals.trainable_params,
                        "macs": totals.macs},
        "world_size": distributed.world_size(),
        "versions": versions(),
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }


def versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cnnlab": cnnlab.__version__}


def git_commit() -> str | None:
    """The commit of the cnnlab source tree that trained, if it is a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


# -- progress: plain lines, or a rich progress bar on a terminal --------------------------------

def describe_start(config, dataset, params, input_size, device, run, start_epoch) -> str:
    if start_epoch >= config.epochs:
        return (f"{run.path} has finished its {config.epochs} epoch(s); to train it further, "
                f"give --epochs with --resume")
    what = f"resuming {run.path} after epoch {start_epoch}" if start_epoch else f"run {run.path}"
    return (f"{what}: {config.model} ({params:,} parameters) on {dataset.name} "
            f"({len(dataset.train_labels)} train / {len(dataset.test_labels)} test images at "
            f"{'x'.join(map(str, input_size))}), {config.epochs} epoch(s) on {where_training(device)}")


def where_training(device) -> str:
    processes = distributed.world_size()
    return f"{processes} processes ({device.type})" if processes > 1 else str(device)


def format_row(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  "
            f"lr {row['lr']:.3g}  {row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s")


class PlainLines:
    """One line per epoch on stdout: for logs, pipes and tests."""

    refresh_seconds = 10.0  # how often the loop reads its sums mid-epoch (to stop on NaN early)

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.last_refresh = time.monotonic()

    def print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last_refresh < self.refresh_seconds:
            return False
        self.last_refresh = now
        return True

    def start(self, text: str) -> None:
        self.print(text)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.last_refresh = time.monotonic()

    def step(self, step: int, loss: float, acc: float, images_per_second: float) -> None:
        pass

    def epoch_end(self, row: dict, epochs: int) -> None:
        self.print(format_row(row, epochs))

    def close(self) -> None:
        pass

    def finish(self, run: Run, best_val_acc: float, best_epoch: int) -> None:
        if best_epoch:
            self.print(f"best val_acc {best_val_acc:.4f} at epoch {best_epoch}; run saved in {run.path}")


class RichProgress(PlainLines):
    """A live bar for the epoch in progress (batch, loss, acc, images/s, ETA); epoch lines above."""

    refresh_seconds = 0.25

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        super().__init__()
        self.bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}  "
                                       "{task.fields[speed]:.0f} img/s"),
                            TimeRemainingColumn(), transient=True)
        self.task = None
        self.bar.start()

    def print(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, soft_wrap=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        super().epoch_start(epoch, epochs, steps)
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task("", total=steps, epoch=f"{epoch}/{epochs}", loss=0.0, acc=0.0, speed=0.0)

    def step(self, step: int, loss: float, acc: float, images_per_second: float) -> None:
        self.bar.update(self.task, completed=step, loss=loss, acc=acc, speed=images_per_second)

    def close(self) -> None:
        self.bar.stop()


def make_reporter(progress: str) -> PlainLines:
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "plain"
    if progress == "rich":
        return RichProgress()
    if progress in ("plain", "none"):
        return PlainLines(quiet=progress == "none")
    raise UsageError(f"progress must be auto, rich, plain or none, not {progress!r}")
