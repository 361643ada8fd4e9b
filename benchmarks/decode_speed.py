"""Decoding an ImageFolder tree: serial against parallel, and a first load against a second.

    python benchmarks/decode_speed.py /tmp/digits-jpeg              # makes the tree if missing
    python benchmarks/decode_speed.py /tmp/digits-jpeg --background-load 1 --repeats 3

The tree (made once, outside the repository): ``--images`` JPEGs in ten class folders, the
embedded 8x8 digits upscaled to ``--source-size`` pixels, tinted and with Gaussian noise, so
every file differs and decoding does real work. Each repeat times, interleaved:

(a) the decoder before the cache: every image decoded in full by PIL, centre-cropped and
    resized to ``--size``, in this one process, into one tensor (the loop cnnlab ran before)
(b) today's decoder in one process: ``cnnlab.data.folder.decode_into`` with one worker (it
    decodes a JPEG at a reduced DCT scale when the image is at least twice ``--size``)
(c) today's decoder with one worker process per available core
(d) a first load: ``cnnlab.data.load_dataset(tree)`` with no cache (list, stat, decode, map)
(e) a second load: the same call again, which finds the cache and maps it

and prints the median seconds and the ratios (a)/(c) (the goal), (b)/(c) (the processes
alone) and (d)/(e).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import folder, load_dataset, load_digits
from cnnlab.threads import available_cores
from train_throughput import background_load, outside_load


def make_tree(root: Path, images: int, source_size: int, seed: int = 0) -> None:
    """``images`` noisy, tinted, upscaled digits as JPEGs under ``root/<digit>/``."""
    import torch.nn.functional as F
    from PIL import Image

    digits = load_digits()
    pool = torch.cat([digits.train_images, digits.test_images])
    labels = torch.cat([digits.train_labels, digits.test_labels])
    generator = torch.Generator().manual_seed(seed)
    building = root.with_name(root.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    for digit in range(10):
        (building / str(digit)).mkdir(parents=True)
    for start in range(0, images, 500):
        index = torch.arange(start, min(start + 500, images)) % len(pool)
        grey = F.interpolate(pool[index].float(), size=(source_size, source_size), mode="bilinear")
        tint = torch.rand(len(index), 3, 1, 1, generator=generator) * 0.5 + 0.5
        noise = torch.randn(len(index), 3, source_size, source_size, generator=generator) * 20
        rgb = (grey * tint + noise).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, pixels in zip(range(start, start + len(index)), rgb):
            Image.fromarray(pixels).save(building / str(int(labels[i % len(pool)])) / f"{i:06d}.jpg", quality=90)
    building.rename(root)


def decode_before_cache(files: list[str], size: int) -> torch.Tensor:
    """(a): the serial loop of cnnlab's ImageFolder loader before the cache."""
    from PIL import Image, ImageOps
    from torchvision.transforms.functional import pil_to_tensor

    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
        images[i] = pil_to_tensor(fitted)
    return images


def main() -> None:
    args = parse_args()
    tree = Path(args.tree)
    if not tree.is_dir():
        started = time.perf_counter()
        make_tree(tree, args.images, args.source_size)
        print(f"made {tree}: {args.images:,} JPEGs at {args.source_size}x{args.source_size} "
              f"in {time.perf_counter() - started:.0f} s")
    samples, _, _ = folder.list_tree(tree)
    files = [path for path, _ in samples]
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-decode-"))
    data_dir = scratch / "data"

    def decode(workers: int):
        folder.decode_into(scratch / "rows.u8", files, args.size, workers=workers)

    def first_load():
        shutil.rmtree(data_dir, ignore_errors=True)
        load_dataset(str(tree), data_dir, image_size=args.size)

    def second_load():
        load_dataset(str(tree), data_dir, image_size=args.size)

    cores = available_cores()
    steps = {"decode before the cache (serial)": lambda: decode_before_cache(files, args.size),
             "decode now, 1 process": lambda: decode(1),
             f"decode now, {cores} processes": lambda: decode(cores),
             "first load (no cache)": first_load,
             "second load (cache mapped)": second_load}
    times = {name: [] for name in steps}
    try:
        with outside_load(), background_load(args.background_load):
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"{len(files):,} images of {tree} to {args.size}x{args.size}; {cores} available cores, "
                  f"load average {load:.2f}")
            for repeat in range(1, args.repeats + 1):
                for name, step in steps.items():
                    started = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - started)
                    print(f"  repeat {repeat}: {name}: {times[name][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"\n{'step':<34}{'median s':>10}{'min-max s':>14}{'images/s':>10}")
    for name, seconds in times.items():
        print(f"{name:<34}{median[name]:>10.2f}{f'{min(seconds):.2f}-{max(seconds):.2f}':>14}"
              f"{len(files) / median[name]:>10.0f}")
    before, serial, parallel, first, second = median.values()
    print(f"decode now ({cores} processes) vs before the cache: {before / parallel:.2f}x; vs 1 process: "
          f"{serial / parallel:.2f}x; second load vs first: {first / second:.1f}x "
          f"(medians of {args.repeats} interleaved repeats)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("tree", help="the ImageFolder tree (made there when missing; keep it outside the repository)")
    parser.add_argument("--images", type=int, default=20_000, help="images in a new tree")
    parser.add_argument("--source-size", type=int, default=128, help="side of the JPEGs in a new tree")
    parser.add_argument("--size", type=int, default=64, help="side the images are decoded to (--resize)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="keep N busy processes running during the measurement (stopped at the end)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
