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

from cnnlab.data.datasets import ImageDataset, permute_pixels, stratified_split
from cnnlab.data.placement import StreamedImages, batches
from cnnlab.data.sources import DATASET_NAMES, default_data_dir, load_dataset, load_digits
from cnnlab.data.transforms import BatchTransform, random_crop

__all__ = ["DATASET_NAMES", "BatchTransform", "ImageDataset", "StreamedImages", "batches", "default_data_dir",
           "load_dataset", "load_digits", "permute_pixels", "random_crop", "stratified_split"]
