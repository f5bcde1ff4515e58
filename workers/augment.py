"""Batch pipeline on the training device: normalise, random crop with padding, flip, shuffle.

The uint8 images stay resident on the device; every step gathers a shuffled batch by index and
augments it there with a handful of batched tensor ops, so no per-image CPU work happens per
epoch. The same code runs on the CPU (tests, CPU workers).

Padding is applied *after* normalisation. ``pad_mode="reflect"`` (default) mirrors the border
pixels, which keeps image statistics at the border; ``pad_mode="zeros"`` pads with 0 in the
normalised space, i.e. with the dataset's mean colour rather than black.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from search_space.contract import AugmentConfig
from search_space.contract.training import PAD_MODES

__all__ = [
    "PAD_MODES",
    "AugmentConfig",
    "Normalizer",
    "TrainBatches",
    "augment_batch",
    "eval_batches",
]


class Normalizer:
    """uint8 N×3×H×W → float32, normalised per channel with the given mean and std (0–255)."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean = mean.float().view(1, -1, 1, 1)
        self.std = std.float().view(1, -1, 1, 1)

    @classmethod
    def fit(cls, images: Tensor, max_images: int = 10_000) -> Normalizer:
        """Per-channel mean and std of (the first max_images of) a uint8 image tensor."""
        sample = images[:max_images]
        total = sample.sum(dim=(0, 2, 3), dtype=torch.float64)
        count = sample.numel() / sample.shape[1]
        mean = total / count
        squares = torch.zeros_like(mean)
        for chunk in sample.split(1000):  # chunked: a float64 copy of everything would be large
            squares += (chunk.double() - mean.view(1, -1, 1, 1)).square().sum(dim=(0, 2, 3))
        std = (squares / count).sqrt().clamp_min(1e-3)
        return cls(mean, std)

    def to(self, device: torch.device) -> Normalizer:
        """The same normaliser with its statistics on a device."""
        return Normalizer(self.mean.to(device), self.std.to(device))

    def __call__(self, images: Tensor) -> Tensor:
        return (images.float() - self.mean) / self.std


def pad(images: Tensor, padding: int, mode: str = "reflect") -> Tensor:
    """Pad a float N×C×H×W batch on all four sides."""
    if padding == 0:
        return images
    torch_mode = "reflect" if mode == "reflect" else "constant"
    return F.pad(images, (padding,) * 4, mode=torch_mode)


def crop_at(padded: Tensor, offsets: Tensor, size: int) -> Tensor:
    """Crop size×size windows from a padded batch; offsets is N×2 (top, left) per image."""
    n, c, _, width = padded.shape
    steps = torch.arange(size, device=padded.device)
    rows = (offsets[:, 0:1] + steps).view(n, 1, size, 1).expand(n, c, size, width)
    cols = (offsets[:, 1:2] + steps).view(n, 1, 1, size).expand(n, c, size, size)
    # Two gathers (rows, then columns) instead of a Python loop over offsets.
    return padded.gather(2, rows).gather(3, cols)


def random_offsets(
    n: int, padding: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """N×2 crop offsets drawn uniformly from [0, 2·padding]."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=device)


def flip_where(images: Tensor, mask: Tensor) -> Tensor:
    """Mirror left-right the images whose mask entry is True."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def random_flip_mask(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """N booleans, each True with probability 1/2."""
    return torch.rand(n, generator=generator, device=device) < 0.5


def cutout_mask(centres: Tensor, size: int, height: int, width: int) -> Tensor:
    """N×1×H×W booleans: a size×size square around each (row, col) centre, clipped at borders."""
    rows = torch.arange(height, device=centres.device).view(1, height, 1)
    cols = torch.arange(width, device=centres.device).view(1, 1, width)
    top = (centres[:, 0] - size // 2).view(-1, 1, 1)
    left = (centres[:, 1] - size // 2).view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return inside.unsqueeze(1)


def augment_batch(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Random crop (after padding), random flip and cutout of a normalised float batch."""
    n, size = images.shape[0], images.shape[-1]
    if config.crop_padding > 0:
        padded = pad(images, config.crop_padding, config.pad_mode)
        offsets = random_offsets(n, config.crop_padding, generator, images.device)
        images = crop_at(padded, offsets, size)
    if config.flip:
        images = flip_where(images, random_flip_mask(n, generator, images.device))
    if config.cutout > 0:
        centres = torch.randint(0, size, (n, 2), generator=generator, device=images.device)
        images = images.masked_fill(cutout_mask(centres, config.cutout, size, size), 0.0)
    return images


class TrainBatches:
    """One pass over resident training data: shuffled by index, normalised, augmented."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        normalizer: Normalizer,
        augment: AugmentConfig,
        generator: torch.Generator,
        channels_last: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels
        # A batch larger than the data becomes one batch of all of it (tiny test datasets).
        self.batch_size = min(batch_size, len(labels))
        self.normalizer = normalizer
        self.augment = augment
        self.generator = generator
        self.channels_last = channels_last

    def __len__(self) -> int:
        # Dropping the last partial batch keeps shapes fixed (cuDNN autotuning, torch.compile)
        # and avoids BatchNorm on a handful of images.
        return len(self.labels) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(
            len(self.labels), generator=self.generator, device=self.images.device
        )
        for step in range(len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = augment_batch(
                self.normalizer(self.images[index]), self.augment, self.generator
            )
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]


def eval_batches(
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    normalizer: Normalizer,
    channels_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised evaluation batches in order, without augmentation."""
    for start in range(0, len(labels), batch_size):
        batch = normalizer(images[start : start + batch_size])
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        yield batch, labels[start : start + batch_size]
