"""Training utilisation per model: cnnlab's training loop against a plain PyTorch loop.

    python benchmarks/utilisation.py                                   # the whole zoo (long)
    python benchmarks/utilisation.py --models lenet resnet18 vgg11     # shell patterns too: 'resnet*'
    python benchmarks/utilisation.py --models alexnet vgg16 --size 224 --width 1 --device cuda

Each model trains at the zoo's CPU-practical size (benchmarks/zoo_learns.py picks it: input side
and width; ``--size``/``--width`` override) on the embedded digits with its default recipe's
batch size, optimiser and learning rate, two ways, in a process of its own: first the plain
loop (a warm-up pass, then the timed ones), then cnnlab's. Not interleaved, and not after another
model: cnnlab's CPU epochs leave malloc's heap and settings (cnnlab.host_memory) kinder to
whatever runs after them in the process -- the plain VGG-11 loop ran about 15 % faster after
them, train_throughput.py's textbook pipeline 30 % -- so a baseline timed after them is not the
baseline a tutorial's program sees.

(a) plain: the loop a PyTorch tutorial writes -- fp32, contiguous tensors, the optimiser of the
    recipe's kind with PyTorch's default implementation, the recipe's loss (its label smoothing;
    GoogLeNet's side heads), torch's own thread count, glibc's memory settings, the images
    already resized and normalised as float tensors (so the plain loop spends nothing on data);
(b) cnnlab: ``cnnlab.training.run_epoch``, the loop ``cnnlab train`` runs, set up as
    ``cnnlab train`` sets it up: the precision and memory format its speed trial chooses
    (cnnlab.speed), its optimiser kernels, freed host memory kept between steps
    (cnnlab.host_memory), its per-batch resize, normalisation and augmentation.

Printed per model: images/s of each (median of ``--repeats`` timed passes, each as many epochs of
``--steps`` steps as the plain loop trains in ``--seconds``), their ratio, and the utilisation of each -- training FLOPs per image
(``cnnlab.summary.training_cost``: forward and backward, 2 FLOPs a multiply-accumulate) times
images/s over the device's peak in the precision that side computes in (``cnnlab.devices.
peak_flops``: a large matrix product measured on this machine, or a GPU's published figure).
Then the median ratio and the median utilisation. ``--out`` writes the table as CSV.

Timings on a machine busy with other work differ from idle ones; ``--background-load N`` keeps
N processes spinning for the whole measurement to measure the busy case on purpose.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace

import torch
import torch.nn.functional as F

from cnnlab.config import TrainConfig
from cnnlab.data import BatchTransform, load_dataset
from cnnlab.devices import Placement, peak_flops, resolve_device
from cnnlab.distributed import World
from cnnlab.models import create_model, default_recipe, list_models, model_spec
from cnnlab.progress import PlainLines
from cnnlab.summary import training_cost
from cnnlab.training import TrainingParts, choose_placement, make_optimizer, run_epoch, training_loss

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from timing import write_rows  # noqa: E402  (sibling scripts)
from train_throughput import background_load, timed  # noqa: E402
from zoo_learns import practical_size  # noqa: E402

TORCH_THREADS = torch.get_num_threads()  # torch's own count, before cnnlab fits it to the load
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


def measure(name: str, args, device: torch.device, data_dir: str) -> dict:
    side, width, _ = practical_size(name, args.macs) if args.size is None else (args.size, None, None)
    width = args.width if args.width is not None else width
    model_options = {"width": width} if width and width != 1 else {}
    # the recipe's settings and the speed options `cnnlab train` picks here, as it resolves them
    config = TrainConfig(model=name, resize=side, device=str(device)).with_recipe(model_spec(name).family,
                                                                                    default_recipe(name))
    dataset = load_dataset("digits", data_dir, device=device)
    batch = config.batch_size
    steps = max(1, min(args.steps, len(dataset.train_labels) // batch))
    torch.manual_seed(config.seed)
    model = create_model(name, in_channels=dataset.channels, num_classes=dataset.num_classes, **model_options)
    plain_model = copy.deepcopy(model).to(device)  # the same initial weights for both sides

    # (a) plain: fp32, contiguous, the recipe's kind of optimiser in PyTorch's default implementation
    plain_options = dict(momentum=config.momentum) if config.optimizer == "sgd" else {}
    plain_optimizer = OPTIMIZERS[config.optimizer](plain_model.parameters(), config.lr,
                                                   weight_decay=config.weight_decay, **plain_options)
    mean, std = dataset.channel_stats()
    images = dataset.train_images.float().div(255)
    if images.shape[-1] != side:
        images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    images = ((images - torch.tensor(mean, device=device)[:, None, None])
              / torch.tensor(std, device=device)[:, None, None]).contiguous()

    passes = [1]

    def plain_loss(model, x, y):  # the run's loss (label smoothing, GoogLeNet's side heads), in fp32
        return training_loss(model, x, y, Placement.choose(device, "off", False), config.label_smoothing)[0]

    def plain():
        torch.set_num_threads(TORCH_THREADS)
        for _ in range(passes[0]):
            plain_epoch(plain_model, plain_optimizer, images, dataset.train_labels, batch, steps, plain_loss)

    plain()  # warm-up: kernels chosen, memory allocated, caches filled
    # a timed pass: as many epochs of ``steps`` as the plain loop takes --seconds for (small models
    # train an epoch of the digits in milliseconds)
    passes[0] = max(1, round(args.seconds / timed(plain, device)))
    seconds = {"plain": [timed(plain, device) for _ in range(args.repeats)]}

    # (b) cnnlab: as cnnlab.training.train sets up its loop (its speed trial included)
    world = World(device)
    placement, _ = choose_placement(config, world, model, dataset, (dataset.channels, side, side), mean, std,
                                    data_dir)
    config = replace(config, amp=placement.amp, channels_last=placement.channels_last,
                     flip=dataset.flip_safe if config.flip is None else config.flip)
    model = placement.place(model)
    transform = BatchTransform((side, side), mean, std, crop_padding=config.crop_padding, flip=config.flip,
                               device=placement.device, memory_format=placement.memory_format)
    parts = TrainingParts(forward=model, optimizer=make_optimizer(config, model),
                          scaler=torch.amp.GradScaler(device.type, enabled=placement.amp == "fp16"),
                          placement=placement, dataset=dataset, transform=transform, config=config,
                          steps_per_epoch=steps, world=world)
    epoch = [0]

    def cnnlab():  # its thread count fitted to the load as `cnnlab train` fits it, epoch by epoch
        for _ in range(passes[0]):
            epoch[0] += 1
            run_epoch(parts, epoch[0], PlainLines(quiet=True))

    cnnlab()  # warm-up
    seconds["cnnlab"] = [timed(cnnlab, device) for _ in range(args.repeats)]
    torch.set_num_threads(TORCH_THREADS)

    flops = training_cost(plain_model, input_size=(dataset.channels, side, side), batch_size=batch,
                          optimizer=config.optimizer, amp=config.amp, device=device.type).per_image.train_flops
    peak = {amp: peak_flops(Placement.choose(device, amp, False), data_dir)["flops_per_second"]
            for amp in {"off", config.amp}}
    rate = {side_name: passes[0] * steps * batch / statistics.median(times) for side_name, times in seconds.items()}
    return dict(model=name, input=side, width=width or 1, batch=batch, optimizer=config.optimizer,
                precision=config.amp, channels_last=config.channels_last,
                plain_images_per_second=round(rate["plain"], 1), cnnlab_images_per_second=round(rate["cnnlab"], 1),
                ratio=round(rate["cnnlab"] / rate["plain"], 2),
                plain_utilisation=round(flops * rate["plain"] / peak["off"], 4),
                cnnlab_utilisation=round(flops * rate["cnnlab"] / peak[config.amp], 4))


FORWARDED = ("size", "width", "macs", "steps", "seconds", "repeats", "device")  # to each model's process


def measure_alone(name: str, args, data_dir: str) -> dict:
    """``measure`` in a fresh process (the device peak cached in ``data_dir`` for the next)."""
    options = [f"--{key}={getattr(args, key)}" for key in FORWARDED if getattr(args, key) is not None]
    done = subprocess.run([sys.executable, __file__, "--one", name, "--data-dir", data_dir, *options],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.splitlines()[-1])


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
    parser.add_argument("--one", help=argparse.SUPPRESS)  # measure this model here and print its row as JSON
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.one:
        print(json.dumps(measure(args.one, args, device, args.data_dir)))
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
            row = measure_alone(name, args, data_dir)
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
