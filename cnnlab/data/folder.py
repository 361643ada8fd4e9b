"""ImageFolder trees: decoded once, by all cores, into a memory-mapped cache that later runs map.

A tree is one folder per class. Beside each other, ``train/`` and ``test/`` (or ``testing/``,
``val/``, ``valid/``, ``validation/``; ``test/`` first) are the splits, their classes the union of
the class folders under them; ``train/`` alone is split like a plain tree, by the seeded
stratified 80/20 split of cnnlab.data. Links are followed, and each image file counts once
(the first path that reaches it, training rows first), so a linked copy never lands on both
sides of the split. A tree with one class, or a split left empty, is refused.

The cache of a tree at one image size is a directory under ``<data dir>/imagefolder/``:

    images.u8   the uint8 ``N x 3 x S x S`` rows, training rows first, then test rows
    meta.json   the key, the row counts, the labels, the classes, the per-channel sums of the
                training pixels and of their squares (the normalisation statistics, so that
                a streamed set need not be read whole for them), and the CRC-32 of every
                8 MiB block of images.u8 with its modification time as written

The key is a hash of the cache version, the image size, the classes and every file's path,
label, size and modification time, so touching, adding or removing an image (or a class)
makes a new cache. A cache is built in a temporary directory (``<cache>.building-<host>-<pid>``)
and renamed into place when complete; one whose meta.json does not parse, lacks a value or
disagrees with the tree (key, classes, labels, row counts, possible pixel sums), or whose
images.u8 has the wrong length or fails its checksums is rebuilt, never read; damage to
images.u8 (a wrong length, or bytes changed in place) is named in a one-line note on stderr.

How much is checked at each open: a cache of up to FULL_CHECK_BYTES (512 MiB) whole, CRC-32
running at about 3 GB/s (150 MB, 50,000 images at 32x32: 0.05 s from memory, 0.07 s after
dropping it from the page cache; the pages read are the ones training then maps). A larger
cache is checked whole when images.u8's modification time is not the one recorded (writing
bytes in place changes it; after a check that passes, the new time is recorded), else in its
first and last blocks only: reading ImageNet-sized caches (tens of GB) from disk at every open
would cost minutes, and only a change that keeps the time (a failing disk) goes unseen there.

The decode workers die with the builder, even on kill -9; a later load removes the temporary
directory of a builder that died. SIGTERM during a build stops it in one line (exit code 143).
Under torchrun one process per machine builds (or checks) it while the others wait, then every
process maps the same file.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import active_children, get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.datasets import ImageDataset, stratified_split
from cnnlab.distributed import local_main_first
from cnnlab.errors import DataMissing, DataTooLarge, TrainingInterrupted, UnknownDataset, first_line
from cnnlab.runs.files import atomic_write_text
from cnnlab.threads import available_cores

CACHE_VERSION = 2  # bump when the decoded pixels would change (resampling, cropping, layout, modes)
CACHE_FOLDER = "imagefolder"
IMAGES_FILE, META_FILE = "images.u8", "meta.json"
BUILDING = ".building-"  # <cache>.building-<host>-<pid>: a build in progress (or a dead builder's)
DECODE_CHUNK = 256  # images per task handed to a worker process
TRAIN_SPLITS = ("train", "training")
TEST_SPLITS = ("test", "testing", "val", "valid", "validation")  # the first present is the test split
PARENT_CHECK_S = 1.0  # how often a decode worker looks whether its builder is still there
PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHECK_BLOCK = 1 << 23  # bytes of images.u8 per recorded CRC-32
FULL_CHECK_BYTES = 1 << 29  # a cache up to this size is checked whole at every open (see the docstring)


def load_image_folder(root: Path, image_size: int, data_dir: Path) -> ImageDataset:
    """The tree's images at ``image_size`` (centre-cropped, RGB), mapped from its decode cache."""
    samples, classes, train_count = list_tree(root)
    key = cache_key(root, samples, classes, train_count, image_size)
    cache = data_dir / CACHE_FOLDER / f"{root.name}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}-{image_size}px"
    expected = dict(key=key, version=CACHE_VERSION, image_size=image_size, train_rows=train_count,
                    classes=classes, labels=[label for _, label in samples])
    with local_main_first():  # under torchrun: one decode (or one checksum pass) per machine
        remove_dead_builds(cache.parent)
        if checked_meta(cache, expected) is None:
            build_cache(cache, expected, [path for path, _ in samples])
    meta = checked_meta(cache, expected, pixels=False)  # its pixels were checked or written just now
    if meta is None:  # only if another process damaged it between the build and this line
        raise DataMissing(f"the decode cache {cache} changed while it was read; run again")
    images, labels, pixel_sums = open_cache(cache, len(samples), image_size, meta)
    return ImageDataset(root.name, images[:train_count], labels[:train_count], images[train_count:],
                        labels[train_count:], classes=classes, flip_safe=True, train_pixel_sums=pixel_sums)


# -- the tree: classes, splits, each image file once -------------------------------------------

def list_tree(root: Path) -> tuple[list[tuple[str, int]], list[str], int]:
    """(path, label) of every image in row order (training rows first), the classes, the
    number of training rows (see the module's docstring for the rules)."""
    folders = {folder.name.lower(): folder for folder in sorted(root.iterdir()) if folder.is_dir()}
    train_sides = [folders[name] for name in TRAIN_SPLITS if name in folders]
    test_sides = [folders[name] for name in TEST_SPLITS if name in folders]
    if len(train_sides) > 1:
        raise UnknownDataset(f"{root} has both {train_sides[0].name}/ and {train_sides[1].name}/: "
                             f"which is the training split? Keep one")
    if test_sides and not train_sides:
        raise UnknownDataset(f"{root} has {test_sides[0].name}/ but no train/ beside it: put the "
                             f"training images under train/ (one folder per class)")
    sides = [train_sides[0], *test_sides[:1]] if train_sides else [root]
    classes = sorted({folder.name for side in sides for folder in side.iterdir() if folder.is_dir()})
    if not classes:
        raise UnknownDataset(f"{root} is not an ImageFolder tree: it has no class folders "
                             f"(one folder of images per class)")
    seen_files, seen_folders, sample_sides = set(), set(), []
    for side in sides:
        sample_sides.append([(path, label) for label, name in enumerate(classes) if (side / name).is_dir()
                             for path in image_files(side / name, seen_files, seen_folders)])
    found = {label for samples in sample_sides for _, label in samples}
    empty = [name for label, name in enumerate(classes) if label not in found]
    if empty:
        raise UnknownDataset(f"{root}: the class folder {empty[0]!r} holds no image files of its own "
                             f"(an image reached by several paths counts once, at the first)")
    if len(classes) < 2:
        raise UnknownDataset(f"{root} has one class ({classes[0]}): a classifier needs at least two "
                             f"class folders")
    if len(sample_sides) == 2:
        train, test = sample_sides
        advice = f"each of {sides[0].name}/ and {sides[1].name}/ needs images"
    else:
        samples = sample_sides[0]
        train_rows, test_rows = stratified_split([label for _, label in samples])
        train, test = [samples[i] for i in train_rows], [samples[i] for i in test_rows]
        advice = ("the test split is 20 % of each class, rounded: give a class at least 3 images, "
                  "or put test images under test/ beside train/")
    if not train or not test:
        raise UnknownDataset(f"{root}: its {len(train) + len(test)} image(s) give {len(train)} to train on "
                             f"and {len(test)} to test on; {advice}")
    return train + test, classes, len(train)


def image_files(folder: Path, seen_files: set, seen_folders: set) -> list[str]:
    """The image files under ``folder``, sorted, links followed; a file or folder already in
    ``seen_files`` / ``seen_folders`` (by device and inode, so hard links too) is skipped, and
    what is found is added to them. A link loop ends where it returns to a folder seen."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    found = []
    for here, subfolders, names in os.walk(folder, followlinks=True):
        identity = file_identity(os.stat(here))
        if identity in seen_folders:
            subfolders.clear()
            continue
        seen_folders.add(identity)
        subfolders.sort()
        for name in sorted(names):
            if not name.lower().endswith(IMG_EXTENSIONS):
                continue
            path = os.path.join(here, name)
            try:
                info = os.stat(path)
            except OSError as e:  # a broken link
                raise DataMissing(f"cannot read image {path}: {e.strerror}") from None
            if stat.S_ISREG(info.st_mode) and file_identity(info) not in seen_files:  # not a pipe or device
                seen_files.add(file_identity(info))
                found.append(path)
    return found


def file_identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


# -- the cache -----------------------------------------------------------------------------------

def cache_key(root: Path, samples, classes, train_count: int, image_size: int) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, image_size, classes, train_count]).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def checked_meta(cache: Path, expected: dict, pixels: bool = True) -> dict | None:
    """The cache's meta.json when it can be trusted: every value in ``expected`` (key, version,
    size, row counts, classes, labels) equal, pixel sums that some training pixels could have,
    checksums for images.u8, and images.u8 of the right length that passes them (``pixels``
    False: its length only); else None (the cache is rebuilt)."""
    try:
        meta = json.loads((cache / META_FILE).read_text())
        count, side = len(expected["labels"]), expected["image_size"]
        if not isinstance(meta, dict) or any(meta.get(name) != value for name, value in expected.items()):
            return None
        pixels_count = expected["train_rows"] * side ** 2
        sums, square_sums = meta.get("train_pixel_sums"), meta.get("train_pixel_square_sums")
        if not all(isinstance(values, list) and len(values) == 3 and all(type(v) is int for v in values)
                   for values in (sums, square_sums)):
            return None
        # each channel: 0 <= pixel <= 255, and sum^2 <= n * sum of squares (a variance is not negative)
        if not all(0 <= total <= 255 * pixels_count and 0 <= squares <= 255 ** 2 * pixels_count
                   and total ** 2 <= pixels_count * squares for total, squares in zip(sums, square_sums)):
            return None
        length = count * 3 * side ** 2
        checksums, written = meta.get("images_crc32"), meta.get("images_mtime_ns")
        if (not isinstance(checksums, list) or len(checksums) != math.ceil(length / CHECK_BLOCK)
                or not all(type(v) is int for v in checksums) or type(written) is not int):
            return None
        damage = images_damage(cache / IMAGES_FILE, length, checksums, written, pixels)
        if damage:
            print(f"note: rebuilding the decode cache {cache}: {damage}", file=sys.stderr)
            return None
        modified = (cache / IMAGES_FILE).stat().st_mtime_ns
        if pixels and modified != written:  # checked whole, and whole again at each open unless recorded
            meta["images_mtime_ns"] = modified
            atomic_write_text(cache / META_FILE, json.dumps(meta))
        return meta
    except (OSError, ValueError):
        return None


def images_damage(path: Path, length: int, checksums: list[int], written: int, pixels: bool) -> str | None:
    """Why images.u8 at ``path`` is not as written (None if it is): a length other than ``length``,
    or a block whose CRC-32 is not the one in ``checksums`` (all blocks, or for a cache over
    FULL_CHECK_BYTES whose modification time is still ``written``, the first and last; none
    unless ``pixels``)."""
    info = path.stat()
    if info.st_size != length:
        return f"{IMAGES_FILE} holds {info.st_size:,} bytes, not {length:,}"
    if not pixels:
        return None
    checked = (range(len(checksums)) if length <= FULL_CHECK_BYTES or info.st_mtime_ns != written
               else sorted({0, len(checksums) - 1}))
    found = block_checksums(path, checked)
    bad = next((block for block in checked if found[block] != checksums[block]), None)
    if bad is None:
        return None
    return (f"{IMAGES_FILE} changed since it was written (its bytes {bad * CHECK_BLOCK:,} to "
            f"{min(length, (bad + 1) * CHECK_BLOCK) - 1:,} fail their checksum)")


def block_checksums(path: Path, blocks) -> dict[int, int]:
    """The CRC-32 of each CHECK_BLOCK-byte block numbered in ``blocks`` of the file ``path`` (its
    last block may be shorter)."""
    found = {}
    with open(path, "rb") as file:
        for block in blocks:
            file.seek(block * CHECK_BLOCK)
            found[block] = zlib.crc32(file.read(CHECK_BLOCK))
    return found


def open_cache(cache: Path, count: int, image_size: int, meta: dict):
    """The images as a copy-on-write mapping of images.u8 (pages are read when touched), the
    labels, and the training pixels' per-channel sums and sums of squares (``meta``: the cache's
    meta.json, as checked_meta returned it)."""
    images = torch.from_file(str(cache / IMAGES_FILE), shared=False, size=count * 3 * image_size ** 2,
                             dtype=torch.uint8)
    return (images.view(count, 3, image_size, image_size), torch.tensor(meta["labels"], dtype=torch.int64),
            (meta["train_pixel_sums"], meta["train_pixel_square_sums"]))


def build_cache(cache: Path, expected: dict, files: list[str]) -> None:
    """Decode ``files`` into a temporary directory beside ``cache``, then rename it into place;
    its meta.json holds ``expected`` (see checked_meta), the pixel sums and the checksums. SIGTERM stops the
    build in one line (TrainingInterrupted, exit code 143), leaving nothing."""
    image_size = expected["image_size"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(cache.parent, len(files), image_size)
    building = cache.with_name(f"{cache.name}{BUILDING}{socket.gethostname()}-{os.getpid()}")
    try:
        with sigterm_raises():
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            sums, square_sums = decode_into(building / IMAGES_FILE, files, image_size,
                                            train_rows=expected["train_rows"])
            images = building / IMAGES_FILE
            checksums = block_checksums(images, range(math.ceil(images.stat().st_size / CHECK_BLOCK)))
            meta = dict(expected, train_pixel_sums=sums, train_pixel_square_sums=square_sums,
                        images_crc32=[checksums[block] for block in sorted(checksums)],
                        images_mtime_ns=images.stat().st_mtime_ns)
            (building / META_FILE).write_text(json.dumps(meta))
        shutil.rmtree(cache, ignore_errors=True)  # a stale or broken cache of the same tree and size
        os.rename(building, cache)
    except Terminated:
        raise TrainingInterrupted(f"terminated while decoding {len(files):,} images into the cache, before "
                                  f"anything else was written; nothing is kept (a run decodes them again)",
                                  signal.SIGTERM) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)


class Terminated(BaseException):
    """SIGTERM arrived during a build: raised where the builder was, like KeyboardInterrupt
    (a BaseException, so that no ``except Exception`` on the way swallows it)."""


@contextmanager
def sigterm_raises():
    """SIGTERM raises Terminated in the block instead of ending the process at once, so that
    the workers are stopped, the temporary directory removed and the user told. A handler
    someone else installed (or SIG_IGN) is left alone."""
    if (threading.current_thread() is not threading.main_thread()  # only it receives signals
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handle(signal_number, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_dead_builds(folder: Path) -> None:
    """Remove the temporary directories of builds on this machine whose process is gone (kill -9,
    a power cut); a build in progress is left alone."""
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for building in folder.glob(f"*{BUILDING}*"):
        owner_host, _, pid = building.name.rpartition(BUILDING)[2].rpartition("-")
        # no host: the name an earlier cnnlab gave (<cache>.building-<pid>)
        if owner_host in ("", host) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(building, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as status:  # Linux: "pid (name) state ..."
            return status.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
    first ``train_rows`` rows and of their squares. The workers die with this process; when
    anything stops the decode (a bad image, Ctrl-C, SIGTERM) they are killed at once instead of
    finishing their chunks."""
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
        others, pool = set(active_children()), None  # processes not ours to kill
        try:
            with stop_signals_held():  # stopped while it starts, a pool can be left half made (a thread not started)
                pool = ProcessPoolExecutor(workers, mp_context=context, initializer=worker_started,
                                           initargs=(os.getpid(),))
                results = pool.map(decode_chunk, *zip(*chunks))
            parts = list(results)
        except BaseException:
            for worker in set(active_children()) - others:
                worker.kill()
            raise
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    sums, square_sums = ([sum(part[k][c] for part in parts) for c in range(3)] for k in (0, 1))
    return sums, square_sums


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def stop_signals_held():
    """SIGINT and SIGTERM wait until the block is done (where the platform can hold them)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_started(builder: int) -> None:
    """A decode worker's first act: die with ``builder``, the process that started it. Linux
    kills it when the builder ends (PR_SET_PDEATHSIG), even mid-image; elsewhere, or should that
    fail, a thread sees the builder gone within PARENT_CHECK_S. Without this a builder killed
    with -9 leaves its workers waiting forever for chunks. Ctrl-C, which a terminal sends to
    every process of the job, is left to the builder, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # a forked worker inherits the builder's held signals
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    threading.Thread(target=exit_when_orphaned, args=(builder,), daemon=True).start()


def exit_when_orphaned(builder: int) -> None:
    while os.getppid() == builder:  # an orphan is adopted: its parent's PID changes
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


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
    (a large JPEG decoded at a reduced scale first, see decode_chunk); DataMissing, naming the
    file, if it is unreadable, over PIL's decompression-bomb limit, or in a mode with no certain
    8-bit picture (see as_rgb)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.draft("RGB", (image_size, image_size))
            fitted = ImageOps.fit(as_rgb(image, file), (image_size, image_size), method=Image.Resampling.BILINEAR)
    except Image.DecompressionBombError as e:
        raise DataMissing(f"cannot read image {file}: {first_line(e)} (PIL's Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, UnidentifiedImageError) as e:
        raise DataMissing(f"cannot read image {file}: {first_line(e)}") from None
    return np.asarray(fitted).transpose(2, 0, 1)


SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 32-bit, what PIL makes of most 16-bit files
WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
EIGHT_BIT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB")  # PIL's convert("RGB") is right for these
REFUSED_MODES = {"F": "32-bit floating-point pixels, with no agreed 8-bit scale"}


def as_rgb(image, file):
    """``image`` (a PIL image of ``file``) as 8-bit RGB. Where PIL's own ``convert("RGB")``
    would give another picture, this does not use it: 16-bit grey is scaled from 0..65535 (PIL
    clips at 255, so most 16-bit images turn white); transparent pixels are laid over white
    (PIL drops the alpha, showing whatever colour hides under it). Any other mode is refused,
    by name."""
    from PIL import Image

    if image.mode in SIXTEEN_BIT_GREY:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataMissing(f"cannot read image {file}: its 32-bit integer pixels (PIL mode I) reach "
                              f"{values.min()}..{values.max()}, outside 16 bits; save it with 8 or 16 bits")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if image.mode in WITH_ALPHA or (image.mode in EIGHT_BIT and image.info.get("transparency") is not None):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode in EIGHT_BIT:
        return image.convert("RGB")
    why = REFUSED_MODES.get(image.mode, "not one cnnlab knows how to show in 8-bit RGB")
    raise DataMissing(f"cannot read image {file}: PIL opens it in mode {image.mode} ({why}); "
                      f"save it as 8-bit RGB or grey")
