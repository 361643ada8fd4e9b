"""Training utilisation per model: cnnlab's training loop against a plain PyTorch loop.

    python benchmarks/utilisation.py                                   # the whole zoo (long)
    python benchmarks/utilisation.py --models lenet resnet18 vgg11     # shell patterns too: 'resnet*'
    python benchmarks/utilisation.py --models alexnet vgg16 --size 224 --width 1 --device cuda

Each model trains at the zoo's CPU-practical size (benchmarks/zoo_learns.py picks it: input side
and width; ``--size``/``--width`` override) on the embedded digits with its default recipe's
batch size, optimiser and learning rate, two ways, each in a process of its own (the plain one
started first, so that cnnlab's start and speed trial do not slow its warm-up): cnnlab's CPU
epochs leave malloc's heap and settings (cnnlab.host_memory) kinder to whatever runs after them
in a process -- the plain VGG-11 loop ran about 15 % faster after them -- so a baseline sharing
their process is not the baseline a tutorial's program sees. The two are timed in turns, plain
then cnnlab, ``--repeats`` rounds: this machine's speed changes by itself (ResNet-18's step took
20 ms or 30 ms, in either loop, for minutes at a time, as other virtual machines used its
cores), and timing one side after the other had turned such a change into a ratio (LeNet 0.73x).

(a) plain: the loop a PyTorch tutorial writes -- fp32, contiguous tensors, the optimiser of the
    recipe's kind with PyTorch's default implementation, the recipe's loss (its label smoothing;
    GoogLeNet's side heads), torch's own thread count, glibc's memory settings, the images
    already resized and normalised as float tensors (so the plain loop spends nothing on data);
(b) cnnlab: ``cnnlab.training.run_epoch``, the loop ``cnnlab train`` runs, set up as
    ``cnnlab train`` sets it up: the precision and memory format its speed trial chooses
    (cnnlab.speed), its optimiser kernels, freed host memory kept between steps
    (cnnlab.host_memory), its per-batch resize, normalisation and augmentation.

Printed per model: images/s of each (median of its ``--repeats`` timed passes, each as many
epochs of ``--steps`` steps as the plain loop trains in ``--seconds``), their ratio (the median
of the rounds' ratios), and the utilisation of each -- training FLOPs per image
(``cnnlab.summary.training_cost``: forward and backward, 2 FLOPs a multiply-accumulate) times
images/s over the device's peak in the precision that side computes in (``cnnlab.devices.
peak_flops``: a large matrix product measured on this machine, or a GPU's published figure).
Then the median ratio and the median utilisation. ``--out`` writes the table as CSV.

Timings on a machine busy with other work differ from idle ones; ``--background-load N`` keeps
N processes spinning for the whole measurement to measure the busy case on purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from cnnlab.config import TrainConfig
from cnnlab.data import BatchTransform, load_dataset
from cnnlab.devices import Placement, peak_flops, resolve_device
from cnnlab.distributed import World
from cnnlab.models import create_model, default_recipe, list_models, model_spec
from cnnlab.progress import PlainLines
from cnnlab.summary import training_cost
from cnnlab.training import (TrainingParts, choose_placement, make_optimizer, placed_for_training, run_epoch,
                             training_loss)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from timing import write_rows  # noqa: E402  (sibling scripts)
from train_throughput import background_load, set_threads, timed  # noqa: E402
from zoo_learns import practical_size  # noqa: E402

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def plain_epoch(model, optimizer, images, labels, batch_size: int, steps: int, loss_of) -> None:
    """The tutorial loop over ``steps`` random batches of ready float images."""
    model.train()
    order = torch.randperm(len(labels), device=labels.device)
    for step in range(steps):
        rows = order[step * batch_size:(step + 1) * batch_size]
        x, y = images[rows], labels[rows]
        loss = loss_of(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


FORWARDED = ("size", "width", "macs", "steps", "device")  # to each side's process


def build_side(name: str, side: str, args, device: torch.device, data_dir: str) -> tuple[Callable[[int], None], dict]:
    """One side of the comparison (``plain`` or ``cnnlab``) for model ``name``, ready to train:
    ``run(epochs)`` trains that many epochs of the chosen number of steps; ``facts`` are what the
    table needs from this side."""
    side_px, width, _ = practical_size(name, args.macs) if args.size is None else (args.size, None, None)
    width = args.width if args.width is not None else width
    model_options = {"width": width} if width and width != 1 else {}
    # the recipe's settings and the speed options `cnnlab train` picks here, as it resolves them
    config = TrainConfig(model=name, resize=side_px, device=str(device)).with_recipe(model_spec(name).family,
                                                                                       default_recipe(name))
    dataset = load_dataset("digits", data_dir, device=device)
    batch = config.batch_size
    steps = max(1, min(args.steps, len(dataset.train_labels) // batch))
    torch.manual_seed(config.seed)  # the same initial weights in both sides' processes
    model = create_model(name, in_channels=dataset.channels, num_classes=dataset.num_classes, **model_options)
    mean, std = dataset.channel_stats()
    facts = dict(model=name, input=side_px, width=width or 1, batch=batch, optimizer=config.optimizer,
                 images_per_epoch=steps * batch)

    if side == "plain":  # fp32, contiguous, the recipe's kind of optimiser in PyTorch's default implementation
        model = model.to(device)
        plain_options = dict(momentum=config.momentum) if config.optimizer == "sgd" else {}
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config.lr, weight_decay=config.weight_decay,
                                                 **plain_options)
        images = dataset.train_images.float().div(255)
        if images.shape[-1] != side_px:
            images = F.interpolate(images, size=(side_px, side_px), mode="bilinear", antialias=True,
                                   align_corners=False)
        images = ((images - torch.tensor(mean, device=device)[:, None, None])
                  / torch.tensor(std, device=device)[:, None, None]).contiguous()
        fp32 = Placement.choose(device, "off", False)

        def plain_loss(model, x, y):  # the run's loss (label smoothing, GoogLeNet's side heads), in fp32
            return training_loss(model, x, y, fp32, config.label_smoothing)[0]

        def run(epochs: int) -> None:
            for _ in range(epochs):
                plain_epoch(model, optimizer, images, dataset.train_labels, batch, steps, plain_loss)

        facts["train_flops_per_image"] = training_cost(
            model, input_size=(dataset.channels, side_px, side_px), batch_size=batch, optimizer=config.optimizer,
            amp="off", device=device.type).per_image.train_flops
        facts["peak"] = peak_flops(fp32, data_dir)["flops_per_second"]
        return run, facts

    # cnnlab: as cnnlab.training.train sets up its loop (its speed trial included)
    world = World(device)
    placement, _ = choose_placement(config, world, model, dataset, (dataset.channels, side_px, side_px), mean, std,
                                    data_dir)
    config = replace(config, amp=placement.amp, channels_last=placement.channels_last,
                     flip=dataset.flip_safe if config.flip is None else config.flip)
    model = placed_for_training(placement, model)
    transform = BatchTransform((side_px, side_px), mean, std, crop_padding=config.crop_padding, flip=config.flip,
                               device=placement.device, memory_format=placement.memory_format)
    parts = TrainingParts(forward=model, optimizer=make_optimizer(config, model),
                          scaler=torch.amp.GradScaler(device.type, enabled=placement.amp == "fp16"),
                          placement=placement, dataset=dataset, transform=transform, config=config,
                          steps_per_epoch=steps, world=world)
    epoch = [0]

    def run(epochs: int) -> None:  # its thread count fitted to the load as `cnnlab train` fits it, epoch by epoch
        for _ in range(epochs):
            epoch[0] += 1
            run_epoch(parts, epoch[0], PlainLines(quiet=True))

    facts.update(precision=config.amp, channels_last=config.channels_last,
                 peak=peak_flops(placement, data_dir)["flops_per_second"])
    return run, facts


def serve(name: str, side: str, args, device: torch.device) -> None:
    """A side's process: build it, train one untimed epoch (kernels chosen, memory allocated),
    print its facts, then for each line N read, train N epochs and print the seconds taken."""
    run, facts = build_side(name, side, args, device, args.data_dir)
    run(1)
    print(json.dumps(facts), flush=True)
    for line in sys.stdin:
        if side == "cnnlab":  # the cores the other side used while this one waited are free again
            set_threads(None, device)
        print(timed(lambda: run(int(line)), device), flush=True)


class Side:
    """A side's process, asked to time epochs one request at a time (``serve``)."""

    def __init__(self, name: str, side: str, args, data_dir: str):
        self.errors = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while the side runs
        options = [f"--{key}={getattr(args, key)}" for key in FORWARDED if getattr(args, key) is not None]
        self.process = subprocess.Popen([sys.executable, __file__, "--one", name, "--side", side,
                                         "--data-dir", data_dir, *options],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True)
        self.name = name
        self.facts = json.loads(self.reply())

    def seconds(self, epochs: int) -> float:
        self.process.stdin.write(f"{epochs}\n")
        self.process.stdin.flush()
        return float(self.reply())

    def reply(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.errors.seek(0)
            last = (self.errors.read().strip().splitlines() or [f"exit status {self.process.returncode}"])[-1]
            raise SystemExit(f"{self.name}: {last}")
        return line

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the side's loop ends
            self.process.wait()
        self.errors.close()


def measure(name: str, args, data_dir: str) -> dict:
    """``name``'s row: each side in a process of its own, the plain one started first; then
    ``--repeats`` rounds, each timing the same number of epochs on the plain side and then on
    cnnlab's, so that a change in the machine's speed (other virtual machines on its cores)
    lands on both sides of a round; the ratio is the median of the rounds' ratios."""
    with contextlib.ExitStack() as stack:
        plain = Side(name, "plain", args, data_dir)
        stack.callback(plain.close)
        # a timed call repeats the epoch for about --seconds (small models train one in milliseconds)
        epochs = max(1, round(args.seconds / plain.seconds(1)))
        cnnlab = Side(name, "cnnlab", args, data_dir)  # started now: its start would have slowed the plain one's
        stack.callback(cnnlab.close)
        rounds = [(plain.seconds(epochs), cnnlab.seconds(epochs)) for _ in range(args.repeats)]
    images = epochs * plain.facts["images_per_epoch"]
    rate = {side: images / statistics.median(times) for side, times in zip(("plain", "cnnlab"), zip(*rounds))}
    flops = plain.facts["train_flops_per_image"]
    return dict({key: plain.facts[key] for key in ("model", "input", "width", "batch", "optimizer")},
                precision=cnnlab.facts["precision"], channels_last=cnnlab.facts["channels_last"],
                plain_images_per_second=round(rate["plain"], 1), cnnlab_images_per_second=round(rate["cnnlab"], 1),
                ratio=round(statistics.median(p / c for p, c in rounds), 2),
                plain_utilisation=round(flops * rate["plain"] / plain.facts["peak"], 4),
                cnnlab_utilisation=round(flops * rate["cnnlab"] / cnnlab.facts["peak"], 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["*"], help="names or shell patterns (default: the zoo)")
    parser.add_argument("--size", type=int, help="input side for every model (default: the zoo's practical size)")
    parser.add_argument("--width", type=float, help="width= for every model that has it (default: the zoo's)")
    parser.add_argument("--macs", type=float, default=15e6, help="zoo_learns' MACs budget per image (default 15M)")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (default 20, at most the digits' epoch)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="a timed pass repeats the epoch for about this long (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="N busy processes for the whole measurement")
    parser.add_argument("--out", help="also write the table as CSV")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # serve one side of this model's measurement
    parser.add_argument("--side", choices=("plain", "cnnlab"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.one:
        serve(args.one, args.side, args, device)
        return
    names = [name for name in list_models() if any(name in list_models(pattern) for pattern in args.models)]
    if not names:
        raise SystemExit(f"no model matches {' '.join(args.models)} (see 'cnnlab models')")
    print(f"{device} ({torch.get_num_threads()} threads), background load {args.background_load}", flush=True)
    header = (f"{'model':<18} {'input':>5} {'width':>5} {'batch':>5} {'prec':>4} {'plain im/s':>10} "
              f"{'cnnlab im/s':>11} {'ratio':>6} {'plain util':>10} {'cnnlab util':>11}")
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as data_dir, background_load(args.background_load):
        for name in names:
            row = measure(name, args, data_dir)
            rows.append(row)
            print(f"{name:<18} {row['input']:>5} {row['width']:>5g} {row['batch']:>5} {row['precision']:>4} "
                  f"{row['plain_images_per_second']:>10,.1f} {row['cnnlab_images_per_second']:>11,.1f} "
                  f"{row['ratio']:>5.2f}x {row['plain_utilisation']:>10.1%} {row['cnnlab_utilisation']:>11.1%}",
                  flush=True)
    print(f"\nmedian ratio {statistics.median(r['ratio'] for r in rows):.2f}x; median utilisation: plain "
          f"{statistics.median(r['plain_utilisation'] for r in rows):.1%} of the fp32 peak, cnnlab "
          f"{statistics.median(r['cnnlab_utilisation'] for r in rows):.1%} of its precision's peak")
    slower = [r["model"] for r in rows if r["ratio"] < 1]
    if slower:
        print(f"slower than the plain loop: {', '.join(slower)}")
    if args.out:
        write_rows(rows, args.out)


if __name__ == "__main__":
    main()
