"""Per-layer statistics of a model on a fixed probe batch: histograms and moments, never raw arrays.

A snapshot runs one forward and backward pass on the probe batch in training mode (batch
statistics for BatchNorm, whose running averages are restored afterwards so that recording
never changes training) and keeps, per hidden layer, histograms of the activations and
pre-activations, their mean and std, saturated and dead fractions, and the weight-gradient norm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from initlab.engine.clipping import grad_norm
from initlab.numbers import finite_or_none

# Arrays stored per snapshot, each of shape (n_layers,) or (n_layers, bins[+1]).
FIELDS = (
    "act_counts", "act_edges", "act_mean", "act_std", "saturated_frac", "dead_frac",
    "preact_counts", "preact_edges", "preact_mean", "preact_std", "grad_norm", "unit_std",
)


@dataclass
class Snapshot:
    step: int
    data: dict = field(default_factory=dict)  # FIELDS → arrays over layers

    def layer(self, i: int) -> dict:
        """Scalar statistics of hidden layer ``i`` (0-based) as plain floats (None where n/a)."""
        keys = ("act_mean", "act_std", "saturated_frac", "dead_frac", "preact_mean", "preact_std", "grad_norm", "unit_std")
        out = {k: finite_or_none(self.data[k][i]) for k in keys}
        return {
            "mean": out["act_mean"], "std": out["act_std"], "saturated_frac": out["saturated_frac"],
            "dead_frac": out["dead_frac"], "preact_mean": out["preact_mean"], "preact_std": out["preact_std"],
            "grad_norm": out["grad_norm"], "unit_std": out["unit_std"],
        }




def _moments(arrays):
    """Mean and std per array, accumulated in float64 without a float64 copy of the data."""
    mean, std = np.empty(len(arrays)), np.empty(len(arrays))
    for i, a in enumerate(arrays):
        flat = a.ravel()
        m = float(flat.sum(dtype=np.float64)) / flat.size
        sq = float(np.dot(flat.astype(np.float64, copy=False), flat)) if flat.dtype == np.float64 else float(
            np.square(flat, dtype=np.float64).sum())
        mean[i], std[i] = m, np.sqrt(max(sq / flat.size - m * m, 0.0))
    return mean, std


def _fit_range(arrays):
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    if hi <= lo:
        pad = max(abs(lo) * 1e-3, 1e-12)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _histograms(arrays, bins, rng_):
    """Counts and edges for every layer, over one common range so panels compare."""
    fitted = rng_ is None
    rng_ = rng_ or _fit_range(arrays)
    counts = np.zeros((len(arrays), bins), dtype=np.int64)
    edges = np.full((len(arrays), bins + 1), np.nan)
    if rng_ is None:  # non-finite values: nothing sensible to bin
        return counts, edges
    lo, hi = rng_
    for i, a in enumerate(arrays):
        counts[i] = _bin_counts(a, bins, lo, hi, inside=fitted)
        edges[i] = np.linspace(lo, hi, bins + 1)
    return counts, edges


def _bin_counts(a, bins, lo, hi, inside=False):
    """Equal-width bin counts over [lo, hi], in the data's own precision (no float64 copy).

    As ``np.histogram(a, bins, (lo, hi))[0]`` (values outside and NaN left out, ``hi`` in the
    last bin) except for values within rounding of a bin edge; ``inside=True`` says every value
    is finite and in range (a range fitted to the data), which skips the mask.
    """
    flat = a.ravel()
    if not inside:
        flat = flat[(flat >= lo) & (flat <= hi)]
    # float32 arithmetic is exact enough unless the range is narrow next to the values themselves
    # (e.g. 0.5 ± 1e-4), where a float32 grid of values would land on the bin edges.
    wide = (hi - lo) > 1e-3 * max(abs(lo), abs(hi))
    t = flat.dtype.type if flat.dtype.kind == "f" and wide else np.float64
    idx = ((flat - t(lo)) * t(bins / (hi - lo))).astype(np.intp)
    np.clip(idx, 0, bins - 1, out=idx)
    return np.bincount(idx, minlength=bins)


def _fraction(mask_fn, arrays):
    if mask_fn is None:
        return np.full(len(arrays), np.nan)
    return np.array([float(np.mean(mask_fn(a))) for a in arrays])


class Recorder:
    """Takes snapshots of a model on a fixed probe batch and keeps them in order."""

    def __init__(self, probe_x, probe_y, loss, bins=30, range_=None):
        self.probe_x, self.probe_y, self.loss = probe_x, probe_y, loss
        self.bins, self.range = bins, range_
        self.snapshots: list[Snapshot] = []

    def snapshot(self, model, step: int) -> Snapshot:
        with model.running_stats_kept():
            out = model.forward(self.probe_x, train=True)
            self.loss.forward(out, self.probe_y)
            model.backward(self.loss.backward(), input_grad=False)
        acts = [b.output for b in model.blocks]
        pre = [b.preact for b in model.blocks]
        act = model.blocks[0].act.activation
        a_range = tuple(self.range) if self.range else act.range
        d = {}
        d["act_counts"], d["act_edges"] = _histograms(acts, self.bins, a_range)
        d["act_mean"], d["act_std"] = _moments(acts)
        d["saturated_frac"] = _fraction(act.saturated, acts)
        d["dead_frac"] = _fraction(act.dead, acts)
        d["preact_counts"], d["preact_edges"] = _histograms(pre, self.bins, None)
        d["preact_mean"], d["preact_std"] = _moments(pre)
        d["grad_norm"] = np.array([grad_norm([b.linear.W]) for b in model.blocks])
        # Mean over examples of the spread across a layer's units: 0 means every unit is the same unit.
        d["unit_std"] = np.array([a.std(axis=1, dtype=np.float64).mean() for a in acts])
        snap = Snapshot(step, d)
        self.snapshots.append(snap)
        return snap

    def arrays(self) -> dict:
        """All snapshots stacked: ``steps`` (S,) and each field (S, L[, bins])."""
        return stack(self.snapshots)


def stack(snapshots) -> dict:
    out = {"steps": np.array([s.step for s in snapshots], dtype=np.int64)}
    for k in FIELDS:
        out[k] = np.stack([s.data[k] for s in snapshots])
    return out


def unstack(arrays) -> list[Snapshot]:
    return [Snapshot(int(step), {k: arrays[k][i] for k in FIELDS}) for i, step in enumerate(arrays["steps"])]
