"""Per-layer statistics of a model on a fixed probe batch: histograms and moments, never raw arrays.

A snapshot runs one forward pass on the probe batch in training mode (batch statistics for
BatchNorm, whose running averages are restored afterwards so that recording never changes
training) and keeps, per hidden layer, histograms of the activations and pre-activations, their
mean and std, saturated and dead fractions, and the spread across units.

The per-layer weight-gradient norm needs a backward pass, which on the whole probe costs about ten
training steps (most of what recording used to cost). Where it comes from is ``grad_from``:

- ``"step"`` (a run's default): from the backward pass training does anyway. The snapshot at step
  ``s`` is left *pending* and the next training step, which starts from the very weights the
  snapshot saw, hands over its gradients (:meth:`Recorder.take_step_grads`) before clipping and
  before its update; a snapshot no step follows (the last one, or one cut short by divergence or
  an interrupt) gets a minibatch drawn as the next step would draw it (:meth:`Recorder.settle`).
  So ``grad_norm`` is the norm of the gradient a training step sees, at no extra cost.
- ``"probe"``: a forward and backward pass on the first ``grad_samples`` probe examples
  (``None``: the whole probe, in the same pass as the histograms), 0.2's way.
"""
from __future__ import annotations

import math
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


# Default size of the sub-probe for gradient norms (``record.grad_samples``): the textbook's batch,
# so one training step's worth of work, and the norm is that of the gradient a batch-100 step sees
# (as history.csv's grad_norm). On MNIST at init it is within ~15% of the 1,000-example norm
# (+5-10% bias: a noisier mean has a larger norm); late in training, when the mean gradient is
# small next to the per-example spread, it can be 1.5-2.5x that. tests/test_recorder.py shows the
# agreement within sampling error; ``record.grad_samples: null`` gives the whole-probe value.
GRAD_SAMPLES = 100


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


def _summary(a, spread=True, lim=None):
    """Mean, std and mean spread across units (std along axis 1, averaged over rows) of a 2-D array:
    :func:`_summaries_fused` of the one array; non-finite, huge or non-2-D data take NumPy's path
    (same values, same warnings)."""
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype.kind != "f" or a.size == 0:
        return _summary_numpy(a, spread)
    lim = lim if lim is not None else (float(a.min()), float(a.max()))
    if not _summary_safe(a, lim):
        return _summary_numpy(a, spread)
    mean, std, unit_std = _summaries_fused([a], spread, [lim], {})
    return float(mean[0]), float(std[0]), float(unit_std[0])


def _summary_numpy(a, spread):
    """Mean, std and spread by NumPy's reductions in float64 (non-finite or huge values: NumPy's results and warnings)."""
    a2 = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)
    mean, std = _moments([a2])
    return float(mean[0]), float(std[0]), float(a2.std(axis=1, dtype=np.float64).mean()) if spread else np.nan


def _limits(arrays):
    """``(min, max)`` of each array as floats (NaN when it holds NaN), computed once per snapshot."""
    return [(float(a.min()), float(a.max())) for a in arrays]


def _summaries(arrays, spread=True, lims=None, scratch=None):
    """``(mean, std, unit_std)`` arrays over layers (unit_std NaN unless ``spread``).

    Layers of one shape and float dtype with finite values of moderate size (every hidden layer
    of an MLP, as a rule) take :func:`_summaries_fused`; anything else :func:`_summary` of each.
    """
    if lims is not None and _fusable(arrays) and all(_summary_safe(a, lim) for a, lim in zip(arrays, lims)):
        return _summaries_fused(arrays, spread, lims, scratch if scratch is not None else {})
    lims = lims or [None] * len(arrays)
    rows = np.array([_summary(a, spread, lim) for a, lim in zip(arrays, lims)], dtype=np.float64).reshape(len(arrays), 3)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def _fusable(arrays):
    """Non-empty 2-D float arrays, all of one shape and dtype."""
    if not arrays:
        return False
    a0 = arrays[0]
    return all(isinstance(a, np.ndarray) and a.ndim == 2 and a.size and a.shape == a0.shape and a.dtype == a0.dtype
               and a.dtype.kind == "f" for a in arrays)


def _summary_safe(a, lim):
    """Finite ``lim`` small enough that row sums of squared shifted values stay finite (as in :func:`_summary`)."""
    big = max(abs(lim[0]), abs(lim[1]))  # NaN and inf fail the comparison below
    return big <= 0.1 * np.sqrt(float(np.finfo(a.dtype).max) / (4 * a.shape[1]))


def _scratch(scratch, key, shape, dtype):
    """A buffer kept across snapshots (``scratch`` is the Recorder's dict), so nothing is allocated per snapshot."""
    buf = scratch.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = scratch[key] = np.empty(shape, dtype)
    return buf


def _centre(a):
    """About the mean of ``a`` (that of a few rows; a layer's range is a poor centre, ReLU's is two or more
    times its mean), rounded to 8 significant bits: then the shifted zeros of a ReLU layer, and their
    squares, add up exactly in row sums, instead of piling up rounding errors of one sign."""
    m, e = math.frexp(float(a[::max(1, len(a) // 8)].mean(dtype=np.float64)))
    return math.ldexp(round(m * 256), e - 8)


def _summaries_fused(arrays, spread, lims, scratch):
    """:func:`_summary` of every layer with one row-sum pass per layer and the rest over all layers at once.

    Each layer is shifted by the centre of its range (one scalar subtraction, where :func:`_summary`
    shifts every row by its own first entry, a slower broadcast), so no precision is lost to a large
    common offset; row sums of the shifted values are accurate in the data's own precision and the
    totals combine in float64 (law of total variance). Rows whose mean lies far from that centre
    next to their spread (fewer digits in the difference of the sums) are redone exactly in float64,
    shifted by their first entry, as :func:`_summary` does: a row whose units are all equal has
    exactly zero spread.
    """
    n_layers, (rows, w) = len(arrays), arrays[0].shape
    t = arrays[0].dtype.type
    d = _scratch(scratch, "summary_d", (rows, w), arrays[0].dtype)
    s1 = _scratch(scratch, "summary_s1", (n_layers, rows), arrays[0].dtype)
    s2 = _scratch(scratch, "summary_s2", (n_layers, rows), arrays[0].dtype)
    ones = _scratch(scratch, "summary_ones", (w,), arrays[0].dtype)
    ones.fill(1)
    centre = np.array([_centre(a) for a in arrays], dtype=np.float64)
    for i, a in enumerate(arrays):
        np.subtract(a, t(centre[i]), out=d)
        np.matmul(d, ones, out=s1[i])
        np.einsum("ij,ij->i", d, d, out=s2[i])
    m1 = s1.astype(np.float64)
    m1 /= w
    m2 = s2.astype(np.float64)
    m2 /= w
    row_var = np.maximum(m2 - m1 * m1, 0.0)
    row_mean = m1
    row_mean += centre[:, None]
    redo = row_var < 1e-2 * m2
    for i in np.flatnonzero(redo.any(axis=1)):
        r = np.flatnonzero(redo[i])
        exact = arrays[i][r].astype(np.float64)
        first = exact[:, :1].copy()
        exact -= first
        row_mean[i, r] = first[:, 0] + exact.mean(axis=1)
        row_var[i, r] = exact.var(axis=1)
    mean = row_mean.mean(axis=1)
    row_mean -= mean[:, None]
    var = row_var.mean(axis=1) + np.mean(row_mean * row_mean, axis=1)
    unit_std = np.sqrt(row_var).mean(axis=1) if spread else np.full(n_layers, np.nan)
    return mean, np.sqrt(var), unit_std


def _fit_range(arrays, lims=None):
    lims = lims or _limits(arrays)
    lo = min(x for x, _ in lims)
    hi = max(x for _, x in lims)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    if hi <= lo:
        pad = max(abs(lo) * 1e-3, 1e-12)
        lo, hi = lo - pad, hi + pad
    return lo, hi


# Fitted histogram ranges are per layer when the widest layer's range is more than this × the
# narrowest: in one common range a collapsing layer would be a single bar at 0 (issue 14).
OWN_RANGE_RATIO = 10.0


def _histograms(arrays, bins, rng_, lims=None, scratch=None):
    """Counts and edges for every layer, over one common range so panels compare — unless the range is
    fitted to the data and the layers' ranges differ by more than ``OWN_RANGE_RATIO``: then each layer
    gets its own (the figures say so)."""
    fitted = rng_ is None
    if fitted:
        lims = lims or _limits(arrays)
    rng_ = rng_ or _fit_range(arrays, lims)
    counts = np.zeros((len(arrays), bins), dtype=np.int64)
    edges = np.full((len(arrays), bins + 1), np.nan)
    if rng_ is None:  # non-finite values: nothing sensible to bin
        return counts, edges
    ranges = [rng_] * len(arrays)
    if fitted and len(arrays) > 1:
        own = [_fit_range([a], [lim]) for a, lim in zip(arrays, lims)]
        if any(r is None for r in own):  # a NaN layer slips past the common fit (Python's min skips NaN)
            return counts, edges
        spans = [r[1] - r[0] for r in own]
        if max(spans) > OWN_RANGE_RATIO * min(spans):
            ranges = own
    grid = {}  # one linspace per distinct range
    for i, r in enumerate(ranges):
        if r not in grid:
            grid[r] = np.linspace(r[0], r[1], bins + 1)
        edges[i] = grid[r]
    # a given range holds a layer whose min and max lie in it: no values to leave out
    inside = [fitted or (lims is not None and r[0] <= lim[0] and lim[1] <= r[1]) for r, lim in
              zip(ranges, lims or [(np.nan, np.nan)] * len(arrays))]
    # one layer at a time in one buffer kept across snapshots (in cache, where a buffer for all layers is not)
    for i, a in enumerate(arrays):
        buf = None
        if scratch is not None and inside[i] and a.dtype.kind == "f" and _wide(*ranges[i]):
            buf = _scratch(scratch, f"bins_{a.dtype}", (a.size,), a.dtype)
        counts[i] = _bin_counts(a, bins, *ranges[i], inside=inside[i], out=buf)
    return counts, edges


def _wide(lo, hi):
    """Is float32 arithmetic exact enough for bin numbers over [lo, hi] (see :func:`_bin_counts`)?"""
    return (hi - lo) > 1e-3 * max(abs(lo), abs(hi))


def _bin_counts(a, bins, lo, hi, inside=False, out=None):
    """Equal-width bin counts over [lo, hi], in the data's own precision (no float64 copy).

    As ``np.histogram(a, bins, (lo, hi))[0]`` (values outside and NaN left out, ``hi`` in the
    last bin) except for values within rounding of a bin edge; ``inside=True`` says every value
    is finite and in range (a range fitted to the data), which skips the mask.

    ``np.bincount`` costs a few nanoseconds per value, more than everything else here together,
    so it counts groups: ``g`` consecutive bin numbers are joined into one number in base
    ``bins + 1`` (one matrix-vector product, exact in floating point below 2**24), counted once
    in ``(bins + 1) ** g`` bins, and the g marginals of that joint count are summed.

    ``out``: a buffer of ``a.size`` values of ``a``'s dtype for the bin numbers (with ``inside=True``
    and a range that is not narrow, see below), so that repeated calls allocate nothing.
    """
    flat = a.ravel()
    if not inside:
        flat = flat[(flat >= lo) & (flat <= hi)]
    # float32 arithmetic is exact enough unless the range is narrow next to the values themselves
    # (e.g. 0.5 ± 1e-4), where a float32 grid of values would land on the bin edges.
    t = flat.dtype.type if flat.dtype.kind == "f" and _wide(lo, hi) else np.float64
    if out is not None and out.dtype == t and out.shape == flat.shape:
        x = np.subtract(flat, t(lo), out=out)
    else:
        x = np.subtract(flat, t(lo), dtype=t)  # ≥ 0: values are ≥ lo and rounding is monotonic
    x *= t(bins / (hi - lo))
    np.floor(x, out=x)  # bin numbers 0 … bins; "bins" is hi itself (rounding stays below bins + 1)
    return _count_bin_numbers(x, bins)


def _count_bin_numbers(x, bins):
    """Counts of the bin numbers ``x`` (floats 0 … bins, ``bins`` the right edge) in ``bins`` bins."""
    t = x.dtype.type
    base = bins + 1
    # the group size that counts fastest (measured for 100,000 values): the joint count's marginals
    # cost more than grouping saves once the joint count leaves the L1 cache (30 bins: g = 2)
    g = 3 if base ** 3 <= 10_000 else 2 if base ** 2 <= 20_000 else 1
    m = len(x) - len(x) % g
    counts = np.zeros(base, dtype=np.int64)
    if g > 1 and m:
        joined = x[:m].reshape(-1, g) @ (base ** np.arange(g)).astype(t)
        joint = np.bincount(joined.astype(np.intp), minlength=base ** g)
        # the marginal of each digit, most significant first, each summed along contiguous memory
        counts += joint.reshape(base, -1).sum(axis=1)
        for k in range(1, g - 1):
            counts += joint.reshape(base ** k, base, -1).sum(axis=0).sum(axis=1)
        counts += joint.reshape(-1, base).sum(axis=0)
        x = x[m:]
    counts += np.bincount(x.astype(np.intp), minlength=base)
    counts[bins - 1] += counts[bins]  # the right edge belongs to the last bin
    return counts[:bins]


def _act_stats(acts, act, bins, range_, scratch) -> dict:
    """The activations' fields of a snapshot (``range_``: the histograms' range, None: fitted)."""
    lims = _limits(acts)  # one min and max per array, shared below
    d = {}
    d["act_counts"], d["act_edges"] = _histograms(acts, bins, range_, lims, scratch)
    # unit_std: mean over examples of the spread across a layer's units (0: every unit is the same unit)
    d["act_mean"], d["act_std"], d["unit_std"] = _summaries(acts, lims=lims, scratch=scratch)
    d["saturated_frac"] = _fraction(act.saturated, acts)
    d["dead_frac"] = _fraction(act.dead, acts)
    return d


def _preact_stats(pre, bins, scratch) -> dict:
    """The pre-activations' fields of a snapshot (histograms over a fitted range)."""
    lims = _limits(pre)
    d = {}
    d["preact_counts"], d["preact_edges"] = _histograms(pre, bins, None, lims, scratch)
    d["preact_mean"], d["preact_std"], _ = _summaries(pre, spread=False, lims=lims, scratch=scratch)
    return d


def _fraction(mask_fn, arrays):
    if mask_fn is None:
        return np.full(len(arrays), np.nan)
    return np.array([np.count_nonzero(mask_fn(a)) / a.size for a in arrays])


GRAD_FROM = ("step", "probe")  # record.grad_from


def layer_grad_norms(model) -> np.ndarray:
    """The norm of each hidden layer's weight gradient, from the gradients the last backward pass left."""
    return np.array([grad_norm([b.linear.W]) for b in model.blocks])


class Recorder:
    """Takes snapshots of a model on a fixed probe batch and keeps them in order.

    ``grad_from``: where the gradient norms come from (module docstring): ``"probe"`` computes them
    in :meth:`snapshot`; ``"step"`` leaves the snapshot pending until :meth:`take_step_grads` or
    :meth:`settle`. ``grad_samples``: with ``"probe"``, how many of the probe's first examples give
    them (None: all). A context manager: :meth:`close` when done (see
    :class:`initlab.recorder_process.BackgroundRecorder`, which takes snapshots in another process).
    """

    def __init__(self, probe_x, probe_y, loss, bins=30, range_=None, grad_samples=GRAD_SAMPLES, grad_from="probe"):
        if grad_from not in GRAD_FROM:
            raise ValueError(f"grad_from must be one of {', '.join(GRAD_FROM)}, got {grad_from!r}")
        self.probe_x, self.probe_y, self.loss = probe_x, probe_y, loss
        self.bins, self.range = bins, range_
        n = len(probe_x)
        self.grad_samples = n if grad_samples is None else min(int(grad_samples), n)
        self.grad_from = grad_from
        self.snapshots: list[Snapshot] = []
        self._pending: Snapshot | None = None  # waiting for the next step's gradients
        self._scratch: dict = {}  # buffers reused by every snapshot (see _scratch)

    def close(self) -> None:
        """Every snapshot taken is complete (nothing to wait for here)."""

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> bool:
        """Is a snapshot waiting for the gradient norms of the step that follows it?"""
        return self._pending is not None

    def take_step_grads(self, model) -> None:
        """The pending snapshot's gradient norms from the backward pass training just ran (from the
        snapshot's weights: call it after the backward pass, before clipping and the update)."""
        if self._pending is not None:
            self._pending.data["grad_norm"] = layer_grad_norms(model)
            self._pending = None

    def settle(self, model, x, y) -> None:
        """A pending snapshot that no training step will follow gets its gradient norms from a
        forward and backward pass on ``(x, y)``: a minibatch drawn as the next step would draw it."""
        if self._pending is not None:
            with model.running_stats_kept():
                self._pending.data["grad_norm"] = self._gradient_pass(model, x, y)
            self._pending = None

    def _gradient_pass(self, model, x, y):
        out = model.forward(x, train=True)
        self.loss.forward(out, y)
        model.backward(self.loss.backward(), input_grad=False)
        return layer_grad_norms(model)

    def snapshot(self, model, step: int) -> Snapshot:
        """Measure the model now (:meth:`measure`) and keep the snapshot (pending with ``grad_from="step"``)."""
        return self._keep(Snapshot(step, self.measure(model)))

    def _keep(self, snap: Snapshot) -> Snapshot:
        self.snapshots.append(snap)
        if self.grad_from == "step":
            self._pending = snap
        return snap

    def measure(self, model) -> dict:
        """Every field of a snapshot of ``model`` as it is now (``grad_norm`` NaN with ``grad_from="step"``)."""
        k = self.grad_samples
        with model.running_stats_kept():
            if self.grad_from == "step":  # the histograms' forward pass only: the next step brings the gradients
                model.forward(self.probe_x, train=True)
                gnorm = np.full(len(model.blocks), np.nan)
            elif k >= len(self.probe_x):  # the whole probe: one forward and backward pass
                gnorm = self._gradient_pass(model, self.probe_x, self.probe_y)
            else:  # gradients on the sub-probe first; then the histograms' forward-only pass
                gnorm = self._gradient_pass(model, self.probe_x[:k], self.probe_y[:k])
                model.forward(self.probe_x, train=True)
        acts = [b.output for b in model.blocks]
        pre = [b.preact for b in model.blocks]
        act = model.blocks[0].act.activation
        a_range = tuple(self.range) if self.range else act.range
        d = _act_stats(acts, act, self.bins, a_range, self._scratch)
        d.update(_preact_stats(pre, self.bins, self._scratch))
        d["grad_norm"] = gnorm
        return d

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
