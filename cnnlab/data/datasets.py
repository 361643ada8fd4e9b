"""A data set as uint8 tensors (ImageDataset), the seeded stratified split, and the pixel permutation."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from cnnlab.data.placement import StreamedImages, batches, fits_on_device


SPLIT_SEED = 0  # fixes the digits and ImageFolder train/test split for good
TEST_FRACTION = 0.2


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
