"""ImageFolder trees: decoded once, by all cores, into a memory-mapped cache that later runs map.

The cache of a tree at one image size is a directory under ``<data dir>/imagefolder/``:

    images.u8   the uint8 ``N x 3 x S x S`` rows, training rows first, then test rows
    meta.json   the key, the row counts, the labels, the classes, and the per-channel sums of the
                training pixels and of their squares (the normalisation statistics, so that
                a streamed set need not be read whole for them)

The key is a hash of the cache version, the image size, the classes and every file's path,
label, size and modification time, so touching, adding or removing an image (or a class)
makes a new cache. A cache is built in a temporary directory and renamed into place when
complete; one whose meta.json does not parse, whose key differs or whose images.u8 has the
wrong length is rebuilt, never read. Under torchrun one process per machine builds it while
the others wait, then every process maps the same file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import ImageDataset, stratified_split
from cnnlab.distributed import local_main_first
from cnnlab.errors import DataMissing, DataTooLarge, UnknownDataset
from cnnlab.threads import available_cores

CACHE_VERSION = 1  # bump when the decoded pixels would change (resampling, cropping, layout)
CACHE_FOLDER = "imagefolder"
IMAGES_FILE, META_FILE = "images.u8", "meta.json"
DECODE_CHUNK = 256  # images per task handed to a worker process


def load_image_folder(root: Path, image_size: int, data_dir: Path) -> ImageDataset:
    """The tree's images at ``image_size`` (centre-cropped, RGB), mapped from its decode cache."""
    samples, classes, train_count = list_tree(root)
    key = cache_key(root, samples, classes, train_count, image_size)
    cache = data_dir / CACHE_FOLDER / f"{root.name}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}-{image_size}px"
    with local_main_first():  # under torchrun: one decode per machine
        if not cache_is_valid(cache, key, len(samples), image_size):
            build_cache(cache, key, samples, classes, train_count, image_size)
    images, labels, pixel_sums = open_cache(cache, len(samples), image_size)
    return ImageDataset(root.name, images[:train_count], labels[:train_count], images[train_count:],
                        labels[train_count:], classes=classes, flip_safe=True, train_pixel_sums=pixel_sums)


def list_tree(root: Path) -> tuple[list[tuple[str, int]], list[str], int]:
    """(path, label) of every image in row order (training rows first), the classes, the
    number of training rows. ``train/`` and ``test/`` (or ``val/``) sub-trees are the splits;
    otherwise the seeded stratified 80/20 split of cnnlab.data."""
    from torchvision.datasets import ImageFolder

    split_dirs = [root / "train", next((root / d for d in ("test", "val") if (root / d).is_dir()), None)]
    try:
        if split_dirs[0].is_dir() and split_dirs[1] is not None:
            train_tree, test_tree = (ImageFolder(str(d), allow_empty=False) for d in split_dirs)
            if test_tree.classes != train_tree.classes:
                raise UnknownDataset(f"{split_dirs[1]} has other classes than {split_dirs[0]}")
            return train_tree.samples + test_tree.samples, train_tree.classes, len(train_tree.samples)
        tree = ImageFolder(str(root), allow_empty=False)
    except FileNotFoundError as e:  # ImageFolder's way of saying "no class folders or no images"
        raise UnknownDataset(f"{root} is not an ImageFolder tree: {e}") from None
    train, test = stratified_split([label for _, label in tree.samples])
    return [tree.samples[i] for i in train + test], tree.classes, len(train)


def cache_key(root: Path, samples, classes, train_count: int, image_size: int) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, image_size, classes, train_count]).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_is_valid(cache: Path, key: str, count: int, image_size: int) -> bool:
    try:
        meta = json.loads((cache / META_FILE).read_text())
        return (meta.get("key") == key and len(meta.get("labels", ())) == count
                and (cache / IMAGES_FILE).stat().st_size == count * 3 * image_size ** 2)
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def open_cache(cache: Path, count: int, image_size: int):
    """The images as a copy-on-write mapping of images.u8 (pages are read when touched), the
    labels, and the training pixels' per-channel sums and sums of squares."""
    meta = json.loads((cache / META_FILE).read_text())
    images = torch.from_file(str(cache / IMAGES_FILE), shared=False, size=count * 3 * image_size ** 2,
                             dtype=torch.uint8)
    return (images.view(count, 3, image_size, image_size), torch.tensor(meta["labels"], dtype=torch.int64),
            (meta["train_pixel_sums"], meta["train_pixel_square_sums"]))


def build_cache(cache: Path, key: str, samples, classes, train_count: int, image_size: int) -> None:
    """Decode every image into a temporary directory beside ``cache``, then rename it into place."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(cache.parent, len(samples), image_size)
    building = cache.with_name(f"{cache.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        sums, square_sums = decode_into(building / IMAGES_FILE, [path for path, _ in samples], image_size,
                                        train_rows=train_count)
        meta = dict(key=key, version=CACHE_VERSION, image_size=image_size, train_rows=train_count,
                    classes=classes, labels=[label for _, label in samples],
                    train_pixel_sums=sums, train_pixel_square_sums=square_sums)
        (building / META_FILE).write_text(json.dumps(meta))
        shutil.rmtree(cache, ignore_errors=True)  # a stale or broken cache of the same tree and size
        os.rename(building, cache)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def free_disk(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_disk_space(folder: Path, count: int, image_size: int) -> None:
    """A set the cache cannot hold fails now, in one line, with a ``--resize`` that would fit."""
    needed, free = count * 3 * image_size ** 2, free_disk(folder)
    if needed <= free:
        return
    fitting = math.isqrt(free // (3 * count)) if count else 0
    advice = f"--resize {fitting} would fit" if fitting >= 1 else "no image size fits"
    raise DataTooLarge(f"{count:,} images at {image_size}x{image_size} take {human_bytes(needed)} decoded, "
                       f"but {folder} has {human_bytes(free)} free; {advice} (or free space, or "
                       f"choose another --data-dir)")


def human_bytes(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1000
    return f"{count:.1f} TB"


def decode_into(path: Path, files: list[str], image_size: int, workers: int | None = None,
                train_rows: int = 0) -> tuple[list[int], list[int]]:
    """Decode ``files`` into the uint8 rows of the file ``path`` with ``workers`` processes
    (default: one per available core); returns the per-channel sums of the pixel values of the
    first ``train_rows`` rows and of their squares."""
    with open(path, "wb") as out:
        out.truncate(len(files) * 3 * image_size ** 2)
    chunks = [(str(path), start, files[start:start + DECODE_CHUNK], image_size, train_rows)
              for start in range(0, len(files), DECODE_CHUNK)]
    workers = min(workers or available_cores(), len(chunks))
    if workers <= 1:
        parts = [decode_chunk(*chunk) for chunk in chunks]
    else:
        # fork: the workers need only PIL and numpy, and start in milliseconds instead of re-importing torch
        context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(pool.map(decode_chunk, *zip(*chunks)))
    sums, square_sums = ([sum(part[k][c] for part in parts) for c in range(3)] for k in (0, 1))
    return sums, square_sums


def decode_chunk(path: str, start: int, files: list[str], image_size: int,
                 train_rows: int) -> tuple[list[int], list[int]]:
    """One worker's share: decode, centre-crop and resize ``files`` into rows ``start...``;
    returns the per-channel pixel sums and square sums of those rows that are training rows.

    A JPEG at least twice the size is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    PIL's ``draft``, as ``Image.thumbnail`` does), still no smaller than the size, then resized:
    most of the decoding work of a large photo is skipped."""
    rows = np.memmap(path, dtype=np.uint8, mode="r+", offset=start * 3 * image_size ** 2,
                     shape=(len(files), 3, image_size, image_size))
    sums, square_sums = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for i, file in enumerate(files):
        rows[i] = decode_image(file, image_size)
        if start + i < train_rows:
            pixels = rows[i].reshape(3, -1).astype(np.int64)
            sums += pixels.sum(1)
            square_sums += (pixels * pixels).sum(1)
    rows.flush()
    return sums.tolist(), square_sums.tolist()


def decode_image(file, image_size: int) -> np.ndarray:
    """One image file as uint8 RGB, 3 x size x size: centre-cropped to a square and resized
    (a large JPEG decoded at a reduced scale first, see decode_chunk); DataMissing if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.draft("RGB", (image_size, image_size))
            fitted = ImageOps.fit(image.convert("RGB"), (image_size, image_size), method=Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError) as e:
        raise DataMissing(f"cannot read image {file}: {e}") from None
    return np.asarray(fitted).transpose(2, 0, 1)
