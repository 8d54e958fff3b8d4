"""Activation functions: value, derivative, natural range and what "saturated" or "dead" means.

Every activation is stateless: ``fn(z)`` returns φ(z) and ``grad(z, a)`` returns φ'(z), where
``a = fn(z)`` is passed in so that derivatives which are cheap in terms of the output
(sigmoid, tanh) do not recompute it. Arrays keep their dtype: a float32 input gives float32.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from initlab.errors import EngineError, check_number, unknown_name

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An activation φ with its derivative and the facts the recorder needs.

    ``range`` is the natural histogram range (None: fit to data); ``saturated`` and ``dead``
    map an output array to a boolean mask, or are None where the notion does not apply.
    """

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]
    range: Optional[tuple] = None
    saturated: Optional[Callable[[np.ndarray], np.ndarray]] = None
    dead: Optional[Callable[[np.ndarray], np.ndarray]] = None
    fused: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = None  # dout·φ'(z) in one pass

    def backprop(self, dout: np.ndarray, z: np.ndarray, a: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """``dout · φ'(z)``: what the backward pass sends on through φ (``a = φ(z)``), into ``out`` if given
        (``dout`` itself, when the caller owns it: one array fewer, the same values)."""
        if self.fused is not None:
            return self.fused(dout, z, a, out)
        return np.multiply(dout, self.grad(z, a), out=out)

    @property
    def has_dead_units(self) -> bool:
        """Units can output exactly their floor (ReLU's 0): histograms then show a spike there."""
        return self.dead is not None

    def __repr__(self) -> str:
        return f"Activation({self.name})"


def _floating(f):
    """Accept any array-like: float input keeps its dtype, anything else is computed in float64."""

    @functools.wraps(f)
    def wrapper(z, *rest):
        if not (isinstance(z, np.ndarray) and z.dtype.kind == "f"):
            z = np.asarray(z)
            if z.dtype.kind != "f":
                z = z.astype(np.float64)
        return f(z, *rest)

    return wrapper


def _sigmoid(z):
    # With e = exp(-|z|) ≤ 1 (never overflows): 1/(1+e) for z ≥ 0 and e/(1+e) for z < 0, so
    # both tails keep full relative precision (σ(-40) = 4e-18, not 0 as 1 + tanh(z/2) would give).
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1 + e)


def _sigmoid_grad(z, a):
    return a * (1 - a)


def _tanh(z):
    return np.tanh(z)


def _tanh_grad(z, a):
    return 1 - a * a


def _relu(z):
    return np.maximum(z, 0)


def _relu_grad(z, a):
    return (z > 0).astype(z.dtype)


def _relu_backprop(dout, z, a, out=None):
    # dout·[z > 0] without φ' as an array of its own: one pass instead of two (the same values)
    return np.multiply(dout, z > 0, out=out)


def _leaky_relu(z, slope=LEAKY_SLOPE):
    return np.where(z > 0, z, z * z.dtype.type(slope))


def _leaky_relu_grad(z, a, slope=LEAKY_SLOPE):
    return np.where(z > 0, z.dtype.type(1), z.dtype.type(slope))


def _elu(z, alpha=1.0):
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))


def _elu_grad(z, a):
    return np.where(z > 0, z.dtype.type(1), np.exp(np.minimum(z, 0)))


def _selu(z):
    neg = SELU_ALPHA * np.expm1(np.minimum(z, 0))
    return (SELU_LAMBDA * np.where(z > 0, z, neg)).astype(z.dtype, copy=False)


def _selu_grad(z, a):
    neg = SELU_ALPHA * np.exp(np.minimum(z, 0))
    return (SELU_LAMBDA * np.where(z > 0, 1.0, neg)).astype(z.dtype, copy=False)


def _normal_cdf(z):
    """Φ(z) = erfc(-z/√2)/2 element-wise in float64; erfc keeps the left tail's relative precision."""
    x = np.asarray(z, dtype=np.float64) * -math.sqrt(0.5)
    return 0.5 * np.fromiter(map(math.erfc, x.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def _gelu(z):
    # The exact form z·Φ(z), Φ the standard normal CDF (math.erfc: exact to double precision).
    return (z * _normal_cdf(z)).astype(z.dtype, copy=False)


def _gelu_grad(z, a):
    z64 = np.asarray(z, dtype=np.float64)
    pdf = np.exp(-0.5 * z64 * z64) / math.sqrt(2.0 * math.pi)
    return (_normal_cdf(z64) + z64 * pdf).astype(z.dtype, copy=False)


def _softsign(z):
    return z / (1 + np.abs(z))


def _softsign_grad(z, a):
    d = 1 + np.abs(z)
    return 1 / (d * d)


def _linear(z):
    return z


def _linear_grad(z, a):
    return np.ones_like(z)


def _make(name, fn, grad, range=None, saturated=None, dead=None, fused=None) -> Activation:
    return Activation(name, _floating(fn), _floating(grad), range, saturated, dead, fused)


def _outside(lo, hi):
    return lambda a: (a < lo) | (a > hi)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": _make("sigmoid", _sigmoid, _sigmoid_grad, (0.0, 1.0), saturated=_outside(0.1, 0.9)),
    "tanh": _make("tanh", _tanh, _tanh_grad, (-1.0, 1.0), saturated=lambda a: np.abs(a) > 0.9),
    "relu": _make("relu", _relu, _relu_grad, None, dead=lambda a: a == 0, fused=_relu_backprop),
    "leaky_relu": _make("leaky_relu", _leaky_relu, _leaky_relu_grad, None, dead=lambda a: a <= 0),
    "elu": _make("elu", _elu, _elu_grad),
    "selu": _make("selu", _selu, _selu_grad),
    "gelu": _make("gelu", _gelu, _gelu_grad),
    "softsign": _make("softsign", _softsign, _softsign_grad, (-1.0, 1.0), saturated=lambda a: np.abs(a) > 0.9),
    "linear": _make("linear", _linear, _linear_grad),
}


def leaky_relu(slope: float) -> Activation:
    """A leaky ReLU with a chosen negative slope in [0, 1) (the registry's entry uses 0.01)."""
    slope = check_number("leaky_relu slope", slope, 0.0, 1.0, hi_open=True)
    return _make(
        "leaky_relu",
        lambda z: _leaky_relu(z, slope),
        lambda z, a: _leaky_relu_grad(z, a, slope),
        None,
        dead=lambda a: a <= 0,
    )


def get_activation(name: str, slope: float = LEAKY_SLOPE) -> Activation:
    """Look an activation up by name; ``slope`` applies to leaky_relu only."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise EngineError(unknown_name("activation", name, ACTIVATIONS))
    if name == "leaky_relu" and slope != LEAKY_SLOPE:
        return leaky_relu(slope)
    return ACTIVATIONS[name]
