"""Mean-field theory of a wide random MLP at initialization (Poole et al. 2016; Schoenholz et al. 2017).

Weights have variance σ_w²/fan_in, biases variance σ_b². In a wide layer every pre-activation is
Gaussian over the ensemble, with second moment q given by the *length map*

    q¹ = σ_w²·mean(x²) + σ_b²,        q^l = σ_w²·E_z[φ(√q^{l−1} z)²] + σ_b²,   z ~ N(0, 1).

The map's fixed point q* sets the per-layer gradient gain χ₁ = σ_w²·E[φ'(√q* z)²]:
χ₁ < 1 ordered (backpropagated gradients shrink as χ₁^depth), χ₁ > 1 chaotic (they grow),
|χ₁ − 1| < ``CRITICAL_TOL`` critical, the edge of chaos.

How things are computed (all float64):

- Every Gaussian expectation is Gauss–Hermite-type quadrature over the registry's own ``fn``
  and ``grad`` (closed forms such as ReLU's appear only in the tests, as checks). Every
  registered φ is smooth except at 0, so the rule is Gauss–Hermite on each half-line
  (:func:`normal_rule`, 2 × 50 nodes): ReLU-type pieces are integrated exactly and ELU/SELU to
  rounding, where the plain full-line rule (:func:`gauss_hermite`) errs by up to ~1e-3. The
  two-input expectations use polar coordinates cut at the kink rays (:func:`correlation_map`).
- φ'' is never needed: the depth scale ξ_q uses χ₁ + σ_w²E[φ''φ], the slope of the length map,
  which Gaussian integration by parts (Stein's lemma) turns into σ_w²·E[z φ(√q z) φ'(√q z)]/√q.
- The fixed point is found by iterating the length map from the last layer's q (the map is
  increasing, so the iterates move monotonically); when that is slow (near-critical, or q
  drifting to 0 or ∞) the first root in the direction of motion is bracketed and bisected in
  log q. q* may be 0 (``fixed_point == "zero"``: e.g. tanh with σ_w² ≤ 1, σ_b² = 0, or ReLU with
  σ_w² < 2, σ_b² = 0) or ∞ (``"infinite"``: ReLU with σ_w² > 2 grows geometrically); χ₁ and the
  depth scales are then the limits, evaluated at q = ``Q_MIN`` or ``Q_MAX``. For ReLU χ₁ = σ_w²/2
  whatever q, so the phase is well defined even though q* is not finite.
- The correlation map of two inputs is normalized by the length map,
  c' = (σ_w²E[φ(u₁)φ(u₂)] + σ_b²) / (σ_w²E[φ(u₁)²] + σ_b²) (polar rule); at a finite
  fixed point this is the textbook map. c* = 1 when the map's slope at c = 1 is ≤ 1 (+1e-6);
  otherwise c* < 1 is the largest root of c' = c below 1 (scan in 1 − c, then bisection: the
  same point that iterating the map from c just below 1 converges to, the map being increasing).
- Depth scales: ξ = −1/log(slope) for a slope in (0, 1): ξ_q from the length map's slope at q*,
  ξ_c from the correlation map's slope χ_c at c*. A slope ≥ 1 (critical, or q not converging)
  gives ξ = ∞ (``None`` in JSON). For ReLU with σ_b² = 0 the normalized correlation map has slope
  exactly 1 at c* = 1, so ξ_c = ∞ on both sides of σ_w² = 2: correlations converge polynomially.

Batch norm and layer norm: the normalization resets every pre-activation to zero mean and unit
variance (γ = 1, β = 0 at initialization; batch statistics, i.e. a training-mode forward pass),
so the prediction is q = 1 at every layer whatever σ_w², σ_b² and the input, and the activation
statistics are those of φ(N(0, 1)). The length map, χ₁, the phase and the depth scales do not
apply (``applies`` is False, ``phase`` is "n/a"): the normalization's backward pass couples the
examples of a batch and changes the gradient dynamics. (In evaluation mode at initialization the
running statistics are 0 and 1, BN is then almost the identity and the plain theory applies.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from initlab.engine.activations import LEAKY_SLOPE, Activation, get_activation
from initlab.errors import EngineError
from initlab.numbers import finite_or_none
from initlab.theory.quadrature import expect, normal_rule, polar_radial_rule

GH_NODES_2D = 96  # angles for the correlation map (× 40 radii)
CRITICAL_TOL = 1e-3  # |χ₁ − 1| below this is "critical"
Q_MIN, Q_MAX = 1e-12, 1e20  # q below / above these counts as 0 / ∞ (below 1e-12 rounding hides tanh's 2q² curvature)
_ITER_MAX = 200
_RTOL = 1e-13
_CSTAR_SLOPE_TOL = 1e-6  # correlation-map slope at c = 1 up to 1 + this still means c* = 1
_SLOPE_ONE_TOL = 1e-9  # a map slope within this of 1 counts as 1: depth scales beyond 1e9 layers are ∞

ORDERED, CRITICAL, CHAOTIC, NOT_APPLICABLE = "ordered", "critical", "chaotic", "n/a"
NORMS = (None, "batchnorm", "layernorm")


def _act(activation: Union[str, Activation], slope: float) -> Activation:
    return activation if isinstance(activation, Activation) else get_activation(activation, slope)


def _dphi(act: Activation):
    return lambda x: act.grad(x, act.fn(x))


def _moments(act: Activation, q: float) -> dict:
    """E[φ], E[φ²], E[φ'²] and the length map's slope factor E[zφφ']/√q at pre-activation variance q."""
    z, w = normal_rule()
    s = math.sqrt(q)
    with np.errstate(all="ignore"):
        x = s * z
        a = act.fn(x)
        d = act.grad(x, a)
        return {
            "m1": float(a @ w),
            "m2": float((a * a) @ w),
            "d2": float((d * d) @ w),
            "slope": float((z * a * d) @ w) / s if s > 0 else float("nan"),
        }


def length_map(activation, q: float, sigma_w2: float, sigma_b2: float = 0.0, slope: float = LEAKY_SLOPE) -> float:
    """q' = σ_w²·E[φ(√q z)²] + σ_b²."""
    act = _act(activation, slope)
    return sigma_w2 * float(expect(lambda x: act.fn(x) ** 2, q)) + sigma_b2


def chi1(activation, q: float, sigma_w2: float, slope: float = LEAKY_SLOPE) -> float:
    """σ_w²·E[φ'(√q z)²]: the mean-square gain of a backpropagated gradient through one layer at q."""
    act = _act(activation, slope)
    d = _dphi(act)
    return sigma_w2 * float(expect(lambda x: d(x) ** 2, q))


def fixed_point(activation, sigma_w2: float, sigma_b2: float, q0: float, slope: float = LEAKY_SLOPE) -> tuple[float, str]:
    """The fixed point the length map reaches from ``q0``: ``(q*, kind)``, kind "finite", "zero" or "infinite"."""
    q, kinds = _fixed_points(_act(activation, slope), [sigma_w2], [sigma_b2], [q0])
    return float(q[0]), kinds[0]


def _fixed_points(act: Activation, sigma_w2, sigma_b2, q0) -> tuple[np.ndarray, list]:
    """:func:`fixed_point` for 1-D arrays of (σ_w², σ_b², q0), iterating all of them at once."""
    sw2, sb2 = np.asarray(sigma_w2, float).ravel(), np.asarray(sigma_b2, float).ravel()
    q = np.array(q0, dtype=float).ravel()
    z, w = normal_rule()
    out, kinds = np.full(q.shape, math.nan), [""] * q.size
    phi0 = float(act.fn(np.zeros(1))[0]) ** 2
    for i in np.flatnonzero(q <= 0):
        if sw2[i] * phi0 + sb2[i] == 0:
            out[i], kinds[i] = 0.0, "zero"
        q[i] = Q_MIN
    active = np.array([k == "" for k in kinds])
    up = np.zeros(q.shape, bool)
    with np.errstate(all="ignore"):
        for _ in range(_ITER_MAX):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            a = act.fn(np.sqrt(q[idx])[:, None] * z)
            qn = sw2[idx] * ((a * a) @ w) + sb2[idx]
            for i, qi, qni in zip(idx, q[idx], qn):
                if not qni <= Q_MAX:  # also catches nan
                    out[i], kinds[i] = math.inf, "infinite"
                elif qni < Q_MIN:
                    out[i], kinds[i] = 0.0, "zero"
                elif abs(qni - qi) <= _RTOL * qi:
                    out[i], kinds[i] = qni, "finite"
                else:
                    continue
                active[i] = False
            up[idx], q[idx] = qn > q[idx], qn
    for i in np.flatnonzero(active):
        out[i], kinds[i] = _bracket(lambda x, i=i: sw2[i] * _moments(act, x)["m2"] + sb2[i], float(q[i]), bool(up[i]))
    return out, kinds


def _bracket(q2, q: float, up: bool) -> tuple[float, str]:
    """The first root of q2(x) − x from q in the direction of motion: scan by factors of 2, bisect in log q."""
    factor = 2.0 if up else 0.5
    lo = q
    while True:
        hi = lo * factor
        if hi > Q_MAX:
            return math.inf, "infinite"
        if hi < Q_MIN:
            return 0.0, "zero"
        g = q2(hi) - hi
        if (g <= 0) if up else (g >= 0):
            break
        lo = hi
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        g = q2(mid) - mid
        if (g > 0) == up:
            lo = mid
        else:
            hi = mid
        if abs(hi - lo) <= _RTOL * max(lo, hi):
            break
    return math.sqrt(lo * hi), "finite"


def _clip_q(q: float) -> float:
    return min(max(q, Q_MIN), Q_MAX)


def correlation_map(activation, q: float, c: float, sigma_w2: float, sigma_b2: float = 0.0,
                    slope: float = LEAKY_SLOPE, n: int = GH_NODES_2D) -> tuple[float, float]:
    """``(c', dc'/dc)`` for two inputs of pre-activation variance q and correlation c (normalized map).

    u₁ = √q·z₁, u₂ = √q·(c·z₁ + √(1−c²)·z₂), integrated in polar coordinates (z₁, z₂) = ρ(cos θ, sin θ):
    u₁ = √q·ρ·cos θ and u₂ = √q·ρ·cos(θ − θ₀) with cos θ₀ = c, so φ's kink at 0 lies on four rays.
    The circle is cut at those rays, Gauss–Legendre with ``n // 4`` angles per arc, and the Gauss
    rule of the weight ρe^{−ρ²/2} along each ray: smooth integrands everywhere, spectral accuracy
    (the plain 2-D Gauss–Hermite product rule errs by ~4e-3 for ReLU at c = 0).
    """
    act = _act(activation, slope)
    d = _dphi(act)
    c = min(max(float(c), -1.0), 1.0)
    theta0 = math.acos(c)
    cuts = np.unique(np.mod([0.5 * math.pi, 1.5 * math.pi, theta0 + 0.5 * math.pi, theta0 + 1.5 * math.pi], 2 * math.pi))
    edges = np.concatenate([cuts, [cuts[0] + 2 * math.pi]])
    t, tw = np.polynomial.legendre.leggauss(max(int(n) // 4, 2))
    theta = np.concatenate([lo + 0.5 * (hi - lo) * (t + 1) for lo, hi in zip(edges[:-1], edges[1:])])
    theta_w = np.concatenate([0.5 * (hi - lo) * tw for lo, hi in zip(edges[:-1], edges[1:])]) / (2 * math.pi)
    rho, rho_w = polar_radial_rule()
    ww = theta_w[:, None] * rho_w[None, :]
    s = math.sqrt(q)
    with np.errstate(all="ignore"):
        u1 = s * np.cos(theta)[:, None] * rho[None, :]
        u2 = s * np.cos(theta - theta0)[:, None] * rho[None, :]
        a1, a2 = act.fn(u1), act.fn(u2)
        num = sigma_w2 * float(np.sum(ww * a1 * a2)) + sigma_b2
        dnum = sigma_w2 * q * float(np.sum(ww * d(u1) * d(u2)))
    den = length_map(act, q, sigma_w2, sigma_b2)
    if not den > 0:
        return 1.0, float("nan")
    return num / den, dnum / den


def correlation_fixed_point(activation, q: float, sigma_w2: float, sigma_b2: float = 0.0,
                            slope: float = LEAKY_SLOPE) -> tuple[float, float]:
    """``(c*, χ_c)``: the stable fixed point of the correlation map at q and the map's slope there."""
    cmap = lambda c: correlation_map(activation, q, c, sigma_w2, sigma_b2, slope)  # noqa: E731
    _, slope1 = cmap(1.0)
    if not slope1 > 1 + _CSTAR_SLOPE_TOL:
        return 1.0, slope1
    # c = 1 is unstable: scan down in 1 − c for the first c with c' ≥ c, then bisect.
    prev = 1.0 - 1e-7
    hi = None
    for gap in np.geomspace(1e-7, 2.0, 120)[1:]:
        c = 1.0 - gap
        if cmap(c)[0] - c >= 0:
            hi, lo = prev, c  # g(hi) < 0 ≤ g(lo)
            break
        prev = c
    if hi is None:
        return -1.0, cmap(-1.0)[1]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cmap(mid)[0] - mid >= 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    c_star = 0.5 * (lo + hi)
    return c_star, cmap(c_star)[1]


def depth_scale(slope: float) -> float:
    """−1/log(slope) for a slope in (0, 1); ∞ for a slope ≥ 1 − 1e-9 or nan; 0 for a slope of 0."""
    if not slope < 1 - _SLOPE_ONE_TOL:
        return math.inf
    if slope <= 0:
        return 0.0
    return -1.0 / math.log(slope)


def phase_of(chi: float) -> str:
    """"ordered" (χ₁ < 1), "critical" (|χ₁ − 1| < CRITICAL_TOL) or "chaotic" (χ₁ > 1)."""
    if not np.isfinite(chi):
        return CHAOTIC if chi == math.inf else NOT_APPLICABLE
    if abs(chi - 1.0) < CRITICAL_TOL:
        return CRITICAL
    return ORDERED if chi < 1 else CHAOTIC




@dataclass
class Prediction:
    """Mean-field prediction for the hidden stack of an MLP at initialization.

    Per hidden layer (lists, first hidden layer first): ``q`` the pre-activation second moment
    (= variance: the ensemble mean is 0), ``preact_std`` = √q, ``act_mean`` = E[φ], ``act_std`` =
    √(E[φ²] − E[φ]²), ``chi`` = σ_w²·E[φ'(√q^l z)²] with that layer's σ_w², and ``grad_sq``: the
    predicted mean square of the backpropagated gradient at each layer's pre-activation relative
    to the last hidden layer (1 there; Π of σ_w²_{k+1}·E[φ'(√q^k z)²]·width_{k+1}/width_k above it).
    The theory block uses the last hidden layer's σ_w² (the value a deep stack repeats): ``q_star``
    and ``fixed_point`` ("finite" · "zero" · "infinite" · "n/a"), ``chi1``, ``phase``, ``xi_q``,
    ``xi_c``, ``c_star``, ``chi_c``. ``applies`` is False where the theory does not hold (``note``
    says why).
    """

    activation: str
    sigma_w2: list
    sigma_b2: float
    input_q: float
    q: list
    preact_std: list
    act_mean: list
    act_std: list
    chi: list
    grad_sq: list
    q_star: float
    fixed_point: str
    chi1: float
    phase: str
    xi_q: float
    xi_c: float
    c_star: float
    chi_c: float
    applies: bool = True
    norm: Optional[str] = None
    note: str = ""
    slope: float = LEAKY_SLOPE
    residual: Optional[dict] = None  # residual nets only (initlab.theory.residual): stream_q, doubling_depth, ...

    @property
    def depth(self) -> int:
        return len(self.q)

    def layers(self) -> list[dict]:
        """One strict-JSON-safe dict per hidden layer: layer, q, preact_std, mean, std, chi, grad_sq."""
        return [
            {"layer": i + 1, "q": finite_or_none(self.q[i]), "preact_std": finite_or_none(self.preact_std[i]),
             "mean": finite_or_none(self.act_mean[i]), "std": finite_or_none(self.act_std[i]),
             "chi": finite_or_none(self.chi[i]), "grad_sq": finite_or_none(self.grad_sq[i])}
            for i in range(self.depth)
        ]

    def theory(self) -> dict:
        """The scalar block: q_star, fixed_point, chi1, phase, xi_q, xi_c, c_star, chi_c, applies, note, ..."""
        return {
            "activation": self.activation, "depth": self.depth,
            "sigma_w2": finite_or_none(self.sigma_w2[-1]) if self.sigma_w2 else None,
            "sigma_b2": finite_or_none(self.sigma_b2), "input_q": finite_or_none(self.input_q),
            "q_star": finite_or_none(self.q_star), "fixed_point": self.fixed_point, "chi1": finite_or_none(self.chi1),
            "phase": self.phase, "xi_q": finite_or_none(self.xi_q), "xi_c": finite_or_none(self.xi_c),
            "c_star": finite_or_none(self.c_star), "chi_c": finite_or_none(self.chi_c),
            "critical_tol": CRITICAL_TOL, "applies": self.applies, "norm": self.norm, "note": self.note,
            "residual": _strict(self.residual),
        }

    def to_dict(self) -> dict:
        """``theory()`` plus ``sigma_w2_layers`` and ``layers``; strict JSON (inf/nan → None)."""
        d = self.theory()
        d["sigma_w2_layers"] = [finite_or_none(s) for s in self.sigma_w2]
        d["layers"] = self.layers()
        return d

    def __repr__(self) -> str:
        return (f"Prediction({self.activation}, depth={self.depth}, σ_w²={self.sigma_w2[-1] if self.sigma_w2 else None}, "
                f"σ_b²={self.sigma_b2}, q*={self.q_star:.4g}, χ₁={self.chi1:.4g}, phase={self.phase})")


def _strict(value):
    """A nested dict/list of numbers with inf/nan → None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return finite_or_none(value)
    return value


def _check_nonneg(name, x):
    if not (isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(x) and x >= 0):
        raise EngineError(f"{name} must be a finite number ≥ 0, got {x!r}")
    return float(x)


def predict(activation: str, sigma_w2: Union[float, Sequence[float]], sigma_b2: float = 0.0, input_q: float = 1.0,
            depth: Optional[int] = None, slope: float = LEAKY_SLOPE, *, norm: Optional[str] = None,
            widths: Optional[Sequence[int]] = None) -> Prediction:
    """Mean-field prediction for ``depth`` hidden layers (see the module docstring).

    ``sigma_w2``: one value for every layer, or one per hidden layer (the first layer's fan_in is
    the input's features, so it can differ). ``input_q``: the input's second moment mean(x²).
    ``norm``: None, "batchnorm" or "layernorm". ``widths`` (optional, per hidden layer) only
    corrects ``grad_sq`` for layers of different widths.
    """
    act = _act(activation, slope)
    if isinstance(sigma_w2, (list, tuple, np.ndarray)):
        sw2 = [_check_nonneg("sigma_w2", float(s)) for s in sigma_w2]
        if depth is None:
            depth = len(sw2)
        if len(sw2) != depth:
            raise EngineError(f"sigma_w2 has {len(sw2)} values for depth {depth}")
    else:
        if depth is None:
            raise EngineError("depth is needed when sigma_w2 is a single value")
        sw2 = [_check_nonneg("sigma_w2", sigma_w2)] * int(depth)
    if int(depth) != depth or depth < 0:
        raise EngineError(f"depth must be an integer ≥ 0, got {depth}")
    depth = int(depth)
    sb2 = _check_nonneg("sigma_b2", sigma_b2)
    input_q = _check_nonneg("input_q", input_q)
    if norm not in NORMS:
        raise EngineError(f"norm must be one of None, 'batchnorm', 'layernorm', got {norm!r}")
    if widths is not None and len(widths) != depth:
        raise EngineError(f"widths has {len(widths)} entries for depth {depth}")
    sw2_last = sw2[-1] if sw2 else _check_nonneg("sigma_w2", sigma_w2)

    qs, mom = [], []
    q = (sw2[0] * input_q + sb2) if depth else sw2_last * input_q + sb2
    for i in range(depth):
        if norm is not None:
            q = 1.0
        elif i > 0:
            q = sw2[i] * mom[-1]["m2"] + sb2
            if not q <= Q_MAX * Q_MAX:
                q = math.inf
        qs.append(q)
        mom.append(_moments(act, q) if math.isfinite(q) else {"m1": math.nan, "m2": math.inf, "d2": math.nan, "slope": math.nan})
    act_mean = [m["m1"] for m in mom]
    act_std = [math.sqrt(max(m["m2"] - m["m1"] ** 2, 0.0)) if math.isfinite(m["m2"]) else math.inf for m in mom]
    chi = [sw2[i] * mom[i]["d2"] for i in range(depth)]
    grad_sq = [1.0] * depth
    for i in range(depth - 2, -1, -1):
        ratio = widths[i + 1] / widths[i] if widths is not None else 1.0
        grad_sq[i] = grad_sq[i + 1] * sw2[i + 1] * mom[i]["d2"] * ratio
    common = dict(activation=act.name, sigma_w2=sw2, sigma_b2=sb2, input_q=input_q, q=qs,
                  preact_std=[math.sqrt(q) for q in qs], act_mean=act_mean, act_std=act_std, chi=chi,
                  grad_sq=grad_sq, norm=norm, slope=slope)

    if norm is not None:
        return Prediction(**common, q_star=1.0, fixed_point=NOT_APPLICABLE, chi1=math.nan, phase=NOT_APPLICABLE,
                          xi_q=math.nan, xi_c=math.nan, c_star=math.nan, chi_c=math.nan, applies=False,
                          note=f"{norm}: every pre-activation is normalized to variance 1 (gamma=1, beta=0, batch "
                               f"statistics), so q = 1 at every layer; the length map, chi1, the phase and the depth "
                               f"scales do not apply")
    start = qs[-1] if qs else q
    q_star, kind = fixed_point(act, sw2_last, sb2, start if math.isfinite(start) else Q_MAX * 2)
    qe = _clip_q(q_star)
    m = _moments(act, qe)
    chi_1 = sw2_last * m["d2"]
    length_slope = sw2_last * m["slope"]
    if kind != "finite":
        # q → 0 or ∞: the per-layer factor of q is q'/q, not the derivative of the map at a fixed point.
        length_slope = (sw2_last * m["m2"] + sb2) / qe
    c_star, chi_c = correlation_fixed_point(act, qe, sw2_last, sb2, slope)
    return Prediction(**common, q_star=q_star, fixed_point=kind, chi1=chi_1, phase=phase_of(chi_1),
                      xi_q=depth_scale(length_slope), xi_c=depth_scale(chi_c), c_star=c_star, chi_c=chi_c,
                      note=_kind_note(kind, act.name))


def _kind_note(kind: str, name: str) -> str:
    if kind == "zero":
        return "q shrinks to 0 with depth: q*, chi1 and the depth scales are the q -> 0 limits"
    if kind == "infinite":
        return "q grows without bound with depth: q* is infinite, chi1 and the depth scales are the q -> inf limits"
    return ""


def critical_sigma_w2(activation: str, sigma_b2: float = 0.0, slope: float = LEAKY_SLOPE,
                      lo: float = 0.05, hi: float = 20.0, input_q: float = 1.0) -> float:
    """The σ_w² at which χ₁ = 1 for this σ_b² (bisection on [lo, hi]); nan when χ₁ − 1 does not change sign there."""
    act = _act(activation, slope)
    g = lambda s: chi1_grid(act, [s], [sigma_b2], slope, input_q)[0, 0] - 1.0  # noqa: E731
    glo, ghi = g(lo), g(hi)
    if glo == 0:
        return lo
    if not (glo < 0 < ghi):
        return math.nan
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if g(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * hi:
            break
    return 0.5 * (lo + hi)


def chi1_grid(activation: str, sigma_w2_values: Sequence[float], sigma_b2_values: Sequence[float],
              slope: float = LEAKY_SLOPE, input_q: float = 1.0) -> np.ndarray:
    """χ₁ at the fixed point on a grid: shape ``(len(sigma_b2_values), len(sigma_w2_values))``."""
    act = _act(activation, slope)
    sw2, sb2 = np.meshgrid(np.asarray(sigma_w2_values, float), np.asarray(sigma_b2_values, float))
    q_star, _ = _fixed_points(act, sw2.ravel(), sb2.ravel(), sw2.ravel() * input_q + sb2.ravel())
    qe = np.clip(q_star, Q_MIN, Q_MAX)
    d = _dphi(act)
    return sw2 * expect(lambda x: d(x) ** 2, qe).reshape(sw2.shape)
