"""The per-batch transform on the training device: resize, normalise, augment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# a training set whose images at the input size take at most this many bytes as floats is
# resized once before training rather than batch by batch: the embedded digits (8x8) at LeNet's
# 28x28 take 4.5 MB, and their per-batch resize was 5 % of a LeNet step (190 of 4,100 us)
RESIZE_ONCE_BYTES = 256 * 2**20


class BatchTransform:
    """uint8 ``N x C x H x W`` images -> normalised float batches at the model's input size.

    Training batches may be augmented: a random crop of the image padded by ``crop_padding``
    zero pixels on each side, and a horizontal flip of a random half of the batch.
    """

    def __init__(self, size: tuple[int, int], mean: list[float], std: list[float], *,
                 crop_padding: int = 0, flip: bool = False, device="cpu",
                 memory_format=torch.contiguous_format):
        self.size = tuple(size)
        # (x / 255 - mean) / std as one multiply-add on the 0..255 values: resizing, padding with
        # zeros and flipping commute with it, so it comes last
        std_tensor = torch.tensor(std, dtype=torch.float64)
        self.scale = (1 / (255 * std_tensor)).float().view(1, -1, 1, 1).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float64) / std_tensor).float().view(1, -1, 1, 1).to(device)
        self.crop_padding = crop_padding
        self.flip = flip
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor, *, augment: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``images``: uint8, or 0..255 floats already at the input size (``resized_once``)."""
        x = self.resize(images.float())
        if augment and self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if augment and self.flip:
            flipped = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)
        x = torch.addcmul(self.shift, x, self.scale)
        return x.contiguous(memory_format=self.memory_format)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) == self.size:
            return x
        shrinking = x.shape[2] > self.size[0] or x.shape[3] > self.size[1]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrinking)

    def resized_once(self, images: torch.Tensor) -> torch.Tensor:
        """The training images as the loop should index them: resized to the input size once, as
        0..255 floats, when they are another size and that copy is at most RESIZE_ONCE_BYTES
        (each image is resized alone either way, so the batches are the same); else ``images``."""
        if not isinstance(images, torch.Tensor) or tuple(images.shape[2:]) == self.size:
            return images  # streamed from the host, or nothing to resize
        if images.shape[:2].numel() * self.size[0] * self.size[1] * 4 > RESIZE_ONCE_BYTES:
            return images
        return torch.cat([self.resize(chunk.float()) for chunk in images.split(256)])


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
