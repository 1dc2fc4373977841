"""Data of the supervised track: scikit-learn's bundled digits, seeded splits and pixel permutations.

Every random choice here is a pure function of its arguments (a NumPy ``SeedSequence`` built from
the seed, a purpose tag and the indices), so a task's permutation or an epoch's sample order never
depends on what ran before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Dataset",
    "epoch_order",
    "load_digits_data",
    "rng_for",
    "split",
    "task_permutation",
    "upsample_images",
]

NUM_CLASSES = 10
#: Side of scikit-learn's digits images (8×8 = 64 pixels).
DIGITS_SIDE = 8
# Purpose tags keep the streams of different uses apart for the same (seed, index).
_TAG_PERMUTATION = 1
_TAG_ORDER = 2
_TAG_SPLIT = 3
_TAG_INIT = 4
_TAG_FRESH = 5
_TAG_WARMUP = 6


@dataclass(frozen=True)
class Dataset:
    """Features and labels.

    Attributes:
        x: ``(N, D)`` float32 pixels in ``[0, 1]`` (``D = 64``, or ``image_size²`` when upsampled).
        y: ``(N,)`` int64 digit classes.
    """

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor) -> Dataset:
        """The samples at ``index`` (a new dataset)."""
        return Dataset(self.x[index].contiguous(), self.y[index].contiguous())


def rng_for(seed: int, tag: int, *index: int) -> np.random.Generator:
    """A NumPy generator that is a pure function of ``(seed, tag, *index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag), *(int(i) for i in index)]))


def torch_seed_for(seed: int, tag: int, *index: int) -> int:
    """A 63-bit torch seed that is a pure function of ``(seed, tag, *index)``."""
    return int(rng_for(seed, tag, *index).integers(0, 2**63 - 1))


def load_digits_data(n_samples: int | None = None, image_size: int = DIGITS_SIDE) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images, no download), pixels scaled to ``[0, 1]``.

    With ``image_size > 8`` every image is upsampled to ``image_size × image_size`` by bilinear
    interpolation (:func:`upsample_images`), so that the input size resembles a larger data set's
    (28: MNIST's 784 pixels) while the data set itself stays the shipped one.

    Args:
        n_samples: keep only the first ``n_samples`` images (``None``: all).
        image_size: side of the returned square images (8: as shipped); rows of ``x`` are the
            flattened images, row-major.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if n_samples is not None:
        x, y = x[:n_samples], y[:n_samples]
    if image_size != DIGITS_SIDE:
        x = upsample_images(x, DIGITS_SIDE, image_size)
    return Dataset(x.contiguous(), y.contiguous())


def upsample_images(x: Tensor, side: int, size: int) -> Tensor:
    """Resize flattened square images from ``side × side`` to ``size × size`` (bilinear).

    Bilinear interpolation with ``align_corners=False`` (:func:`torch.nn.functional.interpolate`):
    each output pixel is a convex combination of at most four input pixels, so values stay within
    the input's range ([0, 1] for the digits) and the result is deterministic.

    Args:
        x: ``(N, side * side)`` flattened images, row-major.
        side: the input images' side.
        size: the output images' side (``>= side``).

    Returns:
        ``(N, size * size)`` float32 flattened images, row-major.
    """
    if x.ndim != 2 or x.shape[1] != side * side:
        raise ValueError(f"expected (N, {side * side}) flattened {side}x{side} images, got {tuple(x.shape)}")
    if size < side:
        raise ValueError(f"upsample_images only enlarges: size {size} < side {side}")
    images = x.to(torch.float32).reshape(-1, 1, side, side)
    out = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return out.reshape(x.shape[0], size * size)


def split(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Stratified, seeded train/test split (``test_fraction == 0``: everything is training data)."""
    if test_fraction <= 0:
        return data, None
    rng = rng_for(seed, _TAG_SPLIT)
    y = data.y.numpy()
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[: int(round(test_fraction * idx.size))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(y.size), test_idx)
    return data.subset(torch.as_tensor(train_idx)), data.subset(torch.as_tensor(test_idx))


def task_permutation(seed: int, task: int, n_features: int = 64) -> Tensor:
    """The pixel permutation of task ``task``: identity for task 0, else seeded by ``(seed, task)``."""
    if task == 0:
        return torch.arange(n_features)
    return torch.as_tensor(rng_for(seed, _TAG_PERMUTATION, task).permutation(n_features))


def epoch_order(seed: int, n: int, *index: int) -> Tensor:
    """A shuffled sample order of ``n`` samples, a pure function of ``(seed, *index)``."""
    return torch.as_tensor(rng_for(seed, _TAG_ORDER, *index).permutation(n))


def warmup_indices(seed: int, n: int, fraction: float) -> Tensor:
    """The sorted indices of the warm-up part (``round(fraction·n)`` samples, at least 1)."""
    k = max(1, int(round(fraction * n)))
    return torch.as_tensor(np.sort(rng_for(seed, _TAG_WARMUP).permutation(n)[:k]))
