"""Data sets, built from the config's ``data`` section: a registry of plain functions.

Each builder returns a :class:`Dataset` whose arrays are already in the model's dtype.
Synthetic kinds draw their held-out set the same way, from the same generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from initlab.errors import DataError


@dataclass
class Dataset:
    """``x_*``: ``(n, features)``; ``y_*``: int labels ``(n,)`` or float targets ``(n, 1)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    task: str  # "classification" or "regression"
    n_classes: Optional[int] = None

    @property
    def n_out(self) -> int:
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]


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
    from initlab.data.mnist import load_mnist

    x_train, y_train, x_test, y_test = load_mnist(dtype=np.dtype(dtype).name)
    n, m = d.samples or len(x_train), d.eval_samples or len(x_test)
    x_train, x_test = x_train[:n], x_test[:m]
    if getattr(d, "pixel_scale", None) == "raw":
        # Back to the files' integers 0–255 (rint undoes the rounding of /255 in float32).
        x_train, x_test = (np.rint(x * 255).astype(x.dtype) for x in (x_train, x_test))
    return Dataset(x_train, y_train[:n], x_test, y_test[:m], "classification", 10)


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
