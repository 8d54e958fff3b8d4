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

Calling it runs forward and backward passes: the model's forward caches change (as with any
forward pass); its gradient buffers are restored afterwards.
"""
from __future__ import annotations

import math

import numpy as np

from initlab.engine.layers import BatchNorm
from initlab.errors import EngineError
from initlab.numbers import finite_or_none

OUTPUTS = ("hidden", "logits")


def _layers(model, output: str) -> list:
    if output not in OUTPUTS:
        raise EngineError(f"jacobian output must be 'hidden' or 'logits', got {output!r}")
    layers = [layer for block in model.blocks for layer in block.layers()]
    return layers + [model.head] if output == "logits" else layers


def _backward(layer, dout):
    if isinstance(layer, BatchNorm):
        # Evaluation mode: y = γ·(x − running_mean)/√(running_var + eps) + β, a per-feature scale.
        # (BatchNorm.backward only follows a training-mode forward pass.)
        return dout * (layer.gamma.data / np.sqrt(layer.running_var + layer.eps))
    return layer.backward(dout)


def jacobian(model, x_one: np.ndarray, output: str = "hidden", chunk: int = 512) -> np.ndarray:
    """The Jacobian ``(n_in, n_out_of_stack)`` at one input ``x_one`` (shape ``(n_in,)``), in float64."""
    layers = _layers(model, output)
    x_one = np.asarray(x_one)
    if x_one.shape != (model.n_in,):
        raise EngineError(f"jacobian expects one input of shape ({model.n_in},), got {x_one.shape}")
    if not layers:
        return np.eye(model.n_in)
    m = layers[-1].fan_out if hasattr(layers[-1], "fan_out") else model.blocks[-1].linear.fan_out
    eye = np.eye(m, dtype=model.dtype)
    jt = np.empty((m, model.n_in))
    for start in range(0, m, chunk):
        rows = eye[start:start + chunk]
        h = np.repeat(x_one.astype(model.dtype)[None, :], len(rows), axis=0)
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
        out = [np.linalg.svd(jacobian(model, x[i], output, int(chunk)), compute_uv=False) for i in range(int(n_inputs))]
    finally:
        for p, g in zip(params, saved):
            p.grad[...] = g
    return np.stack(out)




def jacobian_summary(singular_values: np.ndarray) -> dict:
    """Strict-JSON statistics of a spectrum (all inputs pooled).

    ``n_inputs``, ``n_values``, ``mean_sq`` (mean of s², the quantity mean-field theory predicts:
    Π of each layer's χ), ``max``, ``min``, ``median``, ``max_over_min`` (None when min is 0),
    ``log10_spread`` = log10(max/min), ``log10_spread_90`` = log10(p95/p5) (robust: for deep
    Gaussian nets the minimum sits at rounding level, ~1e-16·max in float64), ``frac_within_10pct``
    (share of values in [0.9, 1.1]: 1 for a perfectly isometric network).
    """
    s = np.asarray(singular_values, dtype=np.float64)
    rows = s.shape[0] if s.ndim == 2 else 1
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
    }
