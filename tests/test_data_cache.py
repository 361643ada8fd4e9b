"""ImageFolder trees: parallel decode into a memory-mapped cache, reuse, invalidation, repair."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import processes
from cnnlab.data import folder, load_dataset
from cnnlab.errors import DataTooLarge


def write_noise_tree(root, classes=("a", "b", "c"), per_class=7, seed=0):
    """JPEGs and PNGs of random pixels and assorted sizes: decoding is not a no-op on them."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 9 + (i * 5) % 13, 11 + (i * 7 + k) % 17
            pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=generator).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")


def decoded_alone(path, size):
    """The reference: one file decoded by PIL on its own (a JPEG at the smallest DCT scale that
    keeps it at least ``size``), centre-cropped and resized (bilinear)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
    return torch.from_numpy(__import__("numpy").asarray(fitted).copy()).permute(2, 0, 1)


@pytest.fixture
def counted_decodes(monkeypatch):
    """How many times a cache was decoded (built), with the real decoder."""
    calls = []
    real = folder.decode_into

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(folder, "decode_into", counting)
    return calls


def every_image(data):
    return torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])


def test_parallel_decode_gives_each_files_own_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "DECODE_CHUNK", 4)  # 21 images: 6 tasks over the worker processes
    write_noise_tree(tmp_path / "tree")
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=10)
    samples, classes, train_count = folder.list_tree(tmp_path / "tree")
    images, labels = every_image(data)
    assert data.classes == ["a", "b", "c"] and len(images) == 21 and train_count == len(data.train_labels)
    for row, (path, label) in enumerate(samples):
        assert torch.equal(images[row], decoded_alone(path, 10)), path
        assert labels[row] == label


def test_second_load_maps_the_cache_without_decoding(tmp_path, counted_decodes):
    write_noise_tree(tmp_path / "tree")
    first = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=12)
    second = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=12)
    assert len(counted_decodes) == 1
    for a, b in zip(every_image(first), every_image(second)):
        assert torch.equal(a, b)
    load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=13)  # another size: its own cache
    assert len(counted_decodes) == 2
    caches = sorted(p.name for p in (tmp_path / "data" / "imagefolder").iterdir())
    assert len(caches) == 2 and caches[0].endswith("-12px") and caches[1].endswith("-13px")


def test_a_touched_file_or_a_new_class_invalidates_the_cache(tmp_path, counted_decodes):
    tree = tmp_path / "tree"
    write_noise_tree(tree)
    load_dataset(str(tree), tmp_path / "data", image_size=8)
    # same content, new modification time: rebuilt
    path = tree / "b" / "3.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    load_dataset(str(tree), tmp_path / "data", image_size=8)
    assert len(counted_decodes) == 2
    # a file rewritten with other pixels: the cache holds the new ones
    write_noise_tree(tree, classes=("b",), per_class=4, seed=1)
    data = load_dataset(str(tree), tmp_path / "data", image_size=8)
    assert len(counted_decodes) == 3
    samples, _, _ = folder.list_tree(tree)
    row = [p for p, _ in samples].index(str(tree / "b" / "3.jpg"))
    assert torch.equal(every_image(data)[0][row], decoded_alone(tree / "b" / "3.jpg", 8))
    # a new class
    write_noise_tree(tree, classes=("d",), per_class=5, seed=2)
    data = load_dataset(str(tree), tmp_path / "data", image_size=8)
    assert len(counted_decodes) == 4 and data.classes == ["a", "b", "c", "d"] and data.num_classes == 4
    assert len(every_image(data)[1]) == 26
    assert len(list((tmp_path / "data" / "imagefolder").iterdir())) == 1  # the stale cache was replaced


@pytest.mark.parametrize("damage", ["truncate images", "half-written meta", "no meta"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, counted_decodes, damage):
    write_noise_tree(tmp_path / "tree")
    expected = every_image(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9))
    (cache,) = (tmp_path / "data" / "imagefolder").iterdir()
    if damage == "truncate images":
        with open(cache / folder.IMAGES_FILE, "r+b") as f:
            f.truncate(3 * 9 * 9 * 5)
    elif damage == "half-written meta":
        text = (cache / folder.META_FILE).read_text()
        (cache / folder.META_FILE).write_text(text[:len(text) // 2])
    else:
        (cache / folder.META_FILE).unlink()
    again = every_image(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9))
    assert len(counted_decodes) == 2
    assert all(torch.equal(a, b) for a, b in zip(expected, again))


def test_an_interrupted_build_leaves_no_cache_behind(tmp_path, monkeypatch):
    write_noise_tree(tmp_path / "tree")

    def killed(path, files, size, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)  # part of the rows, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "decode_into", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9)
    assert list((tmp_path / "data" / "imagefolder").iterdir()) == []


def test_a_set_the_disk_cannot_hold_fails_in_one_line_with_a_size_that_fits(tmp_path, monkeypatch):
    write_noise_tree(tmp_path / "tree")  # 21 images
    # simulated: 21 images at 224 px need 3,161,088 bytes; 21 x 3 x 100 x 100 + 5 bytes are free
    monkeypatch.setattr(folder, "free_disk", lambda path: 21 * 3 * 100 * 100 + 5)
    with pytest.raises(DataTooLarge) as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=224)
    message = str(error.value)
    assert "\n" not in message
    assert "21 images at 224x224 take 3.2 MB decoded" in message and "630.0 kB free" in message
    assert "--resize 100 would fit" in message
    assert list((tmp_path / "data" / "imagefolder").iterdir()) == []  # nothing written
    load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=100)  # the advice works


def test_the_cache_records_the_training_pixel_statistics(tmp_path, monkeypatch):
    write_noise_tree(tmp_path / "tree")
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=10)
    assert data.train_pixel_sums is not None
    pixels = data.train_images.double().div(255).transpose(0, 1).flatten(1)  # the reference: every pixel
    mean, std = data.channel_stats()
    assert mean == pytest.approx(pixels.mean(1).tolist(), rel=1e-12)
    assert std == pytest.approx(pixels.std(1, unbiased=False).tolist(), rel=1e-9)


def test_a_large_jpeg_decoded_at_reduced_scale_stays_close_to_a_full_decode(tmp_path):
    from PIL import Image, ImageOps

    ramp = torch.linspace(0, 255, 96)
    pixels = torch.stack([ramp.expand(96, 96), ramp.expand(96, 96).T, 255 - ramp.expand(96, 96)], 2)
    for name in ("ramp", "same"):  # two classes of five (one a test row each), every file the same picture
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(tmp_path / "tree" / name / f"{i}.jpg", quality=95)
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=24)  # 96 -> 1/4 scale, then 24
    with Image.open(tmp_path / "tree" / "ramp" / "0.jpg") as image:  # the reference: a full decode
        full = ImageOps.fit(image.convert("RGB"), (24, 24), method=Image.Resampling.BILINEAR)
    full = torch.from_numpy(__import__("numpy").asarray(full).copy()).permute(2, 0, 1).float()
    assert (every_image(data)[0][0].float() - full).abs().mean() < 3  # of 255 levels


@pytest.mark.parametrize("missing", ["key", "version", "image_size", "train_rows", "classes", "labels",
                                     "train_pixel_sums", "train_pixel_square_sums"])
def test_a_meta_file_without_a_value_is_rebuilt(tmp_path, counted_decodes, missing):
    write_noise_tree(tmp_path / "tree")
    expected = every_image(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9))
    (cache,) = (tmp_path / "data" / "imagefolder").iterdir()
    meta = json.loads((cache / folder.META_FILE).read_text())
    del meta[missing]
    (cache / folder.META_FILE).write_text(json.dumps(meta))
    again = every_image(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9))
    assert len(counted_decodes) == 2
    assert all(torch.equal(a, b) for a, b in zip(expected, again))
    assert json.loads((cache / folder.META_FILE).read_text()).keys() >= {missing}


@pytest.mark.parametrize("edit", ["a label out of range", "two labels swapped", "a class renamed",
                                  "negative pixel sums", "a variance below zero", "sums as floats"])
def test_a_meta_file_that_disagrees_with_the_tree_is_rebuilt(tmp_path, counted_decodes, edit):
    write_noise_tree(tmp_path / "tree")  # classes a, b, c: labels 0..2
    expected = every_image(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9))
    (cache,) = (tmp_path / "data" / "imagefolder").iterdir()
    meta = json.loads((cache / folder.META_FILE).read_text())
    if edit == "a label out of range":
        meta["labels"][0] = 99
    elif edit == "two labels swapped":
        first_b = meta["labels"].index(1)
        meta["labels"][0], meta["labels"][first_b] = meta["labels"][first_b], meta["labels"][0]
    elif edit == "a class renamed":
        meta["classes"][1] = "zebra"
    elif edit == "negative pixel sums":
        meta["train_pixel_sums"][2] = -5
    elif edit == "a variance below zero":  # the mean's square above the mean of the squares
        meta["train_pixel_square_sums"][0] = meta["train_pixel_square_sums"][0] // 3
    else:
        meta["train_pixel_sums"] = [float(v) for v in meta["train_pixel_sums"]]
    (cache / folder.META_FILE).write_text(json.dumps(meta))
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9)
    assert len(counted_decodes) == 2
    assert all(torch.equal(a, b) for a, b in zip(expected, every_image(data)))
    assert data.classes == ["a", "b", "c"] and int(every_image(data)[1].max()) == 2
    pixels = data.train_images.double().div(255).transpose(0, 1).flatten(1)  # the reference: every pixel
    assert data.channel_stats()[0] == pytest.approx(pixels.mean(1).tolist(), rel=1e-12)


def test_a_dead_builders_folder_is_removed_and_a_live_ones_kept(tmp_path):
    write_noise_tree(tmp_path / "tree")
    caches = tmp_path / "data" / "imagefolder"
    caches.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its PID belongs to no process now
    host = socket.gethostname()
    dead = [caches / f"tree-0-9px.building-{host}-{finished.pid}", caches / f"tree-0-9px.building-{finished.pid}"]
    live = caches / f"other-1-9px.building-{host}-{os.getpid()}"
    elsewhere = caches / f"other-1-9px.building-another-host-{finished.pid}"  # maybe alive there
    for building in (*dead, live, elsewhere):
        building.mkdir()
        (building / folder.IMAGES_FILE).write_bytes(b"\0" * 10)
    load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=9)
    assert not any(building.exists() for building in dead) and live.is_dir() and elsewhere.is_dir()


# a `cnnlab train` whose decode workers never finish an image, so that the test can stop the build
# while they run, however fast or busy the machine is
HANGING_BUILD = """
import sys, time
from cnnlab import cli
from cnnlab.data import folder
folder.DECODE_CHUNK, folder.available_cores = 1, lambda: 2  # two worker processes

def decode_forever(file, image_size):
    while True:
        time.sleep(60)

folder.decode_image = decode_forever
if sys.argv.pop(1) == "watch only":  # prctl option 0 is no option: only the worker's own watch is left
    folder.PR_SET_PDEATHSIG = 0
sys.argv[0] = "cnnlab"
cli.main()
"""


def live_children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, zombies left out (from /proc)."""
    children = set()
    for entry in os.listdir("/proc"):
        status = process_status(int(entry)) if entry.isdigit() else None
        if status is not None and status[1] == pid:
            children.add(int(entry))
    return children


def process_status(pid: int) -> tuple[str, int] | None:
    """(state, parent PID) of a process that has not ended (not a zombie); None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, parent = f.read().rpartition(")")[2].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state in "ZX" else (state, int(parent))


def wait_for(condition, what: str, process=None, limit_s: float = 120):
    """Poll until ``condition()`` holds; a generous limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop, workers_die_by", [(signal.SIGKILL, "PR_SET_PDEATHSIG"), (signal.SIGKILL, "watch only"),
                                                   (signal.SIGTERM, "the builder"), (signal.SIGINT, "the builder")])
def test_a_build_stopped_by_a_signal_leaves_no_worker_and_no_folder(tmp_path, stop, workers_die_by):
    write_noise_tree(tmp_path / "tree", classes=("a", "b"), per_class=3)
    caches = tmp_path / "data" / "imagefolder"
    builder = processes.start(["-c", HANGING_BUILD, workers_die_by, "train", "lenet", "--data", tmp_path / "tree",
                               "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs",
                               "--device", "cpu", "--epochs", "1"])
    workers = set()
    try:
        wait_for(lambda: caches.is_dir() and any(caches.glob("*.building-*")) and len(live_children(builder.pid)) >= 2,
                 "the build with its two workers", builder)
        workers = live_children(builder.pid)
        os.kill(builder.pid, stop)
        builder.wait(timeout=120)
        wait_for(lambda: not any(process_status(pid) for pid in workers), "the workers to end", limit_s=30)
        err = builder.communicate(timeout=30)[1]  # the workers held the pipes open too
    finally:  # only if the test failed: leave nothing running (and kill no process but ours)
        builder.kill()
        for pid in workers:
            if process_status(pid) and b"decode_forever" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    if stop == signal.SIGTERM:
        assert builder.returncode == 143
        assert err.splitlines() == [err.strip()] and err.startswith("error: terminated while decoding 6 images")
        assert "nothing is kept" in err and "Traceback" not in err
        assert list(caches.iterdir()) == []
    elif stop == signal.SIGINT:  # Ctrl-C: the workers are stopped, not waited for
        assert builder.returncode == 130 and err == "error: interrupted before training started\n"
        assert list(caches.iterdir()) == []
    else:
        assert builder.returncode == -signal.SIGKILL
        assert len(list(caches.glob("*.building-*"))) == 1  # what kill -9 leaves; the next load removes it
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert len(data.train_labels) + len(data.test_labels) == 6
    assert [p.name.endswith("-8px") for p in caches.iterdir()] == [True]
