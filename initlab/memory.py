"""Memory pre-flight: estimate a run's peak memory from its config and refuse one that cannot fit.

The check runs before anything is allocated, so a run too big for the machine fails at once
with a :class:`ConfigError` (exit 2) rather than with a MemoryError halfway through training.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from initlab.config import Config

# Rows the training loop (initlab.experiment) puts through the net at once, which bound its memory:
# Evaluation runs in chunks of this many examples. 2,000 keeps a chunk's activations (800 KB a
# layer at width 100, float32) in a core's L2 cache: an MNIST evaluation of 20,000 images takes
# 47 ms against 67 ms in chunks of 10,000 (same accuracies; the mean loss sums per chunk, so its
# last float32 bits depend on the chunk).
EVAL_CHUNK = 2_000
TRAIN_ACC_SAMPLES = 10_000  # training accuracy is measured on this many examples

MEMORY_ENV = "INITLAB_MEMORY_LIMIT"
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def memory_estimate(cfg: Config) -> dict[str, int]:
    """Bytes a run of ``cfg`` needs at its peak, by part, from the config alone (nothing is allocated).

    On the generous side (measured peaks are about half of it): data drawn in float64 and cast
    (twice over when standardized), four arrays per layer (input, pre-activation, output and a
    gradient) for the largest batch that passes through the net, parameters with gradients and
    two optimizer moments, the history columns and their CSV text, and the snapshots.
    """
    d, m, t, r = cfg.data, cfg.model, cfg.train, cfg.record
    item = np.dtype(m.dtype).itemsize
    n_train, n_eval, n_out = data_sizes(d)
    if d.kind == "mnist":
        data = 70_000 * 784 * (1 + item)  # the decoded uint8 files and their scaled copy
    else:
        data = (n_train + n_eval) * (d.features * (8 + item) + 8 * n_out)
    if d.standardize:
        data += (n_train + n_eval) * d.features * (8 + item)
    widths = [d.features, *m.widths, n_out]
    params = parameter_count(widths) * item * 4
    rows = max(t.batch_size if t.steps else 0, min(r.samples, n_train), min(EVAL_CHUNK, n_eval),
               min(EVAL_CHUNK, TRAIN_ACC_SAMPLES, n_train) if t.steps else 0)
    activations = 4 * rows * sum(widths) * item
    snapshots = 2 + (t.steps // r.every if r.every else 0)
    history = t.steps * (6 * 8 + 120) + snapshots * m.depth * (4 * r.bins + 20) * 8
    return {"data": data, "activations": activations, "parameters": params, "history": history}


def data_sizes(d) -> tuple[int, int, int]:
    """Training examples, held-out examples and outputs of a config's ``data`` section."""
    if d.kind == "mnist":
        return d.samples or 60_000, 10_000 if d.eval_samples is None else d.eval_samples, 10
    return d.samples, d.eval_samples, 1 if d.kind == "regression" else d.classes


def parameter_count(widths: list[int]) -> int:
    """Weights and biases of the Linear layers between consecutive ``widths`` (input, hidden…, output)."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def memory_limit() -> Optional[int]:
    """Bytes a run may use: ``$INITLAB_MEMORY_LIMIT`` (e.g. ``512M``, ``off``), else the memory
    available now (``MemAvailable``, capped by a cgroup limit), else None (unknown: no check)."""
    from initlab.errors import ConfigError

    text = os.environ.get(MEMORY_ENV, "").strip().lower()
    if text in ("off", "none", "0"):
        return None
    if text:
        import re

        match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)\s*([a-z]*)", text)
        if not match or match.group(2) not in _UNITS:
            raise ConfigError(f"{MEMORY_ENV}: expected a size like 512M, 4G or off, got {text!r}")
        return int(float(match.group(1)) * _UNITS[match.group(2)])
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            if cap.isdigit():
                found.append(int(cap) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None
    return max(min(found), 0)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


_MEMORY_KEYS = {
    "data": "data.samples × data.features",
    "activations": "train.batch_size, record.samples or data.eval_samples × model.width",
    "parameters": "model.width × model.depth",
    "history": "train.steps, record.every × record.bins",
}


def check_memory(cfg: Config, limit: Optional[int] = None) -> int:
    """Refuse (ConfigError, exit 2) a run whose :func:`memory_estimate` exceeds ``limit``
    (default :func:`memory_limit`) before anything is allocated. Returns the estimate."""
    from initlab.errors import ConfigError

    parts = memory_estimate(cfg)
    total = sum(parts.values())
    limit = memory_limit() if limit is None else limit
    if limit is not None and total > limit:
        big = max(parts, key=parts.get)
        raise ConfigError(
            f"memory: this run needs about {_size(total)} ({big} {_size(parts[big])}: {_MEMORY_KEYS[big]}) "
            f"but {_size(limit)} is available; make it smaller (or set {MEMORY_ENV})"
        )
    return total


def check_concurrent_memory(configs: list[Config], workers: int) -> None:
    """Refuse a grid whose ``workers`` largest points cannot fit in memory side by side.

    Each point was checked alone when the plan was built; the workers of a local sweep run at
    the same time on one machine, so what must fit is the sum of the biggest ones that may overlap.
    """
    from initlab.errors import ConfigError

    limit = memory_limit()
    if limit is None or workers <= 1 or len(configs) <= 1:
        return
    k = min(workers, len(configs))
    sizes = _largest(configs, k)
    if sum(sizes) > limit:
        mib = 2 ** 20
        raise ConfigError(f"memory: {k} workers running the largest points at once need about "
                          f"{sum(sizes) / mib:.0f} MiB but {limit / mib:.0f} MiB is available; "
                          f"use fewer --workers (each point needs up to {sizes[0] / mib:.0f} MiB) or set {MEMORY_ENV}")


def fits_side_by_side(configs: list[Config], k: int) -> bool:
    """Whether the ``k`` largest of ``configs`` fit in memory at once (always, without a limit)."""
    limit = memory_limit()
    return limit is None or sum(_largest(configs, k)) <= limit


def _largest(configs: list[Config], k: int) -> list[int]:
    return sorted((sum(memory_estimate(c).values()) for c in configs), reverse=True)[:k]
