"""Training throughput: cnnlab's training step against the textbook (d2l) pipeline.

    python benchmarks/train_throughput.py lenet                          # 28x28, batch 256
    python benchmarks/train_throughput.py alexnet_2012 --steps 3 --workers 0,4   # 224x224, batch 128
    python benchmarks/train_throughput.py lenet --data fashion-mnist --data-dir ~/data
    python benchmarks/train_throughput.py resnet18 --size 96 --device cuda --profile
    python benchmarks/train_throughput.py lenet --background-load 1 --cnnlab default default+torch-threads
    python benchmarks/train_throughput.py lenet --cnnlab default default+stream   # streamed vs on the device

Both sides train the same model (same seed, Xavier init, plain SGD) on the same images for the
same number of steps of the same batch size, in this one process: the textbook variants first,
interleaved among themselves after one warm-up epoch each, then cnnlab's likewise (so that what
cnnlab's CPU epochs do to malloc's heap and settings, cnnlab.host_memory, cannot move the
textbook's figures); the table shows the median images/s of the timed repeats and the ratio
to the fastest textbook variant.

(a) The textbook pipeline, as d2l's ``load_data_fashion_mnist(batch_size, resize)`` and
    ``train_ch6`` build it: a dataset object returning one PIL image per item (torchvision's
    FashionMNIST, or the embedded digits wrapped the same way), ``Resize`` + ``ToTensor`` in a
    ``DataLoader(shuffle=True, num_workers=W)`` (d2l uses W = 4), and the plain loop: copy each
    batch to the device, step, and read the loss and accuracy to the host every batch. A
    timed epoch includes starting the loader's workers, as every textbook epoch does.
(b) cnnlab: ``cnnlab.training.run_epoch`` -- the loop ``cnnlab train`` runs -- over uint8 images
    held on the device, resized to the input size once when the copy is small (as ``cnnlab
    train`` does; else per batch) and normalised per batch by ``cnnlab.data.BatchTransform``.
    ``--cnnlab`` variants: ``default`` (what ``cnnlab train`` picks on this device), ``plain``
    (fp32, contiguous: the textbook's arithmetic), or those with ``+bf16``, ``+fp16``,
    ``+channels-last``, ``+compile``, e.g. ``--cnnlab default plain plain+compile``; ``+stream``
    reads the images as a set too big for the device does (cnnlab.data.StreamedImages: host
    memory, a background thread preparing each batch), ``+torch-threads`` keeps torch's own
    thread count instead of cnnlab.threads' fit to the free cores.

``--background-load N`` keeps N processes spinning on the CPU for the whole measurement (both
pipelines, every repeat), the way a second job or a test suite shares the machine; the script
stops them itself. The textbook pipeline always runs with torch's default thread count.

Data: the embedded 8x8 digits (offline; upsampled to ``--size``, tiled to the epoch's length)
or Fashion-MNIST from ``--data-dir`` (torchvision's layout, ``FashionMNIST/raw``). An epoch is
``--steps`` batches (default: one Fashion-MNIST epoch, 60,000 images). Neither side augments.

Also printed: the achieved training arithmetic rate (6 x forward MACs per image: forward, and a
backward pass twice its cost) against this device's measured matmul peak, and with
``--profile`` where one cnnlab epoch spends its time (torch.profiler) and how much of each
pipeline's epoch is data handling alone.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cnnlab import threads
from cnnlab.config import TrainConfig
from cnnlab.data import BatchTransform, StreamedImages, load_dataset
from cnnlab.devices import Placement, resolve_device
from cnnlab.distributed import World
from cnnlab.models import create_model, model_spec
from cnnlab.progress import PlainLines
from cnnlab.training import TrainingParts, init_xavier, make_optimizer, placed_for_training, run_epoch

FASHION_MNIST_TRAIN_IMAGES = 60_000
AMP_PEAK_DTYPES = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# --cnnlab variant words, joined by +: each sets TrainConfig options; "default" sets none
VARIANT_OPTIONS = {"default": {}, "plain": dict(amp="off", channels_last=False), "bf16": dict(amp="bf16"),
                   "fp16": dict(amp="fp16"), "channels-last": dict(channels_last=True), "compile": dict(compile=True),
                   "stream": {}, "torch-threads": {}}  # (these two change how the side runs, not its config)


# -- (a) the textbook pipeline -------------------------------------------------------------------

class PILDigits(Dataset):
    """uint8 images served the way torchvision's MNIST classes serve theirs: a PIL image
    ("L" mode) per item, through the transform, with an int label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images[:, 0].numpy()  # N x H x W
        self.labels = labels
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        from PIL import Image

        image, label = Image.fromarray(self.images[index]), int(self.labels[index])  # 2-D uint8: mode "L"
        return self.transform(image), label


def textbook_loader(args, epoch_images, indices, workers: int) -> DataLoader:
    """d2l's load_data_fashion_mnist: Resize (when given a size) + ToTensor on PIL images in a
    shuffling DataLoader."""
    from torchvision import datasets, transforms

    trans = [transforms.ToTensor()]
    if args.size != epoch_images.image_size[0]:  # d2l trains LeNet at 28 without a resize
        trans.insert(0, transforms.Resize(args.size))
    trans = transforms.Compose(trans)
    if args.data == "fashion-mnist":
        dataset = Subset(datasets.FashionMNIST(args.data_dir, train=True, transform=trans, download=False),
                         indices.tolist())
    else:
        dataset = PILDigits(epoch_images.train_images, epoch_images.train_labels, trans)
    return DataLoader(dataset, args.batch_size, shuffle=True, num_workers=workers)


def textbook_epoch(net, loader, optimizer, loss_fn, device) -> None:
    """train_ch6's inner loop for one epoch (its timer and plotting left out)."""
    metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3): loss sum, correct predictions, examples
    net.train()
    for X, y in loader:
        optimizer.zero_grad()
        X, y = X.to(device), y.to(device)
        y_hat = net(X)
        l = loss_fn(y_hat, y)
        l.backward()
        optimizer.step()
        with torch.no_grad():  # float() of each: a host read every batch, as d2l does
            correct = (y_hat.argmax(axis=1).type(y.dtype) == y).type(y.dtype).sum()
            metric = [a + float(b) for a, b in zip(metric, (l * X.shape[0], correct, X.shape[0]))]


# -- (b) cnnlab -------------------------------------------------------------------------------------

@dataclass
class CnnlabSide:
    """One variant: what cnnlab.training.train builds before its loop, and the epochs it ran."""

    name: str
    parts: TrainingParts
    threads: int | None = None  # None: cnnlab.threads fits them to the free cores; else this many
    epoch: int = 0


def cnnlab_side(variant: str, args, base_model, dataset, device) -> CnnlabSide:
    """cnnlab's setup for train_ch6's optimisation: plain SGD, constant lr, no weight decay,
    label smoothing or augmentation; the speed options are cnnlab's defaults unless ``variant`` sets them."""
    config = TrainConfig(model=args.model, batch_size=args.batch_size, optimizer="sgd", momentum=0.0, lr=args.lr,
                         weight_decay=0.0, schedule="constant", warmup_epochs=0.0, label_smoothing=0.0,
                         init="xavier", flip=False, crop_padding=0, epochs=10**9, seed=args.seed)
    for word in variant.split("+"):
        if word not in VARIANT_OPTIONS:
            raise SystemExit(f"unknown cnnlab variant word {word!r}: choose from {', '.join(VARIANT_OPTIONS)}")
        config = replace(config, **VARIANT_OPTIONS[word])
    words = variant.split("+")
    if "stream" in words:
        dataset = replace(dataset, train_images=StreamedImages(dataset.train_images.cpu(), device))
    placement = Placement.choose(device, config.amp, config.channels_last)  # as `cnnlab train` does
    model = placed_for_training(placement, copy.deepcopy(base_model))
    mean, std = dataset.channel_stats()
    transform = BatchTransform((args.size, args.size), mean, std, device=placement.device,
                               memory_format=placement.memory_format)
    name = f"{variant} ({placement.amp}{', channels-last' if placement.channels_last else ''})"
    parts = TrainingParts(forward=torch.compile(model) if config.compile else model,
                          optimizer=make_optimizer(config, model),
                          scaler=torch.amp.GradScaler(device.type, enabled=placement.amp == "fp16"),
                          placement=placement, dataset=dataset, transform=transform, config=config,
                          steps_per_epoch=args.steps, world=World(placement.device))
    return CnnlabSide(name, parts, threads=args.torch_threads if args.threads or "torch-threads" in words else None)


def cnnlab_epoch(side: CnnlabSide) -> None:
    side.epoch += 1
    run_epoch(side.parts, side.epoch, PlainLines(quiet=True))


# -- measuring ------------------------------------------------------------------------------------

def timed(function, device) -> float:
    """Seconds of ``function()``, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def set_threads(fixed: int | None, device) -> None:
    """Before a timed epoch: a fixed thread count, or cnnlab's fresh look at the free cores (the
    epoch's own call then keeps it: its window since this one is too short to judge)."""
    if fixed is not None:
        torch.set_num_threads(fixed)
        os.environ["OMP_NUM_THREADS"] = str(fixed)  # which cnnlab.threads keeps
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
        threads.forget()  # what ran since cnnlab's last epoch was the other pipelines, not load
        threads.fit_to_load(device)


@contextmanager
def background_load(processes: int):
    """``processes`` Python processes spinning on the CPU until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        if spinners:
            time.sleep(1.0)  # running, and seen by the scheduler, before the first epoch
            print(f"background load: {processes} busy process(es)")
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


@contextmanager
def outside_load():
    """Afterwards, print how many cores processes other than this benchmark and its children (the
    background load, DataLoader workers) kept busy on average: the load nobody here controls."""
    def cpu_seconds():
        own = os.times()
        return own.user + own.system + own.children_user + own.children_system

    started = (time.monotonic(), threads.machine_busy_seconds(), cpu_seconds())
    yield
    if started[1] is None:  # no /proc/stat
        return
    wall, busy, ours = (now - then for now, then in zip((time.monotonic(), threads.machine_busy_seconds(),
                                                         cpu_seconds()), started))
    print(f"other processes on this machine kept {max(0.0, busy - ours) / wall:.2f} of "
          f"{os.cpu_count()} cores busy on average during the measurement ({wall:.0f} s)")


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_cudnn_benchmark(on: bool) -> None:
    """cnnlab lets cuDNN pick the fastest convolution algorithms; d2l does not."""
    torch.backends.cudnn.benchmark = on


def matmul_peak(device, dtype) -> float:
    """Best FLOP/s of a square matmul large enough to reach this device's peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    return 2 * n ** 3 / min(timed(lambda: a @ b, device) for _ in range(5))


def describe_machine(device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
        what = f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{what}; torch {torch.__version__}{load}"


def profile_breakdown(args, side: CnnlabSide, loader, device) -> None:
    """Data handling alone over one epoch, for both; then where one cnnlab epoch spends its time."""
    steps, images = args.steps, side.parts.dataset.train_images
    transform_only = timed(lambda: [side.parts.transform(images[i * args.batch_size:(i + 1) * args.batch_size])
                                    for i in range(steps)], device)
    loader_only = timed(lambda: [batch[0].to(device) for batch in loader], device)
    print(f"\ndata handling alone over one epoch ({steps} batches): cnnlab BatchTransform "
          f"{transform_only:.3f} s; textbook DataLoader (num_workers={loader.num_workers}) {loader_only:.3f} s")
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        cnnlab_epoch(side)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\ncnnlab ({side.name}), one epoch under torch.profiler, by self time:")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.torch_threads = torch.get_num_threads()
    device = resolve_device(args.device)
    args.size = args.size or model_spec(args.model).input_size[1]
    args.batch_size = args.batch_size or (256 if args.size <= 32 else 128)
    args.steps = args.steps or FASHION_MNIST_TRAIN_IMAGES // args.batch_size
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    # 1) the same images and the same initial model for every pipeline
    full = load_dataset(args.data, args.data_dir)
    indices = torch.arange(args.steps * args.batch_size) % len(full.train_labels)  # tiled if short
    epoch_images = replace(full, train_images=full.train_images[indices], train_labels=full.train_labels[indices])
    torch.manual_seed(args.seed)
    base_model = create_model(args.model, in_channels=full.channels, num_classes=full.num_classes)
    init_xavier(base_model)

    # 2) the pipelines: name -> (one epoch, precision of its arithmetic, whether cnnlab, threads)
    #    threads: a fixed count, or None for cnnlab.threads' choice
    pipelines = {}
    for w in workers:
        net = copy.deepcopy(base_model).to(device)
        optimizer, loss = torch.optim.SGD(net.parameters(), lr=args.lr), nn.CrossEntropyLoss()
        loader = textbook_loader(args, epoch_images, indices, w)
        pipelines[f"textbook, num_workers={w}"] = (
            lambda net=net, loader=loader, optimizer=optimizer, loss=loss:
                textbook_epoch(net, loader, optimizer, loss, device), "off", False, args.torch_threads)
    sides = [cnnlab_side(variant, args, base_model, epoch_images.to(device), device) for variant in args.cnnlab]
    for side in sides:
        pipelines[f"cnnlab {side.name}"] = (lambda side=side: cnnlab_epoch(side), side.parts.placement.amp, True,
                                            side.threads)

    # 3) timing, round by round, each pipeline of a group once per round (round 0 the warm-up):
    #    the textbook's group first, alone, so that what cnnlab's epochs do to malloc's heap and
    #    settings (cnnlab.host_memory) cannot move it: interleaved with them, the textbook's LeNet
    #    at batch 256 ran at 5,936 or 7,706 images/s depending on those settings; alone 7,646
    print(f"{args.model} on {args.data} at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.steps} steps ({args.steps * args.batch_size:,} images) per epoch, {device}")
    times = {name: [] for name in pipelines}
    groups = [[name for name in pipelines if pipelines[name][2] == is_cnnlab] for is_cnnlab in (False, True)]
    with outside_load(), background_load(args.background_load):
        print(describe_machine(device))
        for group in groups:
            for repeat in range(args.repeats + 1):
                for name in group:
                    epoch, _, is_cnnlab, fixed_threads = pipelines[name]
                    set_cudnn_benchmark(is_cnnlab and device.type == "cuda")
                    set_threads(fixed_threads, device)
                    seconds = timed(epoch, device)
                    if repeat:
                        times[name].append(seconds)
                    print(f"  {f'repeat {repeat}' if repeat else 'warm-up'}: {name}: {seconds:.2f} s "
                          f"({torch.get_num_threads()} threads)", flush=True)

    # 4) the table
    peaks = {amp: matmul_peak(device, dtype) for amp, dtype in AMP_PEAK_DTYPES.items()
             if device.type == "cuda" or amp != "fp16"}
    macs = count_macs(base_model, full.channels, args.size)
    print_table(args, times, {name: amp for name, (_, amp, _, _) in pipelines.items()}, peaks, macs)
    print(f"matmul peak on {device}: " + ", ".join(f"{str(AMP_PEAK_DTYPES[amp]).removeprefix('torch.')} {peak / 1e9:.0f} GFLOP/s"
                                                   for amp, peak in peaks.items())
          + f"; {args.model} does {macs / 1e6:.1f} M MACs per image forward, 6x that in FLOPs to train")
    if args.profile:
        profile_breakdown(args, sides[0], textbook_loader(args, epoch_images, indices, 0), device)


def print_table(args, times: dict, precision: dict, peaks: dict, macs: int) -> None:
    """images/s (median and range), ratio to the fastest textbook pipeline, achieved FLOP/s."""
    images = args.steps * args.batch_size
    rate = {name: images / statistics.median(seconds) for name, seconds in times.items()}
    textbook = [rate[name] for name in rate if name.startswith("textbook")]
    baseline = max(textbook) if textbook else None
    print(f"\n{'pipeline':<46}{'images/s':>10}{'min-max':>15}{'vs textbook':>13}{'GFLOP/s':>9}{'of peak':>9}")
    for name, seconds in times.items():
        spread = f"{images / max(seconds):.0f}-{images / min(seconds):.0f}"
        ratio = f"{rate[name] / baseline:.2f}x" if baseline else "-"
        flops = rate[name] * 6 * macs
        print(f"{name:<46}{rate[name]:>10.1f}{spread:>15}{ratio:>13}{flops / 1e9:>9.1f}"
              f"{flops / peaks[precision[name]]:>9.0%}")
    if baseline:
        print(f"(medians of {args.repeats} timed epochs; ratios against the fastest textbook pipeline, "
              f"{baseline:.1f} images/s; peak: a matmul in the pipeline's precision)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("model", nargs="?", default="lenet", help="a cnnlab model (default: lenet)")
    parser.add_argument("--data", choices=("digits", "fashion-mnist"), default="digits")
    parser.add_argument("--data-dir", default=None, help="holds FashionMNIST/raw (torchvision's layout)")
    parser.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: d2l's, 256 up to 32x32 inputs, else 128")
    parser.add_argument("--steps", type=int, default=None,
                        help="batches per timed epoch (default: one Fashion-MNIST epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per pipeline (median shown)")
    parser.add_argument("--workers", default="0,2,4", help="textbook DataLoader num_workers to time (d2l: 4)")
    parser.add_argument("--cnnlab", nargs="+", default=["default", "plain"], metavar="VARIANT",
                        help=f"cnnlab variants: words joined by +, from {', '.join(VARIANT_OPTIONS)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="a fixed torch thread count for every pipeline (default: torch's for the "
                             "textbook, cnnlab.threads' choice for cnnlab)")
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="keep N busy processes running during the measurement (stopped at the end)")
    parser.add_argument("--profile", action="store_true",
                        help="also time data handling alone, and profile one cnnlab epoch")
    parser.add_argument("--profile-rows", type=int, default=15)
    return parser.parse_args()


def count_macs(model: nn.Module, channels: int, size: int) -> int:
    from cnnlab.summary import summarize

    return summarize(model, input_size=(channels, size, size)).totals.macs


if __name__ == "__main__":
    main()
