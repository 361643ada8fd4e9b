"""Where data sets come from: the embedded digits, torchvision's sets (downloaded once into the
data directory), an ImageFolder tree (cnnlab/data/folder.py); ``load_dataset`` picks by name."""

from __future__ import annotations

import difflib
import gzip
import os
import socket
from importlib import resources
from pathlib import Path
from urllib.error import URLError

import torch

from cnnlab.data.datasets import ImageDataset, stratified_split
from cnnlab.distributed import local_main_first
from cnnlab.errors import DataMissing, UnknownDataset


DATA_DIR_ENV = "CNNLAB_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/cnnlab").expanduser()
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
