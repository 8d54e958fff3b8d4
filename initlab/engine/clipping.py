"""Gradient clipping with PyTorch's semantics, in place on the parameters' ``grad`` buffers."""
from __future__ import annotations

import math

import numpy as np

from initlab.errors import check_number


def _sq_norm(g: np.ndarray) -> float:
    """Σ g² of one gradient; recomputed in float64 when float32 would overflow or underflow."""
    s = float(np.vdot(g, g))
    if not 1e-30 < s < 1e30 and g.dtype != np.float64:
        g = g.astype(np.float64)
        s = float(np.vdot(g, g))
    return s


def grad_norm(params) -> float:
    """The global L2 norm of every gradient together (finite even where Σ g² overflows float32)."""
    return math.sqrt(sum(_sq_norm(p.grad) for p in params))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients by ``min(1, max_norm / (total + 1e-6))``; return the norm *before* clipping.

    As in PyTorch, a non-finite total makes the gradients non-finite too (NaN in, NaN out).
    """
    max_norm = check_number("clip_norm", max_norm, 0.0)
    total = grad_norm(params)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # NaN included
        for p in params:
            p.grad *= coef
    return total


def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]``."""
    clip_value = check_number("clip_value", clip_value, 0.0)
    for p in params:
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)
