"""Data sets, built from the config's ``data`` section: a registry of plain functions.

Each builder returns a :class:`Dataset` whose arrays are already in the model's dtype.
Synthetic kinds draw their held-out set the same way, from the same generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from initlab.errors import DataError


# Training minibatches come from the images' bytes (Dataset.pixels) when the float training set is at
# least this big. A minibatch of 128 random MNIST rows gathered from 188 MB of float32 waits on
# memory (117 µs a step in the training loop); from 47 MB of bytes, then divided by 255, it takes
# 81 µs. Below ~5,000 images (16 MB) the floats stay in cache and gathering them is faster.
PIXEL_GATHER_BYTES = 16 * 2**20


@dataclass
class Dataset:
    """``x_*``: ``(n, features)``; ``y_*``: int labels ``(n,)`` or float targets ``(n, 1)``.

    ``pixels``: optionally, uint8 images of which ``x_train`` is exactly ``pixels / 255`` in its
    dtype; :meth:`batch` then gathers from them. Any dataset built from another (standardized,
    rescaled) leaves it out.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    task: str  # "classification" or "regression"
    n_classes: Optional[int] = None
    pixels: Optional[np.ndarray] = None

    def __post_init__(self):
        p, x = self.pixels, self.x_train
        if p is not None and (p.dtype != np.uint8 or p.shape != x.shape or not np.array_equal(_scaled(p[:1], x.dtype), x[:1])):
            raise ValueError("Dataset.pixels must be the uint8 images of which x_train is pixels / 255")

    @property
    def n_out(self) -> int:
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training examples at ``idx``: ``x_train[idx]`` and ``y_train[idx]``, the same numbers
        whether gathered from the floats or from ``pixels``."""
        if self.pixels is None:
            return self.x_train[idx], self.y_train[idx]
        return _scaled(self.pixels[idx], self.x_train.dtype), self.y_train[idx]


def _scaled(pixels: np.ndarray, dtype) -> np.ndarray:
    """``pixels / 255`` in ``dtype``, by the operations that made MNIST's float arrays (bit for bit)."""
    x = pixels.astype(dtype)
    x /= x.dtype.type(255)
    return x


def teacher(d, rng, dtype) -> Dataset:
    """``standard_normal((samples, features)) * scale`` labelled by the argmax of a random linear teacher.

    ``gaussian`` is the same draw: its labels only matter when a forward-only experiment is
    turned into a training one (``train.steps > 0``), and for the gradients recorded at init.
    """
    x = rng.standard_normal((d.samples, d.features)) * d.scale
    x_eval = rng.standard_normal((d.eval_samples, d.features)) * d.scale
    w = rng.standard_normal((d.features, d.classes))
    y, y_eval = np.argmax(x @ w, axis=1), np.argmax(x_eval @ w, axis=1)
    return Dataset(x.astype(dtype), y, x_eval.astype(dtype), y_eval, "classification", d.classes)


def regression(d, rng, dtype) -> Dataset:
    """The seeds' toy problem ``y = 3x + 2 + noise·ε`` (x: the first feature; others are distractors)."""

    def draw(n):
        x = rng.standard_normal((n, d.features))
        y = 3.0 * x[:, :1] + 2.0 + d.noise * rng.standard_normal((n, 1))
        return x.astype(dtype), y.astype(dtype)

    x, y = draw(d.samples)
    x_eval, y_eval = draw(d.eval_samples)
    return Dataset(x, y, x_eval, y_eval, "regression")


def mnist(d, rng, dtype) -> Dataset:
    """The first ``samples`` training images (all if null) and the first ``eval_samples`` test images."""
    from initlab.data.mnist import load_mnist, load_mnist_pixels

    x_train, y_train, x_test, y_test = load_mnist(dtype=np.dtype(dtype).name)
    n, m = d.samples or len(x_train), len(x_test) if d.eval_samples is None else d.eval_samples
    x_train, x_test = x_train[:n], x_test[:m]
    pixels = None
    if getattr(d, "pixel_scale", None) == "raw":
        # Back to the files' integers 0–255 (rint undoes the rounding of /255 in float32).
        x_train, x_test = (np.rint(x * 255).astype(x.dtype) for x in (x_train, x_test))
    elif x_train.nbytes >= PIXEL_GATHER_BYTES:
        pixels = load_mnist_pixels()[:n]
    return Dataset(x_train, y_train[:n], x_test, y_test[:m], "classification", 10, pixels)


DATASETS = {"gaussian": teacher, "mnist": mnist, "regression": regression, "teacher": teacher}


def standardize(ds: Dataset) -> Dataset:
    """z-score every feature with the *training* mean and std; the same statistics go to the eval set."""
    mean = ds.x_train.mean(axis=0, dtype=np.float64)
    std = ds.x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0  # constant features (MNIST's border pixels) stay 0 instead of dividing by 0
    dt = ds.x_train.dtype

    def z(x):
        return ((x - mean) / std).astype(dt)

    return Dataset(z(ds.x_train), ds.y_train, z(ds.x_eval), ds.y_eval, ds.task, ds.n_classes)


def build_dataset(d, rng: np.random.Generator, dtype) -> Dataset:
    """Build the data set for a config's ``data`` section."""
    if d.kind not in DATASETS:
        raise DataError(f"unknown data kind '{d.kind}'")
    ds = DATASETS[d.kind](d, rng, np.dtype(dtype))
    # pixel_scale "standardized" is standardize: true for MNIST; both together z-score once.
    return standardize(ds) if d.standardize or getattr(d, "pixel_scale", None) == "standardized" else ds
