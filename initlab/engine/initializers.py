"""Weight initializers: plain functions of ``(fan_in, fan_out, rng, **options)``.

Each returns a float64 array of shape ``(fan_in, fan_out)`` (initlab's layout: ``y = x @ W``);
the model casts it to its dtype. ``gain`` multiplies the scale a scheme computes; the formulas
follow PyTorch's ``torch.nn.init`` and Keras' initializers (see each docstring).
"""
from __future__ import annotations

import math

import numpy as np

from initlab.errors import EngineError, check_number, check_size, unknown_name

# Standard deviation of a standard normal truncated to [-2, 2] (Keras' constant).
TRUNC_STD_2SIGMA = 0.87962566103423978


GAINS = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "selu": 3.0 / 4.0}


def calculate_gain(activation: str, slope: float = 0.01) -> float:
    """PyTorch's ``calculate_gain``: the factor that keeps the forward variance for φ.

    leaky_relu: √(2/(1+slope²)). elu, gelu and softsign have no PyTorch entry; they are
    near-linear at the origin and get 1.
    """
    if activation == "leaky_relu":
        slope = check_number("leaky_relu slope", slope, lo_open=True, hi_open=True)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if activation in ("elu", "gelu", "softsign"):
        return 1.0
    if not isinstance(activation, str) or activation not in GAINS:
        raise EngineError(unknown_name("activation", activation, [*GAINS, "leaky_relu", "elu", "gelu", "softsign"]))
    return GAINS[activation]


def _check(fan_in, fan_out, gain, rng):
    """The fans as ints and the gain as a float, or an EngineError naming the bad argument."""
    if not isinstance(rng, np.random.Generator):
        raise EngineError(f"initializers need a numpy.random.Generator, got {type(rng).__name__}")
    return check_size("fan_in", fan_in), check_size("fan_out", fan_out), check_number("gain", gain, lo_open=True, hi_open=True)


def _std(std):
    return check_number("std", std, 0.0, float("inf"), hi_open=True)


def _fan(fan_in, fan_out, mode):
    if mode not in ("fan_in", "fan_out"):
        raise EngineError(f"unknown fan mode '{mode}' (choose fan_in or fan_out)")
    return fan_in if mode == "fan_in" else fan_out


def _normal(rng, shape, std):
    return rng.standard_normal(shape) * std


def _uniform(rng, shape, bound):
    return rng.uniform(-bound, bound, size=shape)


def zeros(fan_in, fan_out, rng, gain=1.0):
    """All zeros: every unit of a layer is the same unit, forever."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return np.zeros((fan_in, fan_out))


def constant(fan_in, fan_out, rng, value=0.01, gain=1.0):
    """Every weight equal to ``value·gain``: symmetric, like zeros."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return np.full((fan_in, fan_out), check_number("value", value, lo_open=True, hi_open=True) * gain)


def normal(fan_in, fan_out, rng, std=0.01, gain=1.0):
    """N(0, (std·gain)²): the textbook's ``randn(fan_in, fan_out) * std``."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _normal(rng, (fan_in, fan_out), _std(std) * gain)


def uniform(fan_in, fan_out, rng, std=None, gain=1.0):
    """U(±b): b = 1/√fan_in by default (PyTorch ``nn.Linear``), or b = std·√3 when std is given."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    bound = 1.0 / math.sqrt(fan_in) if std is None else _std(std) * math.sqrt(3.0)
    return _uniform(rng, (fan_in, fan_out), bound * gain)


def truncated_normal(fan_in, fan_out, rng, std=0.01, gain=1.0):
    """Normal cut at ±2σ and rescaled so that the final std is exactly ``std·gain``: the rule of
    Keras's ``VarianceScaling(distribution="truncated_normal")``, not of Keras's ``TruncatedNormal``
    (which cuts and does not rescale).

    A draw of N(0,1) outside [-2, 2] is redrawn, then every value is divided by
    0.8796..., the std of the truncated unit normal, so values lie within ±2.27·std.
    PyTorch's ``trunc_normal_(std=s, a=-2, b=2)`` differs: its cutoffs are *absolute*
    (±2, not ±2σ) and it does not rescale, so its final std is below ``s`` for large ``s``.
    """
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return truncated_unit(rng, (fan_in, fan_out)) * (_std(std) * gain / TRUNC_STD_2SIGMA)


def truncated_unit(rng, shape):
    """Standard normal samples redrawn until they fall inside [-2, 2]."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out


def xavier_normal(fan_in, fan_out, rng, gain=1.0):
    """Glorot normal: N(0, gain²·2/(fan_in+fan_out)), not truncated (PyTorch)."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _normal(rng, (fan_in, fan_out), gain * math.sqrt(2.0 / (fan_in + fan_out)))


def xavier_uniform(fan_in, fan_out, rng, gain=1.0):
    """Glorot uniform: U(±gain·√(6/(fan_in+fan_out)))."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _uniform(rng, (fan_in, fan_out), gain * math.sqrt(6.0 / (fan_in + fan_out)))


def he_normal(fan_in, fan_out, rng, gain=1.0, mode="fan_in"):
    """Kaiming normal: N(0, 2·gain²/fan), fan = fan_in (default) or fan_out; not truncated."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _normal(rng, (fan_in, fan_out), gain * math.sqrt(2.0 / _fan(fan_in, fan_out, mode)))


def he_uniform(fan_in, fan_out, rng, gain=1.0, mode="fan_in"):
    """Kaiming uniform: U(±gain·√(6/fan)), i.e. bound √2·√(3/fan) for ReLU."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _uniform(rng, (fan_in, fan_out), gain * math.sqrt(6.0 / _fan(fan_in, fan_out, mode)))


def lecun_normal(fan_in, fan_out, rng, gain=1.0):
    """LeCun normal: std gain/√fan_in — the textbook's "Xavier" (``randn / sqrt(n)``).

    Keras truncates its lecun_normal; initlab does not, to match the textbook exactly.
    """
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _normal(rng, (fan_in, fan_out), gain / math.sqrt(fan_in))


def lecun_uniform(fan_in, fan_out, rng, gain=1.0):
    """LeCun uniform: U(±gain·√(3/fan_in)), std 1/√fan_in."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return _uniform(rng, (fan_in, fan_out), gain * math.sqrt(3.0 / fan_in))


def orthogonal(fan_in, fan_out, rng, gain=1.0):
    """A (semi-)orthogonal matrix × gain: QR of a Gaussian, columns' signs fixed by diag(R).

    Square: WᵀW = I. Tall (fan_in > fan_out): orthonormal columns, WᵀW = I.
    Wide (fan_in < fan_out): orthonormal rows, WWᵀ = I.
    """
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    q *= np.sign(np.diag(r))
    w = q if fan_in >= fan_out else q.T
    return np.ascontiguousarray(w) * gain


def identity(fan_in, fan_out, rng, gain=1.0):
    """The (partial, for rectangular shapes) identity × gain, like PyTorch's ``eye_``."""
    fan_in, fan_out, gain = _check(fan_in, fan_out, gain, rng)
    return np.eye(fan_in, fan_out) * gain


INITIALIZERS = {
    "zeros": zeros,
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "truncated_normal": truncated_normal,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal,
    "identity": identity,
}

ALIASES = {
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
}

# Schemes whose scale is the user's ``std``; the others compute theirs (use ``gain``).
STD_SCHEMES = ("normal", "uniform", "truncated_normal")


def canonical(name: str) -> str:
    """The registry name for ``name``, resolving aliases."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in INITIALIZERS:
        raise EngineError(unknown_name("init scheme", name, list(INITIALIZERS) + list(ALIASES)))
    return name


def get_initializer(name: str):
    return INITIALIZERS[canonical(name)]
