"""Mean-field forward recursion for initlab's pre-activation residual nets (cf. Yang & Schoenholz 2017).

The net (see :mod:`initlab.engine.residual`): a plain stem h₁ = φ(N(z₁)), z₁ = W₁x + b₁, then
L = depth − 1 residual blocks h_{l+1} = h_l + α·(W_l·φ(N(h_l)) + b_l), N the optional norm.

Derivation. In a wide layer the branch output (W·a)_j = Σ_i W_ij a_i, with W drawn independently
of a, is Gaussian with variance σ_w²·mean_i(a_i²) (+ σ_b² for the bias) and independent of h_j.
So every unit of the stream is the stem's value plus an independent Gaussian:

    h_l = s + g_l,   s = φ(√q₁·z) (z ~ N(0, 1); s = φ(z) with a norm),   g_l ~ N(0, V_l),  V₁ = 0,
    V_{l+1} = V_l + α²·(σ_w²·E[φ(u_l)²] + σ_b²),
    u_l = h_l without a norm;  u_l = (h_l − E[s]) / √(Var s + V_l) with one (γ = 1, β = 0 at init).

q grows *additively*: each block adds α²·(σ_w²E[φ(u)²] + σ_b²) to the stream's second moment
E[h_l²] = E[s²] + V_l, never multiplies it. Without a norm and α = 1 the increment is itself ∝ the
stream (ReLU, He: it doubles every block); with α = 1/√L the total growth over L blocks stays
O(1) (→ e^{c} for a per-block factor 1 + c/L); ReZero/SkipInit (α = 0) and Fixup (zero branches)
keep it exactly at the stem's. E[φ(u)²] is a 2-D Gaussian expectation over (z, g): half-line
Gauss–Hermite in z (φ's kink at 0 exactly), full-line Gauss–Hermite in g.

Per hidden layer the prediction is what the recorder measures: the stem's pre-activation and
activation as for a plain layer; a residual block's pre-activation is u_l (what enters φ: the
stream itself without a norm) and its activation φ(u_l). ``stream_q`` is E[h_l²] after each
hidden layer, ``doubling_depth`` the first hidden layer at which it reaches twice the stem's
(the same blocks continued past the net's depth if needed, up to ``DOUBLING_HORIZON`` layers;
None if it never doubles there). Backward, without a norm, the gradient's mean square at the
stream gains χ_l = 1 + α²σ_w²E[φ'(u_l)²] per block (``chi``; ``grad_sq`` is relative to the last
hidden layer's stream); with a norm its backward couples units and these are None.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from initlab.engine.activations import LEAKY_SLOPE, get_activation
from initlab.errors import EngineError
from initlab.theory.meanfield import NORMS, NOT_APPLICABLE, Prediction
from initlab.theory.quadrature import gauss_hermite, normal_rule

DOUBLING_HORIZON = 1000
G_NODES = 120  # full-line Gauss–Hermite nodes for the stream's Gaussian part


class _Stream:
    """Expectations over the stream h = s + g at a given V (s from the stem, g ~ N(0, V))."""

    def __init__(self, act, stem_q: float):
        z, self.wz = normal_rule()
        self.act = act
        with np.errstate(all="ignore"):
            self.s = act.fn(math.sqrt(stem_q) * z)
        self.s_m1 = float(self.s @ self.wz)
        self.s_m2 = float((self.s * self.s) @ self.wz)
        self.g, self.wg = gauss_hermite(G_NODES)

    def branch(self, V: float, norm: Optional[str]) -> dict:
        """Moments of the branch's pre-activation u and activation φ(u) at stream variance V."""
        h = self.s[:, None] + math.sqrt(V) * self.g[None, :]
        var = max(self.s_m2 - self.s_m1 ** 2 + V, 0.0)
        u = (h - self.s_m1) / math.sqrt(var) if norm is not None and var > 0 else h
        w = self.wz[:, None] * self.wg[None, :]
        with np.errstate(all="ignore"):
            a = self.act.fn(u)
            d = self.act.grad(u, a)
        u_m1, u_m2 = float(np.sum(w * u)), float(np.sum(w * u * u))
        return {"q": u_m2, "preact_std": math.sqrt(max(u_m2 - u_m1 ** 2, 0.0)),
                "m1": float(np.sum(w * a)), "m2": float(np.sum(w * a * a)), "d2": float(np.sum(w * d * d))}


def predict_residual(activation: str, sigma_w2: Sequence[float], sigma_b2: float, input_q: float, alpha: float,
                     slope: float = LEAKY_SLOPE, *, norm: Optional[str] = None, branch_sigma_b2: Optional[float] = None,
                     widths: Optional[Sequence[int]] = None) -> Prediction:
    """The prediction for a residual net of ``len(sigma_w2)`` hidden layers (stem + blocks), α per branch.

    ``sigma_w2``: per hidden layer (the stem's first; a Fixup branch has 0). ``branch_sigma_b2``: the
    branches' bias variance (default ``sigma_b2``; Fixup zeroes it). ``widths`` is accepted for
    symmetry with :func:`initlab.theory.meanfield.predict` (all equal in a residual net).
    """
    act = get_activation(activation, slope)
    sw2 = [float(s) for s in sigma_w2]
    depth = len(sw2)
    if depth < 2:
        raise EngineError(f"a residual net has at least 2 hidden layers, got {depth}")
    if norm not in NORMS:
        raise EngineError(f"norm must be one of None, 'batchnorm', 'layernorm', got {norm!r}")
    if not all(math.isfinite(s) and s >= 0 for s in sw2) or not math.isfinite(alpha):
        raise EngineError("sigma_w2 must be finite numbers ≥ 0 and alpha finite")
    bsb2 = sigma_b2 if branch_sigma_b2 is None else float(branch_sigma_b2)
    q1 = 1.0 if norm is not None else sw2[0] * input_q + sigma_b2
    stream = _Stream(act, q1)
    with np.errstate(all="ignore"):
        d = act.grad(math.sqrt(q1) * normal_rule()[0], stream.s)
    stem = {"m1": stream.s_m1, "m2": stream.s_m2, "d2": float((d * d) @ stream.wz)}
    q, pre, mean, std, chi = [q1], [math.sqrt(q1)], [stem["m1"]], [math.sqrt(max(stem["m2"] - stem["m1"] ** 2, 0.0))], [sw2[0] * stem["d2"]]
    V, stream_q, doubling = 0.0, [stream.s_m2], None
    base = stream.s_m2
    a2 = alpha * alpha
    last_sw2 = sw2[-1]
    for layer in range(2, DOUBLING_HORIZON + 1):
        if layer > depth and (doubling is not None or a2 * (last_sw2 + bsb2) == 0):
            break
        s2 = sw2[layer - 1] if layer <= depth else last_sw2
        b = stream.branch(V, norm)
        V += a2 * (s2 * b["m2"] + bsb2)
        if not math.isfinite(V):
            break
        if doubling is None and stream.s_m2 + V >= 2 * base and base > 0:
            doubling = layer
        if layer <= depth:
            q.append(b["q"])
            pre.append(1.0 if norm is not None else b["preact_std"])
            mean.append(b["m1"])
            std.append(math.sqrt(max(b["m2"] - b["m1"] ** 2, 0.0)))
            chi.append(1.0 + a2 * s2 * b["d2"] if norm is None else math.nan)
            stream_q.append(stream.s_m2 + V)
    while len(q) < depth:  # the stream overflowed: nothing finite to say for the rest
        for lst in (q, pre, mean, std, chi, stream_q):
            lst.append(math.inf if lst is not chi else math.nan)
    grad_sq = [1.0] * depth
    for i in range(depth - 2, -1, -1):
        grad_sq[i] = grad_sq[i + 1] * chi[i + 1] if norm is None else math.nan
    note = (f"residual net: stem + {depth - 1} pre-activation blocks with branch scale {alpha:.4g}; the stream's "
            f"second moment grows additively (stream_q); the plain net's fixed point, chi1, phase and depth "
            f"scales do not apply")
    p = Prediction(activation=act.name, sigma_w2=sw2, sigma_b2=float(sigma_b2), input_q=float(input_q), q=q,
                   preact_std=pre, act_mean=mean, act_std=std, chi=chi, grad_sq=grad_sq, q_star=math.nan,
                   fixed_point=NOT_APPLICABLE, chi1=math.nan, phase=NOT_APPLICABLE, xi_q=math.nan, xi_c=math.nan,
                   c_star=math.nan, chi_c=math.nan, applies=True, norm=norm, note=note, slope=slope)
    p.residual = {"branch_scale": alpha, "n_blocks": depth - 1, "stream_q": stream_q, "doubling_depth": doubling,
                  "doubling_horizon": DOUBLING_HORIZON}
    return p
