"""Training: one loop, read top to bottom.

    run = cnnlab.train(cnnlab.TrainConfig(model="lenet", data="digits"))
    run = cnnlab.resume("runs/lenet-digits-...", epochs=40)

``train`` and ``resume`` settle everything that can fail before anything is written: the
options (cnnlab/config.py), the processes and the device (cnnlab/distributed.py,
cnnlab/devices.py), the data, the model and its optimiser, and the run directory (a new one,
locked; or the resumed one, locked and reconciled with its last.pt by cnnlab/runs.py). Then for
each epoch: ``run_epoch`` (shuffled, augmented batches, one optimiser step each),
``evaluate_split`` on the test split (reported as ``val_*``, d2l's convention), and the epoch is
recorded: last.pt, best.pt when it improved, one metrics row.

In metrics.csv, ``lr`` is the learning rate of the epoch's first step, ``images_per_second``
counts training images over the training pass alone, ``epoch_seconds`` includes evaluation;
``train_tflops`` is the training FLOPs (forward and backward, cnnlab.summary.cost) of those
images per second and ``utilisation`` that over the device's peak (config.json's device_peak).

Every epoch's randomness (shuffling, augmentation, dropout) is a pure function of
``(seed, epoch)``, so a run interrupted (Ctrl-C, SIGTERM, kill -9) and resumed gives the same
metrics on the CPU as one that was never interrupted. Per-epoch sums (loss, correct, count)
stay on the device and are read once per progress refresh: no ``.item()`` per step.
"""

from __future__ import annotations

import copy
import functools
import math
import platform
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cnnlab
from cnnlab import distributed, event_log, host_memory, speed, threads
from cnnlab.config import TrainConfig
from cnnlab.data import BatchTransform, ImageDataset, batches, default_data_dir, load_dataset, permute_pixels
from cnnlab.devices import Placement, peak_flops
from cnnlab.errors import (DoesNotFit, InputSizeMismatch, InputTooSmall, PeerFailed, RunInconsistent, RunWriteFailed,
                           TrainingDiverged, TrainingInterrupted, UsageError)
from cnnlab.models import (create_model, default_recipe, model_options, model_spec, rebuild_reference, recorded_model,
                           source_record)
from cnnlab.models.blocks import AUX_LOSS_WEIGHT, AuxOutputs
from cnnlab.padding_taps import skip_padding_taps
from cnnlab.progress import make_reporter
from cnnlab.runs import Checkpoint, Run, RunRecord, atomic_write_text, name_taken, run_exists
from cnnlab.summary import summarize, to_csv, training_cost
from cnnlab.summary.fit import free_memory, largest_batch, out_of_memory
from cnnlab.summary.report import byte_text, flop_text


def train(config: TrainConfig | None = None, *, progress: str = "auto") -> Run:
    """Train a model and record a new run; returns the Run. ``progress``: "auto" (a progress
    bar on a terminal, plain lines otherwise), "rich", "plain" or "none"."""
    config = replace(config or TrainConfig())
    config.validate()
    if config.name and name_taken(Path(config.runs_dir) / config.name):
        raise run_exists(Path(config.runs_dir) / config.name)  # say so before any slow work
    return _train(config, progress)


def resume(run, *, epochs: int | None = None, device: str | None = None, progress: str = "auto",
           model_source: str | None = None) -> Run:
    """Continue ``run`` (a run directory) from its last finished epoch, with its own options;
    only ``epochs`` (the new total, never fewer than the finished epochs) and ``device`` may
    change. Refuses, changing nothing, when the run's files do not add up. A run on a user's
    network whose file has changed needs ``model_source`` ("file" or "run"; see
    cnnlab.models.user.rebuild_reference)."""
    run = Run.open(getattr(run, "path", run))
    changes = {name: value for name, value in dict(epochs=epochs, device=device).items() if value is not None}
    return _train(run.read_record().options, progress, run, changes, model_source)


def _train(config: TrainConfig, progress: str, run: Run | None = None, changes: dict | None = None,
           model_source: str | None = None) -> Run:
    """A new run (``run`` None) or ``run`` resumed with ``changes``; the run's lock is held
    from the first check to the end."""
    # 1) the processes and the device: one process, or one of several under torchrun
    world = distributed.join((changes or {}).get("device", config.device))
    try:
        return _train_locked(world, config, progress, run, changes, model_source)
    finally:
        if run is not None:
            run.release()


def _train_locked(world, config: TrainConfig, progress: str, run: Run | None, changes: dict | None,
                  model_source: str | None) -> Run:
    # 2) the run to continue: locked, checked and repaired from its last.pt before any slow work
    last, record, model_name, planned_before = None, None, config.model, None
    if run is not None:
        if world.is_main:
            run.open_for_writing()  # a second writer is refused
            last = run.reconcile(map_location="cpu")
        world.broadcast(None)  # the other processes wait until rank 0 has checked the run
        if not world.is_main and (run.path / "last.pt").exists():
            last = run.checkpoint("last", map_location="cpu")
        record = run.read_record()
        config = record.options.resumed(last.epoch if last else 0, **changes)
        planned_before = record.options.epochs
        model_name = recorded_model(rebuild_reference(config.model, record.model_source, run.path, model_source),
                                    last and last.model)

    # 3) the recipe, device, data, model, optimiser: everything that can fail, before anything is written
    spec = model_spec(model_name)
    given, config = config, config.with_recipe(spec.family, default_recipe(model_name))  # explicit options win
    recipe = config.recipe_values(spec.family)
    from_recipe = {name: getattr(config, name) for name in recipe
                   if name != "min_steps" and getattr(given, name) is None}
    model_kwargs = model_options(model_name, config.model_args or [])
    world.local_batch(config.batch_size)  # --batch-size is global: it must split evenly
    # the rule's precision and memory format (an --amp the device lacks fails here); a new run may
    # trade them for faster ones by trial once the model exists
    rule = Placement.choose(world.device, config.amp, config.channels_last)
    data_dir = str(Path(config.data_dir or default_data_dir()).expanduser())
    resize = config.resize or spec.input_size[1]
    dataset = load_dataset(config.data, data_dir, image_size=resize, device=world.device)
    dataset = permute_pixels(dataset, config.permute_pixels)  # before any resize, as eval does
    # full batches only (reshuffled every epoch): a last batch of one image breaks batch norm
    steps_per_epoch = max(1, len(dataset.train_labels) // config.batch_size)
    epochs = config.epochs
    if "epochs" in from_recipe and epochs * steps_per_epoch < recipe.get("min_steps", 0):  # see Recipe
        epochs = from_recipe["epochs"] = math.ceil(recipe["min_steps"] / steps_per_epoch)
        from_recipe["min_steps"] = recipe["min_steps"]
    warmup_epochs, warmup_note = shortened_warmup(config.warmup_epochs, epochs, config.schedule, from_recipe)
    if config.log == "tensorboard":
        event_log.require_tensorboard()
    input_size = (dataset.channels, resize, resize)
    torch.manual_seed(config.seed)
    model = create_model(model_name, in_channels=dataset.channels, num_classes=dataset.num_classes,
                         **model_kwargs)
    if config.init != "default":
        INITS[config.init](model)
    summary = summarize(model, input_size=input_size)  # an input the model cannot take fails here
    mean, std = dataset.channel_stats() if config.normalize else ([0.0] * dataset.channels, [1.0] * dataset.channels)

    def step_cost(side: int, batch: int, placement: Placement):
        return training_cost(model, input_size=(input_size[0], side, side), batch_size=batch,
                             optimizer=config.optimizer, momentum=config.momentum if config.optimizer == "sgd" else 0.0,
                             amp=placement.amp, device=placement.device.type)

    # will a step fit? (asked of the rule's placement, before a speed trial would try one)
    cost = step_cost(input_size[1], world.local_batch(config.batch_size), rule)
    free = device_free_memory(rule.device)
    if config.fit_check is not False and free is not None and cost.memory.peak > free:
        raise does_not_fit(cost, free, rule, input_size, world,
                           peak_at=lambda side: step_cost(side, 1, rule).memory.peak
                           if fits(model, (input_size[0], side, side)) else None)
    placement, speed_trial = rule, None
    if run is None:  # a resumed run keeps the placement it recorded
        placement, speed_trial = choose_placement(config, world, model, dataset, input_size, mean, std, data_dir)
        if placement.amp != rule.amp:  # the cost depends on the precision, not on the memory format
            cost = step_cost(input_size[1], world.local_batch(config.batch_size), placement)
    device_peak = peak_flops(placement, data_dir)  # what utilisation divides by
    # the options as the run trains with them, every "auto" and "decided by the data" settled, once
    config = replace(config, device=str(world.device), amp=placement.amp, channels_last=placement.channels_last,
                     data_dir=data_dir, resize=resize, epochs=epochs, warmup_epochs=warmup_epochs,
                     flip=dataset.flip_safe if config.flip is None else config.flip)
    model = placed_for_training(placement, model)
    forward = world.wrap(model, config.sync_bn)  # under torchrun: DDP
    forward = torch.compile(forward) if config.compile else forward  # checkpoints save `model`
    transform = BatchTransform(input_size[1:], mean, std, crop_padding=config.crop_padding, flip=config.flip,
                               device=placement.device, memory_format=placement.memory_format)
    optimizer = make_optimizer(config, model)
    kernel = "fused" if optimizer.defaults.get("fused") else "default"
    scaler = torch.amp.GradScaler(world.device.type, enabled=placement.amp == "fp16")

    # 4) the run directory: a new one (locked), or the resumed one at its last.pt
    #    (under torchrun only rank 0 writes it; the other processes learn its path)
    history, best_val_acc, best_epoch = [], -1.0, 0
    if run is None:
        if world.is_main:
            run = Run.create(config.runs_dir, config.name, model=config.model, data=dataset.name)
        try:
            if world.is_main:
                config = replace(config, name=run.name)
                record = describe_run(config, dataset, input_size, world, mean, std, summary.totals, from_recipe)
                record = replace(record, model_source=source_record(config.model, run.path), device_peak=device_peak,
                                 speed_trial=speed_trial and speed_trial.record(), optimizer_kernel=kernel)
                atomic_write_text(run.path / "summary.csv", to_csv(summary))
                run.write_record(record)
        except BaseException:
            run.release()
            raise
        path = world.broadcast(run.path if world.is_main else None)  # every process learns the run's path
        run = run if world.is_main else Run(path)
    else:
        check_data_unchanged(record, describe_run(record.options, dataset, input_size, world, mean, std,
                                                  summary.totals, from_recipe), run)
        if last is not None:
            last.load_weights(model, run.path / "last.pt")
            last.restore(optimizer, scaler, run.path / "last.pt")
            history, best_val_acc, best_epoch = list(last.history), last.best_val_acc, last.best_epoch
        if world.is_main:
            record = replace(extended(record, config, len(history), world), device_peak=device_peak,
                             optimizer_kernel=kernel)
            run.write_record(record)

    # 5) the loop: train, evaluate, record; Ctrl-C or SIGTERM discards only the epoch in progress
    parts = TrainingParts(forward=forward, optimizer=optimizer, scaler=scaler, placement=placement, dataset=dataset,
                          transform=transform, config=config, steps_per_epoch=steps_per_epoch, world=world)
    reporter = make_reporter(progress if world.is_main else "none")
    reporter.start(describe_start(config, dataset, summary.totals.params, input_size, world, run, len(history)))
    if history and planned_before is not None and planned_before != config.epochs:
        reporter.start(describe_replanning(config, planned_before, len(history), steps_per_epoch))
    if not history and world.is_main:
        reporter.start(describe_recipe(config, from_recipe))
        if warmup_note:
            reporter.start(warmup_note)
        if speed_trial:
            reporter.start(speed_trial.describe())
        reporter.start(describe_optimizer_kernel(config.optimizer, kernel))
        seconds = epoch_seconds(cost.per_image.train_flops, len(dataset.train_labels), placement)
        reporter.start(describe_cost(cost, free, seconds, placement))
        slow = slow_epoch_note(seconds, len(dataset.train_labels), placement, input_size, spec,
                               fits=lambda side: fits(model, (input_size[0], side, side)))
        if slow:
            reporter.start(slow)
    log = None
    if config.log == "tensorboard" and world.is_main:
        log = event_log.EventLog(run.path, len(history) * steps_per_epoch, steps_per_epoch)
        if not history:
            log.options(config.to_dict())
    stop = StopSignals()
    threads.forget()  # the first epoch looks at the load afresh: what ran since an earlier training is not it
    try:
        with stop.installed():
            for epoch in range(len(history) + 1, config.epochs + 1):
                epoch_started = time.perf_counter()
                train_loss, train_acc, lr, images_per_second = run_epoch(parts, epoch, reporter)
                val_loss, val_acc = evaluate_split(forward, placement, dataset.test_images,
                                                   dataset.test_labels, transform, config.batch_size, world)
                if not math.isfinite(val_loss):
                    raise diverged(epoch, config)
                achieved = cost.per_image.train_flops * images_per_second  # FLOP/s of all processes
                row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                           val_acc=val_acc, lr=lr, epoch_seconds=time.perf_counter() - epoch_started,
                           images_per_second=images_per_second, train_tflops=achieved / 1e12,
                           utilisation=achieved / (device_peak["flops_per_second"] * world.size))
                improved = val_acc > best_val_acc
                if improved:
                    best_val_acc, best_epoch = val_acc, epoch
                with stop.deferred():  # the epoch is recorded whole, or not at all
                    if world.is_main:  # the run's record in every checkpoint: a .pt file describes itself
                        checkpoint = Checkpoint(epoch, best_epoch, best_val_acc, [*history, row], model.state_dict(),
                                                optimizer.state_dict(), scaler.state_dict(), record)
                        record_epoch(run, row, checkpoint, improved, len(history))
                    history.append(row)
                    reporter.epoch_end(row, config.epochs)
                if log is not None:
                    log.epoch(row, [get_lr(config, step, steps_per_epoch)
                                    for step in range((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch)])
    except Interrupted as interrupted:
        raise TrainingInterrupted(
            f"{interrupted.name}; {len(history)} finished epoch(s) are kept in {run.path} "
            f"(continue with: cnnlab train --resume {run.path})", interrupted.signal_number) from None
    except RuntimeError as error:  # under torchrun: a collective failed, another process died or hung
        if not distributed.is_peer_failure(error):
            raise
        raise PeerFailed(f"{distributed.peer_failure_message(error)}; {len(history)} finished epoch(s) "
                         f"are kept in {run.path} (continue with --resume {run.path})") from None
    finally:
        reporter.close()
        if log is not None:
            log.close()
        run.release()
    reporter.finish(run, best_val_acc, best_epoch)
    return run


# -- the model and its optimiser -------------------------------------------------------------

def init_xavier(model: nn.Module) -> None:
    """d2l's initialisation: Xavier-uniform weights for every convolution and linear layer."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)


def init_kaiming(model: nn.Module) -> None:
    """He et al. (2015): normal weights of variance 2 / fan_in and zero biases, so a ReLU layer
    keeps its input's scale. PyTorch's default (variance 1 / (3 fan_in)) shrinks the signal ~6x
    per ReLU layer, torchvision's VGG init (fan_out, linear N(0, 0.01)) at every widening layer:
    a BatchNorm-free stack of a dozen or more layers barely passes the input on (measured at
    init: VGG-16's logits vary 60x less from image to image than with this init) and stays at
    chance (vgg16 on digits: 0.14 with its own init, 0.99 with this one)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


INITS = {"xavier": init_xavier, "kaiming": init_kaiming}


def placed_for_training(placement: Placement, model: nn.Module) -> nn.Module:
    """``model`` as training computes it: on the placement's device in its memory format, its
    convolutions skipping the kernel taps that only ever read padding (cnnlab.padding_taps)."""
    return skip_padding_taps(placement.place(model))


class ChannelsLastAliases:
    """For PyTorch's Adam and AdamW with the fused kernel on the CPU: that kernel copies every
    non-contiguous tensor it updates to a contiguous one and back, so a channels-last
    convolution weight, its gradient and both moments were copied twice a step (ResNet-18 at
    width 1/2, 32 px, bf16 on two CPU cores: the optimiser's step 2.2-2.8 ms with the copies,
    1.4 ms without; the training step ~22.3 ms against ~21.3 ms). The update is elementwise, so
    where the four tensors share the one channels-last layout the kernel is given 1-D aliases of
    their memory: the same arithmetic on the same elements, while the tensors themselves (and so
    checkpoints) keep their shapes and strides. Anything that is not exactly what this expects
    (another PyTorch's argument order, amsgrad, another device) is left to PyTorch as it is."""

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, *rest):
        has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, *rest)
        if group.get("fused") and not group.get("amsgrad"):
            for i, param in enumerate(params):
                if param.is_contiguous():  # most parameters: nothing to spare
                    continue
                state, grad, exp_avg, exp_avg_sq = self.state[param], grads[i], exp_avgs[i], exp_avg_sqs[i]
                if (grad is param.grad and exp_avg is state.get("exp_avg") and exp_avg_sq is state.get("exp_avg_sq")
                        and param.device.type == "cpu" and param.dim() == 4
                        and param.is_contiguous(memory_format=torch.channels_last)
                        and param.stride() == grad.stride() == exp_avg.stride() == exp_avg_sq.stride()):
                    params[i], grads[i], exp_avgs[i], exp_avg_sqs[i] = map(dense_alias, (param, grad, exp_avg,
                                                                                         exp_avg_sq))
        return has_complex


def dense_alias(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-D view of all the memory of ``tensor`` (a tensor whose elements fill one block,
    whatever their order)."""
    return tensor.detach().as_strided((tensor.numel(),), (1,), tensor.storage_offset())


class Adam(ChannelsLastAliases, torch.optim.Adam):
    """torch.optim.Adam, its fused CPU kernel without copies of channels-last tensors."""


class AdamW(ChannelsLastAliases, torch.optim.AdamW):
    """torch.optim.AdamW, its fused CPU kernel without copies of channels-last tensors."""


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimiser, with PyTorch's fused kernel where it has one for the parameters'
    device: one kernel updates every parameter, where the default loops over them with several
    passes each (the same update; VGG-11 at width 1/2, 32 px, AdamW under bf16 on two CPU cores:
    52 against 12 images/s, most of a step having been the optimiser's). Adam and AdamW skip the
    kernel's copies of channels-last tensors (ChannelsLastAliases); SGD's are left (its
    momentum buffers are made inside the kernel's call, where an alias cannot reach)."""
    kind, options = {"sgd": (torch.optim.SGD, dict(momentum=config.momentum, nesterov=config.nesterov)),
                     "adam": (Adam, {}), "adamw": (AdamW, {})}[config.optimizer]
    params = list(model.parameters())
    try:
        return kind(params, config.lr, weight_decay=config.weight_decay, fused=True, **options)
    except (RuntimeError, ValueError):  # this PyTorch has no fused kernel for the device or dtype
        return kind(params, config.lr, weight_decay=config.weight_decay, **options)


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

@dataclass(frozen=True)
class TrainingParts:
    """What every epoch of a run trains with, built once before the loop: only the epoch's
    number and the progress reporter change from one call of ``run_epoch`` to the next."""

    forward: nn.Module  # the model as called: under torchrun its DDP wrapper, compiled with --compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    placement: Placement
    dataset: ImageDataset
    transform: BatchTransform
    config: TrainConfig
    steps_per_epoch: int
    world: distributed.World

    @functools.cached_property
    def train_images(self) -> torch.Tensor:
        """The training images the epochs index: the data set's, or resized to the input size
        once where that copy is small (BatchTransform.resized_once), before the first epoch."""
        return self.transform.resized_once(self.dataset.train_images)


def run_epoch(parts: TrainingParts, epoch: int, reporter) -> tuple[float, float, float, float]:
    """One pass over the shuffled training images; returns loss, accuracy, first lr, images/s."""
    model, optimizer, scaler, placement = parts.forward, parts.optimizer, parts.scaler, parts.placement
    dataset, transform, config, world = parts.dataset, parts.transform, parts.config, parts.world
    steps_per_epoch = parts.steps_per_epoch
    model.train()
    device = parts.train_images.device
    threads.fit_to_load(device)  # on the CPU: as many threads as the cores other processes leave free
    # the epoch's randomness depends on (seed, epoch, rank) only: a resumed run repeats it exactly
    torch.manual_seed(epoch_seed(config.seed, epoch, world.rank))  # dropout and other in-model randomness
    generator = torch.Generator(device).manual_seed(epoch_seed(config.seed, epoch))  # data order, augmentation
    order = torch.randperm(len(dataset.train_labels), device=device, generator=generator)  # the same everywhere
    order = world.shard(order)  # this process's rows of every global batch (all of them, alone)
    batch_size = world.local_batch(config.batch_size)
    if world.rank:  # the other processes augment with random numbers of their own
        generator.manual_seed(epoch_seed(config.seed, epoch, world.rank))
    loss_sum = torch.zeros((), device=device)  # each batch's mean loss times its images
    correct = torch.zeros((), dtype=torch.long, device=device)  # accumulated on the device: no waiting
    count = 0
    first_lr = get_lr(config, (epoch - 1) * steps_per_epoch, steps_per_epoch)
    reporter.epoch_start(epoch, config.epochs, steps_per_epoch)
    started = time.perf_counter()
    train_batches = batches(parts.train_images, dataset.train_labels, batch_size, order, steps_per_epoch)
    with host_memory.freed_memory_kept(device):
        for step, (images, y) in enumerate(train_batches):
            x = transform(images, augment=True, generator=generator)
            lr = get_lr(config, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, logits = training_loss(model, x, y, placement, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            loss_sum.add_(loss.detach(), alpha=len(y))
            correct.add_((logits.argmax(1) == y).sum())
            count += len(y)
            if reporter.due():
                loss_so_far, correct_so_far = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
                if not math.isfinite(loss_so_far):
                    raise diverged(epoch, config)
                reporter.step(step + 1, loss_so_far / count, correct_so_far / count,
                              count / (time.perf_counter() - started))
    sums = torch.stack([loss_sum, correct.to(loss_sum.dtype), loss_sum.new_full((), count)])  # filled on the device
    loss_sum, correct, count = world.sum(sums).tolist()  # of all processes
    seconds = time.perf_counter() - started
    if not math.isfinite(loss_sum):
        raise diverged(epoch, config)
    return loss_sum / count, correct / count, first_lr, count / seconds


def training_loss(model, x, y, placement: Placement, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss a training step minimises, and the logits."""
    with placement.autocast():
        outputs = model(x)
        logits = outputs.logits if isinstance(outputs, AuxOutputs) else outputs
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if isinstance(outputs, AuxOutputs):  # GoogLeNet's side heads add their losses, weighted 0.3 as in the paper
            loss = loss + AUX_LOSS_WEIGHT * sum(F.cross_entropy(a, y, label_smoothing=label_smoothing)
                                                for a in outputs.aux)
    return loss, logits


def choose_placement(config: TrainConfig, world, model: nn.Module, dataset, input_size, mean, std,
                     data_dir: str) -> tuple[Placement, "speed.SpeedTrial | None"]:
    """The run's precision and memory format: as given, or the fastest candidate by a few timed
    training steps of copies of the model on the run's first batch (cnnlab.speed; the run's own
    model, optimiser and random numbers are left untouched). Under torchrun, rank 0's choice."""
    options = speed.candidates(world.device, config.amp, config.channels_last)
    batch = world.local_batch(config.batch_size)
    images, labels = next(batches(dataset.train_images, dataset.train_labels, batch))

    def images_per_second(placement: Placement) -> float:
        trial_model = placed_for_training(placement, copy.deepcopy(model))
        optimizer = make_optimizer(config, trial_model)
        scaler = torch.amp.GradScaler(placement.device.type, enabled=placement.amp == "fp16")
        x = BatchTransform(input_size[1:], mean, std, device=placement.device,
                           memory_format=placement.memory_format)(images)

        def step() -> torch.Tensor:
            loss, _ = training_loss(trial_model, x, labels, placement, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.detach()

        cuda = [placement.device] if placement.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), host_memory.freed_memory_kept(placement.device):
                return speed.timed_steps(step, len(labels))
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            return 0.0  # this candidate does not fit: never chosen

    threads.fit_to_load(world.device)  # the thread count the first epoch will have
    key = (f"{config.model} {' '.join(config.model_args or [])} | {'x'.join(map(str, input_size))} | batch {batch} | "
           f"{config.optimizer}")
    chosen = speed.choose(options, images_per_second, data_dir, key) if world.is_main else None
    index = world.broadcast(options.index(chosen[0]) if world.is_main else None)
    return options[index], chosen and chosen[1]


@torch.no_grad()
def evaluate_split(model, placement, images, labels, transform, batch_size, world) -> tuple[float, float]:
    """Mean cross-entropy (without label smoothing) and top-1 accuracy on a split."""
    model.eval()
    world.share_buffers(model)  # rank 0's batch-norm statistics, as it saves them
    images, labels = world.shard(images), world.shard(labels)  # every image once, on one process
    sums = torch.zeros(3, device=images.device)  # loss sum, correct predictions, images
    with host_memory.freed_memory_kept(images.device):  # autocast's weight copies, each batch
        for batch, y in batches(images, labels, batch_size):
            x = transform(batch)
            with placement.autocast():
                logits = model(x)
            loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
            sums += torch.stack([loss_sum, (logits.argmax(1) == y).sum(), sums.new_full((), len(y))])
    loss_sum, correct, count = world.sum(sums).tolist()  # the whole split
    return loss_sum / count, correct / count


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return seed * 1_000_003 + epoch + rank * 1_000_003 ** 2


def diverged(epoch: int, config: TrainConfig) -> TrainingDiverged:
    return TrainingDiverged(f"the loss became NaN or infinite in epoch {epoch}; try a lower learning "
                            f"rate than --lr {config.lr:g}, e.g. --lr {config.lr / 10:g}")


# -- stopping between epochs ---------------------------------------------------------------------

class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised where the loop was, like KeyboardInterrupt."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.name = {signal.SIGINT: "interrupted", signal.SIGHUP: "the terminal closed (SIGHUP)"}.get(
            signal_number, "terminated")


STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Ctrl-C (SIGINT), SIGTERM (``timeout``, a job scheduler) and SIGHUP (a closed terminal)
    stop training where it is, discarding only the epoch in progress; while an epoch is being
    recorded they wait for the record to be whole. A second signal while stopping is ignored.
    A signal the launcher chose to ignore (SIGINT for a background job of a script, SIGHUP
    under nohup) stays ignored."""

    def __init__(self):
        self.received: int | None = None
        self.deferring = False

    def handle(self, signal_number, frame):
        if self.received is not None:
            return
        self.received = signal_number
        if not self.deferring:
            raise Interrupted(signal_number)

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # only it receives signals
            yield
            return
        signals = [s for s in STOPPING_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
        previous = {s: signal.signal(s, self.handle) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.received is not None:
            raise Interrupted(self.received)


# -- what the run records -----------------------------------------------------------------------

def record_epoch(run: Run, row: dict, checkpoint: Checkpoint, improved: bool, kept: int) -> None:
    """The run store's record of one epoch; a full disk or another write error is one line
    that says what is kept."""
    try:
        run.record_epoch(row, checkpoint, improved)
    except OSError as error:
        raise RunWriteFailed(f"could not record epoch {row['epoch']} in {run.path} ({error.strerror or error}); "
                             f"the {kept} epoch(s) before it are kept (free space, then continue with: "
                             f"cnnlab train --resume {run.path})") from None


# what the data give now, against what the run recorded when it started
DATA_DERIVED = ("input_size", "num_classes", "classes", "train_images", "test_images", "mean", "std", "model_stats")


def check_data_unchanged(record: RunRecord, now: RunRecord, run: Run) -> None:
    """Refuse to resume a run whose config.json disagrees with what its data and model give now
    (a hand-edited config.json, or a data set changed since): its checkpoints would record values
    that evaluation then uses silently."""
    recorded, fresh = record.to_json(), now.to_json()
    differing = [key for key in DATA_DERIVED if not same_values(recorded[key], fresh[key])]
    if differing:
        key = differing[0]
        raise RunInconsistent(f"{run.config_path} records {key} {short(recorded[key])}, but the data and model "
                              f"give {short(fresh[key])} now (config.json edited, or the data set changed?); "
                              f"nothing was changed")


def same_values(a, b) -> bool:
    """Equal, numbers to six significant digits (a channel's mean sums in a thread-dependent order)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return a == b


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_run(config: TrainConfig, dataset, input_size, world, mean, std, totals, from_recipe) -> RunRecord:
    """config.json: every option resolved, plus what plot/compare/eval need to know."""
    return RunRecord(
        options=config,
        set_by_recipe=dict(from_recipe),
        input_size=tuple(input_size),
        num_classes=dataset.num_classes,
        classes=list(dataset.classes),
        train_images=len(dataset.train_labels),
        test_images=len(dataset.test_labels),
        mean=list(mean),
        std=list(std),
        model_stats={"params": totals.params, "trainable_params": totals.trainable_params, "macs": totals.macs},
        world_size=world.size,
        versions=versions(),
        git_commit=git_commit(),
        created=now(),
    )


def extended(record: RunRecord, config: TrainConfig, finished: int, world) -> RunRecord:
    """The record of a resumed run: the new device and process count, and a note of a change
    in the number of epochs (the original count stays readable)."""
    notes = list(record.extended)
    if config.epochs != record.options.epochs:
        notes.append({"from": record.options.epochs, "to": config.epochs, "after_epoch": finished, "when": now()})
    return replace(record, options=config, world_size=world.size, extended=notes)


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": str(torch.__version__),  # plain str: checkpoints
            "torchvision": str(torchvision.__version__), "cnnlab": cnnlab.__version__}  # hold only plain types


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


WARMUP_DIVISOR = 5  # a recipe's warm-up takes at most a fifth of the run


def shortened_warmup(warmup_epochs: float, epochs: int, schedule: str,
                     from_recipe: dict) -> tuple[float, str | None]:
    """A recipe's warm-up longer than a fifth of the run (WARMUP_DIVISOR), cut to that (a 2-epoch
    warm-up in a 2-epoch run would train wholly at a rising rate), and the note saying so (or None).
    A warm-up given explicitly is kept as given."""
    longest = epochs / WARMUP_DIVISOR
    if "warmup_epochs" not in from_recipe or schedule == "onecycle" or warmup_epochs <= longest:
        return warmup_epochs, None
    from_recipe["warmup_epochs"] = longest
    return longest, (f"warm-up shortened from the recipe's {warmup_epochs:g} epoch(s) to {longest:g}, a fifth of "
                     f"this {epochs}-epoch run (--warmup-epochs sets it)")


def describe_replanning(config: TrainConfig, planned_before: int, finished: int, steps_per_epoch: int) -> str:
    """The resume line's second line when --epochs changed the run's length: what that does to the
    learning-rate schedule from the next step on."""
    if config.schedule in ("constant", "step"):
        return (f"{finished} of {planned_before} planned epochs done, now {config.epochs}; the {config.schedule} "
                f"schedule does not depend on the run's length")
    before = replace(config, epochs=planned_before)
    next_step = finished * steps_per_epoch
    return (f"{finished} of {planned_before} planned epochs done, now {config.epochs}: the {config.schedule} "
            f"schedule is re-planned over {config.epochs} epochs (the next step's learning rate "
            f"{get_lr(config, next_step, steps_per_epoch):.3g}, not {get_lr(before, next_step, steps_per_epoch):.3g})")


def describe_recipe(config: TrainConfig, from_recipe: dict) -> str:
    """The start line's second line: the recipe and every value it set."""
    notes = {"epochs": f" (raised to reach the recipe's {from_recipe['min_steps']} optimiser steps on this small "
                       f"data set)"} if "min_steps" in from_recipe else {}
    values = ", ".join(f"{name} {value}{notes.get(name, '')}" for name, value in from_recipe.items()
                       if name != "min_steps")
    return f"recipe {config.recipe}: {values or 'every option it sets was given explicitly'}"


SLOW_EPOCH_SECONDS = 120  # an epoch longer than this gets a note before it starts


def epoch_seconds(train_flops: int, images: int, placement) -> float:
    """An epoch's estimated duration: its training FLOPs (forward and backward, see
    cnnlab.summary.cost) at the rate this device multiplies large matrices (measured now, so a
    busy machine gets a longer one; two FLOPs a multiply-accumulate)."""
    return train_flops * images / (2 * matmul_rate(placement))


def slow_epoch_note(seconds: float, images: int, placement, input_size, spec, fits) -> str | None:
    """A note, before a long wait, with the epoch's estimated duration and the --resize and
    --model-arg width= values that would bring it to a minute."""
    if seconds < SLOW_EPOCH_SECONDS:
        return None
    side = input_size[1]
    sides = [r for r in (160, 128, 96, 64, 32) if r < side and seconds * (r / side) ** 2 <= 60]
    hints = [f"--resize {r} (about {seconds * (r / side) ** 2:.0f} s)" for r in sides if fits(r)][:1]
    hints += [f"--model-arg width={w} (about {seconds * w * w:.0f} s)" for w in (0.5, 0.25, 0.125)
              if "width" in spec.options and seconds * w * w <= 60][:1]
    return (f"note: one epoch of {images} images will take about {seconds / 60:.0f} min on {placement.device}"
            + (f"; {' or '.join(hints)} would be quicker" if hints else ""))


def device_free_memory(device: torch.device) -> int | None:
    """Bytes free on the training device (None where it cannot be read, e.g. mps)."""
    try:
        return free_memory(device)
    except UsageError:
        return None


def describe_optimizer_kernel(kind: str, kernel: str) -> str:
    """The start line on the optimiser's implementation (make_optimizer chooses it)."""
    if kernel == "fused":
        return f"optimizer: {kind} in PyTorch's fused kernel (one kernel updates every parameter)"
    return f"optimizer: {kind} in PyTorch's default implementation (this device has no fused kernel for it)"


def describe_cost(cost, free: int | None, seconds: float, placement) -> str:
    """The start line on cost: the estimated peak at the batch against free memory, the epoch's time."""
    against = f" of {byte_text(free)} free" if free is not None else ""
    return (f"estimate: peak {byte_text(cost.memory.peak)} at batch {cost.batch_size}{against}; "
            f"{flop_text(cost.per_image.train_flops)}FLOPs an image; one epoch about {seconds:.2g} s "
            f"at {placement.device}'s matrix-product rate")


def does_not_fit(cost, free: int, placement, input_size, world, peak_at) -> DoesNotFit:
    """One line: the estimate against free memory, and the batch or --resize that would fit
    (``peak_at(side)``: the peak at batch 1 with that input side, None where the model refuses it)."""
    batch = largest_batch(cost, free) * world.size  # --batch-size is global
    if batch >= 1:
        advice = f"--batch-size {batch} would fit"
    else:
        sides = [r for r in (160, 128, 96, 64, 32) if r < input_size[1]]
        fitting = next((r for r in sides if (peak_at(r) or math.inf) <= free), None)
        advice = f"--resize {fitting} at batch 1 would fit" if fitting else "no smaller batch or input fits"
    return DoesNotFit(f"a training step needs about {byte_text(cost.memory.peak)} at batch "
                      f"{cost.batch_size * world.size} on {placement.device}, {byte_text(free)} are free: {advice} "
                      f"(--no-fit-check tries anyway)")


def fits(model, input_size) -> bool:
    """Whether ``model`` takes inputs of ``input_size`` (traced on an empty batch: no arithmetic)."""
    try:
        summarize(model, input_size=input_size)
        return True
    except (InputTooSmall, InputSizeMismatch):
        return False


def matmul_rate(placement, side: int = 1024) -> float:
    """Multiply-accumulates per second of a square matrix product on this device and precision
    (the best of three, after a warm-up)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(placement.amp, torch.float32)
    a = torch.randn(side, side, device=placement.device, dtype=dtype)
    best = math.inf
    for _ in range(4):
        started = time.perf_counter()
        (a @ a).sum().item()  # .item() waits for a GPU
        best = min(best, time.perf_counter() - started)
    return side ** 3 / best


def describe_start(config, dataset, params, input_size, world, run, start_epoch) -> str:
    if start_epoch >= config.epochs:
        return (f"{run.path} has finished its {config.epochs} epoch(s); to train it further, "
                f"give --epochs with --resume")
    what = f"resuming {run.path} after epoch {start_epoch}" if start_epoch else f"run {run.path}"
    return (f"{what}: {config.model} ({params:,} parameters) on {dataset.name} "
            f"({len(dataset.train_labels)} train / {len(dataset.test_labels)} test images at "
            f"{'x'.join(map(str, input_size))}), {config.epochs} epoch(s) on {world.describe()}")
