"""Data sets as uint8 tensors on the training device, and the per-batch transforms.

A data set is held as one ``N x C x H x W`` uint8 tensor per split, on the device that
trains, when it fits there. Resizing, normalisation and augmentation run per batch on that device
(``BatchTransform``), so the training loop does no per-image PIL work.

``--data`` names:

    digits          the embedded 8x8 handwritten digits (1,797 images, no network needed); a
                    fixed, seeded, stratified split: 20 % of each class is the test set
    mnist, fashion-mnist, kmnist, cifar10, cifar100, svhn
                    torchvision's sets, downloaded once into the data directory
    a directory     an ImageFolder tree (one sub-directory per class); with ``train/`` and
                    ``test/`` (or ``val/``, ``valid/``, ...) sub-trees those are the splits,
                    otherwise the same seeded stratified 80/20 split as digits. Decoded once,
                    in parallel, into a memory-mapped cache in the data directory
                    (cnnlab/data/folder.py, which gives the rules)

A set too big for the device's memory stays on the host and streams to the device batch by
batch (cnnlab/data/placement.py); the loops read every split through ``batches``.

The test split is what training reports as ``val_*`` (d2l's convention).
"""

from __future__ import annotations

import difflib
import gzip
import os
import random
import socket
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from urllib.error import URLError

import torch
import torch.nn.functional as F

from cnnlab.data.placement import StreamedImages, batches, fits_on_device
from cnnlab.distributed import local_main_first
from cnnlab.errors import DataMissing, UnknownDataset

DATA_DIR_ENV = "CNNLAB_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/cnnlab").expanduser()
SPLIT_SEED = 0  # fixes the digits and ImageFolder train/test split for good
TEST_FRACTION = 0.2
DOWNLOAD_TIMEOUT_S = 30  # per network operation: an unreachable mirror fails instead of hanging

# --data name -> (torchvision.datasets class, whether a horizontal flip keeps an image's meaning)
TORCHVISION_SETS = {
    "mnist": ("MNIST", False),
    "fashion-mnist": ("FashionMNIST", True),
    "kmnist": ("KMNIST", False),
    "cifar10": ("CIFAR10", True),
    "cifar100": ("CIFAR100", True),
    "svhn": ("SVHN", False),
}
DATASET_NAMES = ["digits", *TORCHVISION_SETS]


@dataclass
class ImageDataset:
    """A data set split into train and test, images as uint8 ``N x C x H x W`` tensors (or, for
    a set too big for the device, ``StreamedImages`` on the host: read them with ``batches``)."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor  # int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    flip_safe: bool  # False for digits and characters, where a mirror image means something else
    # per channel, the sums of the training pixel values and of their squares, when known without
    # reading the images (an ImageFolder cache records them): a streamed set is not read for them
    train_pixel_sums: tuple[list[int], list[int]] | None = None

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[2:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> "ImageDataset":
        """The images on ``device`` when they fit there, else streamed to it; the labels on it."""
        device = torch.device(device)
        on_device = fits_on_device(self.train_images.shape.numel() + self.test_images.shape.numel(), device)

        def place(images):
            host = images.host if isinstance(images, StreamedImages) else images
            return host.to(device) if on_device else StreamedImages(host.cpu(), device)

        return replace(self, train_images=place(self.train_images), test_images=place(self.test_images),
                       train_labels=self.train_labels.to(device), test_labels=self.test_labels.to(device))

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_images, StreamedImages)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images, in [0, 1] units."""
        total = torch.zeros(self.channels, dtype=torch.float64)
        total_sq = torch.zeros(self.channels, dtype=torch.float64)
        if self.train_pixel_sums is not None:
            sums, square_sums = self.train_pixel_sums
            total += torch.tensor(sums, dtype=torch.float64) / 255
            total_sq += torch.tensor(square_sums, dtype=torch.float64) / 255 ** 2
        else:
            for chunk, _ in batches(self.train_images, None, 4096):  # float64 copies of a chunk, not of the set
                pixels = chunk.to("cpu", torch.float64).div_(255).transpose(0, 1).flatten(1)
                total += pixels.sum(1)
                total_sq += pixels.square().sum(1)
        count = self.train_images.shape.numel() / self.channels
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
        return mean.tolist(), std.tolist()


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def load_dataset(name: str = "digits", data_dir=None, *, image_size: int | None = None,
                 device="cpu") -> ImageDataset:
    """Load a data set by name (or ImageFolder path) onto ``device``.

    ``image_size`` is the side images of an ImageFolder tree are decoded to (once, at load);
    the named sets keep their own size and are resized per batch.
    """
    if name == "digits":
        dataset = load_digits()
    elif name in TORCHVISION_SETS:
        with local_main_first():  # under torchrun: one download per machine, not one per process
            dataset = load_torchvision(name, Path(data_dir) if data_dir else default_data_dir())
    elif Path(name).expanduser().is_dir():
        from cnnlab.data.folder import load_image_folder

        dataset = load_image_folder(Path(name).expanduser(), image_size or 224,
                                    Path(data_dir).expanduser() if data_dir else default_data_dir())
    else:
        close = difflib.get_close_matches(name, DATASET_NAMES, n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownDataset(f"unknown data set {name!r}: {hint}choose one of "
                             f"{', '.join(DATASET_NAMES)} or give an ImageFolder directory")
    return dataset.to(device)


# -- the embedded digits -------------------------------------------------------------------

def load_digits() -> ImageDataset:
    """The embedded 8x8 digits, pixel values 0..16 scaled to 0..255."""
    with resources.files("cnnlab").joinpath("embedded/digits.csv.gz").open("rb") as raw:
        values = gzip.decompress(raw.read()).strip().replace(b"\n", b",").split(b",")
    table = torch.tensor(list(map(int, values)), dtype=torch.int64).view(-1, 65)  # 64 pixels, label
    images = (table[:, :64] * 255 + 8).div(16, rounding_mode="floor").to(torch.uint8)
    images, labels = images.reshape(-1, 1, 8, 8), table[:, 64]
    train, test = stratified_split(labels.tolist())
    return ImageDataset("digits", images[train], labels[train], images[test], labels[test],
                        classes=[str(digit) for digit in range(10)], flip_safe=False)


def stratified_split(labels: list[int], test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Train and test indices, ``test_fraction`` of every class in the test set.

    Python's ``random.Random(seed)`` is stable across Python and torch versions, so the split
    is the same everywhere.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    test = []
    for label in sorted(by_class):
        members = by_class[label]
        test += rng.sample(members, round(len(members) * test_fraction))
    test_set = set(test)
    return [i for i in range(len(labels)) if i not in test_set], sorted(test)


# -- torchvision's data sets -----------------------------------------------------------------

def load_torchvision(name: str, data_dir: Path) -> ImageDataset:
    """Download (once) and read a torchvision data set's arrays into uint8 tensors."""
    import torchvision.datasets

    class_name, flip_safe = TORCHVISION_SETS[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    splits = []
    for train in (True, False):
        split = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            splits.append(dataset_class(str(data_dir), download=True, **split))
        except ImportError as e:  # svhn's .mat files need scipy, not a cnnlab dependency
            raise DataMissing(f"reading {name} needs the '{e.name}' package: pip install {e.name}") from None
        except (URLError, RuntimeError, OSError) as e:
            raise DataMissing(missing_files_message(name, data_dir, e)) from None
        finally:
            socket.setdefaulttimeout(previous_timeout)
    train_set, test_set = splits
    return ImageDataset(name, *as_uint8_nchw(train_set), *as_uint8_nchw(test_set),
                        classes=[str(c) for c in getattr(train_set, "classes", range(10))],
                        flip_safe=flip_safe)


def as_uint8_nchw(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision set's whole array: MNIST-like N x H x W, CIFAR N x H x W x C, SVHN N x C x H x W."""
    images = torch.as_tensor(dataset.data)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3):  # channels last (CIFAR)
        images = images.permute(0, 3, 1, 2)
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = dataset.labels
    return images.contiguous(), torch.as_tensor(labels, dtype=torch.int64)


def expected_downloads(name: str, data_dir: Path) -> list[tuple[Path, str]]:
    """(path, url) of every file torchvision reads for ``name``, as its classes declare them."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, TORCHVISION_SETS[name][0])
    if hasattr(cls, "resources"):  # MNIST family: <root>/<Class>/raw/<file>, several mirrors
        raw_folder = data_dir / cls.__name__ / "raw"
        return [(raw_folder / filename, cls.mirrors[0] + filename) for filename, _ in cls.resources]
    if hasattr(cls, "split_list"):  # SVHN: <root>/<split>_32x32.mat
        return [(data_dir / cls.split_list[split][1], cls.split_list[split][0]) for split in ("train", "test")]
    return [(data_dir / cls.filename, cls.url)]  # CIFAR: one archive in <root>


def missing_files_message(name: str, data_dir: Path, error: Exception) -> str:
    files = expected_downloads(name, data_dir)
    missing = [(path, url) for path, url in files if not path.is_file()] or files
    reason = str(getattr(error, "reason", None) or error).strip().splitlines()
    reason = reason[-1] if reason else type(error).__name__
    folder = missing[0][0].parent
    listing = ", ".join(f"{path.name} ({url})" for path, url in missing)
    return (f"could not download {name} ({reason}); put these files into {folder}: {listing} "
            f"(or choose another directory with --data-dir or ${DATA_DIR_ENV})")


# -- per-batch transforms on the device ------------------------------------------------------

class BatchTransform:
    """uint8 ``N x C x H x W`` images -> normalised float batches at the model's input size.

    Training batches may be augmented: a random crop of the image padded by ``crop_padding``
    zero pixels on each side, and a horizontal flip of a random half of the batch.
    """

    def __init__(self, size: tuple[int, int], mean: list[float], std: list[float], *,
                 crop_padding: int = 0, flip: bool = False, device="cpu",
                 memory_format=torch.contiguous_format):
        self.size = tuple(size)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.flip = flip
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor, *, augment: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255)
        if tuple(x.shape[2:]) != self.size:
            shrinking = x.shape[2] > self.size[0] or x.shape[3] > self.size[1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrinking)
        if augment and self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if augment and self.flip:
            flipped = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Shift every image by its own random offset within ``padding`` pixels (zeros fill in)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), device=x.device, generator=generator)
    rows = offsets[0] + torch.arange(h, device=x.device)  # n x h
    cols = offsets[1] + torch.arange(w, device=x.device)  # n x w
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def permute_pixels(dataset: ImageDataset, seed: int | None) -> ImageDataset:
    """``dataset`` with its pixel positions shuffled by one fixed permutation (drawn from a
    generator seeded with ``seed``), the same for every image of both splits, at the images' own
    resolution; ``seed`` None: unchanged. A fully connected net can learn any fixed shuffle; a
    convolution's local windows then see unrelated pixels (the permuted-pixels experiment)."""
    if seed is None:
        return dataset
    height, width = dataset.image_size
    order = torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))
    order = order.to(dataset.train_images.device)

    def shuffled(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(2)[:, :, order].view_as(images)

    return replace(dataset, train_images=shuffled(dataset.train_images), test_images=shuffled(dataset.test_images))
