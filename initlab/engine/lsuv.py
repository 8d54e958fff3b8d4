"""Layer-sequential unit-variance initialization (Mishkin & Matas 2015, "All you need is a good init").

Orthonormal start, then for each hidden layer, first to last: run the batch forward to that
layer and divide its weights by √Var of the layer's *Linear output* (before normalization and
activation, as in the paper), until |Var − 1| < ``tol`` or ``max_passes`` rescalings. Var is
the variance of all the output's entries together (one number per layer, as in the paper).
Biases are left alone. Without biases one rescaling is exact (the output is linear in W), so a
layer takes 0 passes (already within tolerance) or 1; biases can make it take more, and a bias
variance ≥ 1 − tol makes the target unreachable (the layer then stops after ``max_passes``).

Only the layers up to the current one run, in training mode; BatchNorm's running averages are
restored afterwards, so LSUV never changes them. The output layer is rescaled too only with
``include_head=True``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from initlab.engine.initializers import orthogonal
from initlab.errors import EngineError


def _variance(y: np.ndarray) -> float:
    return float(np.var(y, dtype=np.float64))


def _scale_to_unit(linear, h, tol, max_passes, where) -> tuple[int, np.ndarray]:
    y = linear.forward(h, True)
    var = _variance(y)
    passes = 0
    while abs(var - 1.0) >= tol and passes < max_passes:
        if not (var > 0 and math.isfinite(var)):
            raise EngineError(f"lsuv: {where} output has variance {var} on the batch; cannot rescale it to 1")
        linear.W.data *= linear.W.data.dtype.type(1.0 / math.sqrt(var))
        y = linear.forward(h, True)
        var = _variance(y)
        passes += 1
    return passes, y


def lsuv_init(model, x_batch: np.ndarray, tol: float = 0.1, max_passes: int = 10, rng=None,
              include_head: bool = False) -> list[int]:
    """LSUV-initialize ``model`` in place on ``x_batch`` ``(n, n_in)``; returns the passes per hidden layer.

    ``rng`` (a ``numpy.random.Generator``): redraw every Linear's weights as orthonormal first.
    Without it the current weights are the start (e.g. a model built with ``orthogonal``).
    """
    if not isinstance(x_batch, np.ndarray) or x_batch.ndim != 2 or x_batch.shape[1] != model.n_in:
        raise EngineError(f"lsuv expects a batch of shape (n, {model.n_in}), got {getattr(x_batch, 'shape', type(x_batch).__name__)}")
    if len(x_batch) < 2:
        raise EngineError(f"lsuv needs a batch of at least 2 examples, got {len(x_batch)}")
    if isinstance(tol, bool) or not (isinstance(tol, (int, float, np.floating)) and 0 < tol < 1):
        raise EngineError(f"lsuv tolerance must be in (0, 1), got {tol!r}")
    if isinstance(max_passes, bool) or not isinstance(max_passes, (int, np.integer)) or max_passes < 1:
        raise EngineError(f"lsuv max_passes must be a positive integer, got {max_passes!r}")
    if any(getattr(b, "residual", False) for b in model.blocks):
        # Its layer-by-layer forward pass below is a plain net's; a residual block's output is not φ(Wx).
        raise EngineError("lsuv is defined for plain nets, not residual ones (use fixup, skipinit or a branch_scale)")
    linears = [b.linear for b in model.blocks] + [model.head]
    if rng is not None:
        for lin in linears:
            lin.W.data[...] = orthogonal(lin.fan_in, lin.fan_out, rng)
    with model.running_stats_kept():
        h = x_batch.astype(model.dtype, copy=False)
        passes = []
        for i, block in enumerate(model.blocks):
            n_passes, h = _scale_to_unit(block.linear, h, tol, int(max_passes), f"layer {i + 1}")
            passes.append(n_passes)
            if block.norm is not None:
                h = block.norm.forward(h, True)
            h = block.act.forward(h, True)
        if include_head:
            _scale_to_unit(model.head, h, tol, int(max_passes), "output layer")
    return passes


@dataclass(frozen=True)
class DataDependentInit:
    """An init scheme that needs data: weights are first drawn by the data-free scheme ``start``,
    then ``apply(model, batch, rng=..., tol=...)`` adjusts them on a batch; what it returns is
    recorded in metrics.json under ``metric``."""

    start: str
    apply: Callable
    metric: str


# The data-dependent init schemes, by name (the data-free ones are in initializers.INITIALIZERS).
DATA_DEPENDENT = {
    "lsuv": DataDependentInit(start="orthogonal", apply=lsuv_init, metric="lsuv_passes"),
}
