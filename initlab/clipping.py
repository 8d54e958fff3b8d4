"""Gradient clipping with PyTorch's semantics, in place on the parameters' ``grad`` buffers."""
from __future__ import annotations

import math

import numpy as np


def grad_norm(params) -> float:
    """The global L2 norm of every gradient together."""
    return math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients by ``min(1, max_norm / (total + 1e-6))``; return the norm *before* clipping."""
    total = grad_norm(params)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]``."""
    for p in params:
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)
