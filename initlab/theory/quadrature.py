"""Gaussian quadrature rules for expectations over z ~ N(0, 1) (used by :mod:`initlab.theory.meanfield`).

:func:`gauss_hermite` is the plain full-line rule; :func:`normal_rule` is Gauss–Hermite on each
half-line, exact for the piecewise-polynomial activations and spectrally accurate for the rest;
:func:`polar_radial_rule` integrates the radius of a 2-D standard normal; :func:`expect` applies
:func:`normal_rule` at a variance q.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from initlab.errors import EngineError

GH_NODES = 100  # nodes of the 1-D rules (normal_rule: 50 per half-line)


@lru_cache(maxsize=None)
def gauss_hermite(n: int = GH_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Standard Gauss–Hermite: nodes ``z`` and weights ``w`` (shape ``(n,)``), Σ w·f(z) ≈ E[f(z)], z ~ N(0, 1).

    ``numpy.polynomial.hermite_e.hermegauss`` with the weights divided by √(2π), so Σ w = 1.
    Exact for polynomials of degree < 2n; slow (algebraic) for a φ with a kink, see :func:`normal_rule`.
    """
    if int(n) != n or n < 1:
        raise EngineError(f"Gauss–Hermite needs a positive number of nodes, got {n}")
    z, w = np.polynomial.hermite_e.hermegauss(int(n))
    return _frozen(z), _frozen(w / math.sqrt(2.0 * math.pi))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def _gauss_rule(weight, n: int, upper: float, base: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The n-point Gauss rule of a weight function on [0, ∞) (negligible beyond ``upper``).

    Lanczos on a fine Gauss–Legendre discretization of the weight (discretized Stieltjes, with
    full reorthogonalization), then Golub–Welsch: the nodes are the Jacobi matrix's eigenvalues.
    """
    x, lw = np.polynomial.legendre.leggauss(base)
    x = 0.5 * upper * (x + 1.0)
    lam = 0.5 * upper * lw * weight(x)
    mu0 = lam.sum()
    basis = np.zeros((n + 1, base))
    alpha, beta = np.zeros(n), np.zeros(n)
    basis[0] = np.sqrt(lam / mu0)
    for k in range(n):
        v = x * basis[k]
        alpha[k] = basis[k] @ v
        v -= alpha[k] * basis[k] + (beta[k - 1] * basis[k - 1] if k else 0.0)
        v -= basis[: k + 1].T @ (basis[: k + 1] @ v)
        beta[k] = np.linalg.norm(v)
        basis[k + 1] = v / beta[k]
    nodes, vecs = np.linalg.eigh(np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1))
    w = vecs[0] ** 2
    return nodes, w / w.sum()


@lru_cache(maxsize=None)
def normal_rule(n: int = GH_NODES // 2) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (2n of each) for E[f(z)], z ~ N(0, 1): Gauss–Hermite on each half-line.

    The half-range Gauss–Hermite rule (weight e^{−z²/2} on [0, ∞)) mirrored to (−∞, 0]. Every
    registered φ is smooth except at 0, so each half is integrated at spectral accuracy: exact
    for ReLU and leaky ReLU (polynomial pieces), to rounding for ELU/SELU, where the full-line
    rule errs by ~1e-3 (SELU's mean) because of the kink.
    """
    if int(n) != n or n < 1:
        raise EngineError(f"the normal rule needs a positive number of nodes, got {n}")
    z, w = _gauss_rule(lambda x: np.exp(-0.5 * x * x), int(n), 20.0)
    return _frozen(np.concatenate([-z[::-1], z])), _frozen(0.5 * np.concatenate([w[::-1], w]))


@lru_cache(maxsize=None)
def polar_radial_rule(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the radius ρ of a standard 2-D normal: weight ρ·e^{−ρ²/2} on [0, ∞)."""
    r, w = _gauss_rule(lambda x: x * np.exp(-0.5 * x * x), n, 20.0)
    return _frozen(r), _frozen(w)


def expect(f, q, n: int = GH_NODES // 2):
    """E_z[f(√q·z)] for z ~ N(0, 1) (:func:`normal_rule`); ``f`` maps arrays to arrays, ``q`` ≥ 0 scalar or array."""
    z, w = normal_rule(n)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(all="ignore"):
        return f(np.sqrt(q)[..., None] * z) @ w
