"""Histograms and moments of a net's per-layer arrays, in one or two passes over each and no copies.

What a snapshot (:mod:`initlab.recorder`) keeps of each layer: ``limits`` (min and max, computed
once and shared), ``histograms`` (equal-width counts over one common range, or each layer's own
when their ranges differ by more than ``OWN_RANGE_RATIO``), ``summaries`` (mean, std and the mean
spread across units, accurate to float64 without a float64 copy). Each agrees with NumPy's own
(``np.histogram``, ``np.mean``/``np.std`` in float64), which the tests check; the work here is
doing it fast enough to record often.
"""
from __future__ import annotations

import math

import numpy as np


def moments(arrays):
    """Mean and std per array, accumulated in float64 without a float64 copy of the data."""
    mean, std = np.empty(len(arrays)), np.empty(len(arrays))
    for i, a in enumerate(arrays):
        flat = a.ravel()
        m = float(flat.sum(dtype=np.float64)) / flat.size
        sq = float(np.dot(flat.astype(np.float64, copy=False), flat)) if flat.dtype == np.float64 else float(
            np.square(flat, dtype=np.float64).sum())
        mean[i], std[i] = m, np.sqrt(max(sq / flat.size - m * m, 0.0))
    return mean, std


def summary(a, spread=True, lim=None):
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
    mean, std = moments([a2])
    return float(mean[0]), float(std[0]), float(a2.std(axis=1, dtype=np.float64).mean()) if spread else np.nan


def limits(arrays):
    """``(min, max)`` of each array as floats (NaN when it holds NaN), computed once per snapshot."""
    return [(float(a.min()), float(a.max())) for a in arrays]


def summaries(arrays, spread=True, lims=None, scratch=None):
    """``(mean, std, unit_std)`` arrays over layers (unit_std NaN unless ``spread``).

    Layers of one shape and float dtype with finite values of moderate size (every hidden layer
    of an MLP, as a rule) take :func:`_summaries_fused`; anything else :func:`summary` of each.
    """
    if lims is not None and _fusable(arrays) and all(_summary_safe(a, lim) for a, lim in zip(arrays, lims)):
        return _summaries_fused(arrays, spread, lims, scratch if scratch is not None else {})
    lims = lims or [None] * len(arrays)
    rows = np.array([summary(a, spread, lim) for a, lim in zip(arrays, lims)], dtype=np.float64).reshape(len(arrays), 3)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def _fusable(arrays):
    """Non-empty 2-D float arrays, all of one shape and dtype."""
    if not arrays:
        return False
    a0 = arrays[0]
    return all(isinstance(a, np.ndarray) and a.ndim == 2 and a.size and a.shape == a0.shape and a.dtype == a0.dtype
               and a.dtype.kind == "f" for a in arrays)


def _summary_safe(a, lim):
    """Finite ``lim`` small enough that row sums of squared shifted values stay finite (as in :func:`summary`)."""
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
    """:func:`summary` of every layer with one row-sum pass per layer and the rest over all layers at once.

    Each layer is shifted by the centre of its range (one scalar subtraction, where :func:`summary`
    shifts every row by its own first entry, a slower broadcast), so no precision is lost to a large
    common offset; row sums of the shifted values are accurate in the data's own precision and the
    totals combine in float64 (law of total variance). Rows whose mean lies far from that centre
    next to their spread (fewer digits in the difference of the sums) are redone exactly in float64,
    shifted by their first entry, as :func:`summary` does: a row whose units are all equal has
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


def fit_range(arrays, lims=None):
    lims = lims or limits(arrays)
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


def histograms(arrays, bins, rng_, lims=None, scratch=None):
    """Counts and edges for every layer, over one common range so panels compare — unless the range is
    fitted to the data and the layers' ranges differ by more than ``OWN_RANGE_RATIO``: then each layer
    gets its own (the figures say so)."""
    fitted = rng_ is None
    if fitted:
        lims = lims or limits(arrays)
    rng_ = rng_ or fit_range(arrays, lims)
    counts = np.zeros((len(arrays), bins), dtype=np.int64)
    edges = np.full((len(arrays), bins + 1), np.nan)
    if rng_ is None:  # non-finite values: nothing sensible to bin
        return counts, edges
    ranges = [rng_] * len(arrays)
    if fitted and len(arrays) > 1:
        own = [fit_range([a], [lim]) for a, lim in zip(arrays, lims)]
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
        counts[i] = bin_counts(a, bins, *ranges[i], inside=inside[i], out=buf)
    return counts, edges


def _wide(lo, hi):
    """Is float32 arithmetic exact enough for bin numbers over [lo, hi] (see :func:`bin_counts`)?"""
    return (hi - lo) > 1e-3 * max(abs(lo), abs(hi))


def bin_counts(a, bins, lo, hi, inside=False, out=None):
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
