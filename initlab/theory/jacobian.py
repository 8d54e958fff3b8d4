"""Singular values of the input–output Jacobian at initialization (Pennington et al. 2017).

The Jacobian is that of the *hidden stack* by default: d(last hidden activation)/d(input),
J = W₁D₁W₂D₂…W_LD_L in initlab's row layout (``x @ W``), shape ``(n_in, width_L)`` for one input;
``output="logits"`` appends the output Linear. It is computed by the engine's own backward pass:
a batch of identical copies of one input goes forward in evaluation mode (so examples do not
interact and BatchNorm uses its running statistics — at initialization 0 and 1, i.e. almost the
identity), and the identity matrix goes backward as ``dout``, one row per output unit; the rows
that come back are the rows of Jᵀ. Outputs are processed in chunks of ``chunk`` rows, so memory
stays at ``chunk × width`` per layer, and nothing but these backward products is materialized.
Cost per input: about 3·Σ_l fan_in_l·fan_out_l·width_L multiply-adds (forward of the copies, the
backward product and the weight gradient the engine's Linear computes): negligible at width 100,
about 3·10¹⁰ for ten layers of width 1000 (seconds per input).

The arithmetic is always float64, whatever the model's dtype: the layers are copied with their
parameters cast to float64 (exactly: every float32 is a float64), so a float32 model's spectrum is
that of its weights, not of float32 rounding (which puts a ReLU net's dead directions at ~1e-7
instead of 0 and a saturated sigmoid net's small singular values at the rounding floor).

Numerical rank: a singular value counts as non-zero when it exceeds ``RANK_RTOL`` times the largest
singular value of the same input's Jacobian. ``RANK_RTOL = 1e-12`` is about max(M, N)·eps₆₄ for the
matrices initlab computes (a few thousand by a few hundred), the convention of
``numpy.linalg.matrix_rank``: below it a value is indistinguishable from rounding of the largest.
A ReLU unit that is dead at the input makes an exactly zero column; those directions are counted,
not measured, and spreads are taken over the non-zero values only.

Calling it leaves the model as it was: the passes run on float64 copies of its layers.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from initlab.engine.layers import BatchNorm, Linear, Parameter
from initlab.errors import EngineError
from initlab.numbers import finite_or_none

OUTPUTS = ("hidden", "logits")
_SUBLAYERS = ("linear", "norm", "act")  # the layers a residual block holds (engine/residual.py)
RANK_RTOL = 1e-12  # relative to the largest singular value of the same input (see the module docstring)


def _float64(layer):
    """A shallow copy of ``layer`` whose float arrays and parameters are float64 copies (the original,
    its caches and gradient buffers are not touched)."""
    out = copy.copy(layer)
    for name, value in vars(layer).items():
        if name in _SUBLAYERS and value is not None:
            setattr(out, name, _float64(value))  # a residual block's branch: its caches stay its own too
        elif isinstance(value, Parameter):
            setattr(out, name, Parameter(value.name, value.data.astype(np.float64)))
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            setattr(out, name, value.astype(np.float64))
    return out


def _layers(model, output: str) -> list:
    if output not in OUTPUTS:
        raise EngineError(f"jacobian output must be 'hidden' or 'logits', got {output!r}")
    layers = [layer for block in model.blocks for layer in block.layers()]
    layers = layers + [model.head] if output == "logits" else layers
    return [_float64(layer) for layer in layers]


def _backward(layer, dout):
    if isinstance(layer, BatchNorm):
        # Evaluation mode: y = γ·(x − running_mean)/√(running_var + eps) + β, a per-feature scale.
        # (BatchNorm.backward only follows a training-mode forward pass.)
        return dout * (layer.gamma.data / np.sqrt(layer.running_var + layer.eps))
    if isinstance(layer, Linear):
        return layer.input_grad(dout)  # the same product backward makes, without the weight gradient
    return layer.backward(dout)


def jacobian(model, x_one: np.ndarray, output: str = "hidden", chunk: int = 512, layers=None) -> np.ndarray:
    """The Jacobian ``(n_in, n_out_of_stack)`` at one input ``x_one`` (shape ``(n_in,)``), in float64.
    ``layers``: the model's float64 layers for ``output`` when the caller has made them (``_layers``)."""
    layers = _layers(model, output) if layers is None else layers
    x_one = np.asarray(x_one)
    if x_one.shape != (model.n_in,):
        raise EngineError(f"jacobian expects one input of shape ({model.n_in},), got {x_one.shape}")
    if not layers:
        return np.eye(model.n_in)
    m = layers[-1].fan_out if hasattr(layers[-1], "fan_out") else model.blocks[-1].linear.fan_out
    eye = np.eye(m)
    jt = np.empty((m, model.n_in))
    for start in range(0, m, chunk):
        rows = eye[start:start + chunk]
        h = np.repeat(x_one.astype(np.float64)[None, :], len(rows), axis=0)
        for layer in layers:
            h = layer.forward(h, False)
        d = rows
        for layer in reversed(layers):
            d = _backward(layer, d)
        jt[start:start + len(rows)] = d
    return jt.T


def jacobian_singular_values(model, x: np.ndarray, n_inputs: int = 4, output: str = "hidden",
                             chunk: int = 512) -> np.ndarray:
    """Singular values of the Jacobian at the first ``n_inputs`` rows of ``x``.

    Returns float64 of shape ``(n_inputs, min(n_in, n_out_of_stack))``, each row in descending order.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != model.n_in:
        raise EngineError(f"jacobian expects inputs of shape (n, {model.n_in}), got {getattr(x, 'shape', type(x).__name__)}")
    if int(n_inputs) != n_inputs or not 1 <= n_inputs <= len(x):
        raise EngineError(f"n_inputs must be between 1 and the {len(x)} inputs given, got {n_inputs}")
    if int(chunk) != chunk or chunk < 1:
        raise EngineError(f"chunk must be a positive integer, got {chunk}")
    params = model.params()
    saved = [p.grad.copy() for p in params]
    try:
        layers = _layers(model, output)  # once: the copies' forward caches are overwritten input by input
        out = [np.linalg.svd(jacobian(model, x[i], output, int(chunk), layers), compute_uv=False)
               for i in range(int(n_inputs))]
    finally:
        for p, g in zip(params, saved):
            p.grad[...] = g
    return np.stack(out)


def nonzero_mask(singular_values: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """True where a singular value is numerically non-zero: above ``rtol`` × the largest of its row
    (one row per input; a 1-D array is one input)."""
    s = np.asarray(singular_values, dtype=np.float64)
    s2 = s.reshape(1, -1) if s.ndim < 2 else s
    top = s2.max(axis=1, keepdims=True) if s2.size else np.zeros((len(s2), 1))
    return ((s2 > rtol * top) & (s2 > 0)).reshape(s.shape)


def jacobian_summary(singular_values: np.ndarray, rtol: float = RANK_RTOL) -> dict:
    """Strict-JSON statistics of a spectrum (all inputs pooled).

    ``n_inputs``, ``n_values``, ``mean_sq`` (mean of s², the quantity mean-field theory predicts:
    Π of each layer's χ), ``max``, ``min``, ``median``, ``max_over_min`` (None when min is 0),
    ``log10_spread`` = log10(max/min), ``log10_spread_90`` = log10(p95/p5), ``frac_within_10pct``
    (share of values in [0.9, 1.1]: 1 for a perfectly isometric network).

    The rank block (see the module docstring): ``rank_rtol`` (the relative tolerance),
    ``n_per_input`` (singular values per input, the full rank), ``numerical_rank`` and
    ``numerical_rank_max`` (least and greatest over the inputs), ``n_zero`` (pooled values at or
    below the tolerance: dead or numerically lost directions), ``n_exact_zero`` (values that are
    exactly 0), and over the non-zero values only: ``nonzero_min``, ``nonzero_median``,
    ``log10_spread_nonzero`` = log10(max/min) and ``log10_spread_90_nonzero`` = log10(p95/p5).
    Spreads over all values, above, include the zeros; the non-zero ones measure the network.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    rows = s.shape[0] if s.ndim == 2 else 1
    if s.size and s.ndim <= 2:
        ok = nonzero_mask(s, rtol)
        ranks = ok.reshape(rows, -1).sum(axis=1)
        block = _rank_block(s.ravel(), ok.ravel(), ranks, s.size // rows, rtol)
    else:
        block = {}
    s = s.ravel()
    if s.size == 0:
        raise EngineError("jacobian_summary needs at least one singular value")
    hi, lo = float(s.max()), float(s.min())
    p5, p95 = (float(v) for v in np.percentile(s, [5, 95]))

    def log_ratio(a, b):
        return math.log10(a / b) if b > 0 and math.isfinite(a / b) else math.inf

    ratio = hi / lo if lo > 0 else math.inf
    return {
        "n_inputs": int(rows),
        "n_values": int(s.size),
        "mean_sq": finite_or_none(np.mean(s * s)),
        "max": finite_or_none(hi),
        "min": finite_or_none(lo),
        "median": finite_or_none(np.median(s)),
        "max_over_min": finite_or_none(ratio),
        "log10_spread": finite_or_none(log_ratio(hi, lo)),
        "log10_spread_90": finite_or_none(log_ratio(p95, p5)),
        "frac_within_10pct": float(np.mean((s >= 0.9) & (s <= 1.1))),
        **block,
    }


def _rank_block(s, ok, ranks, per_input, rtol) -> dict:
    nz = s[ok]
    out = {
        "rank_rtol": float(rtol),
        "n_per_input": int(per_input),
        "numerical_rank": int(ranks.min()),
        "numerical_rank_max": int(ranks.max()),
        "n_zero": int(s.size - nz.size),
        "n_exact_zero": int(np.count_nonzero(s == 0.0)),
        "nonzero_min": None,
        "nonzero_median": None,
        "log10_spread_nonzero": None,
        "log10_spread_90_nonzero": None,
    }
    if nz.size:
        p5, p95 = np.percentile(nz, [5, 95])
        out.update(nonzero_min=finite_or_none(nz.min()), nonzero_median=finite_or_none(np.median(nz)),
                   log10_spread_nonzero=finite_or_none(math.log10(nz.max() / nz.min())),
                   log10_spread_90_nonzero=finite_or_none(math.log10(p95 / p5)))
    return out
