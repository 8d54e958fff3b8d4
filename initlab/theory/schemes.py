"""σ_w² of initlab's init schemes and the mean-field prediction for a config-level MLP.

The mathematics is in :mod:`initlab.theory.meanfield`; this module turns an :class:`initlab.engine.model.InitSpec`
(or a built model's weights) into the per-layer σ_w², σ_b² it needs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from initlab.engine.activations import LEAKY_SLOPE
from initlab.engine.initializers import canonical
from initlab.engine.lsuv import DATA_DEPENDENT
from initlab.errors import EngineError
from initlab.theory.meanfield import Prediction, predict


def weight_variance(scheme: str, fan_in: int, fan_out: int, std: Optional[float] = None, gain: float = 1.0,
                    value: float = 0.01, mode: str = "fan_in") -> float:
    """E[W²] of one weight of a ``(fan_in, fan_out)`` layer drawn by ``scheme`` (initlab.engine.initializers).

    This is the variance for the zero-mean schemes; for ``constant`` (not random, not zero-mean)
    it is value²·gain², and mean-field theory does not apply. ``orthogonal`` and ``identity``:
    the mean square of the entries, gain²/max(fan_in, fan_out). ``lsuv`` is data-dependent: read
    the drawn weights instead (:func:`sigma_w2_from_model`).
    """
    if scheme in DATA_DEPENDENT:
        raise EngineError(f"{scheme}: the weight scale depends on the data; use sigma_w2_from_model(model)")
    s = canonical(scheme)
    fi, fo, g2 = int(fan_in), int(fan_out), float(gain) ** 2
    if fi < 1 or fo < 1:
        raise EngineError(f"fans must be positive integers, got ({fan_in}, {fan_out})")
    fan = fi if mode == "fan_in" else fo
    table = {
        "zeros": lambda: 0.0,
        "constant": lambda: float(value) ** 2 * g2,
        "normal": lambda: (0.01 if std is None else std) ** 2 * g2,
        "truncated_normal": lambda: (0.01 if std is None else std) ** 2 * g2,
        "uniform": lambda: (1.0 / (3.0 * fi) if std is None else std ** 2) * g2,
        "xavier_normal": lambda: 2.0 * g2 / (fi + fo),
        "xavier_uniform": lambda: 2.0 * g2 / (fi + fo),
        "he_normal": lambda: 2.0 * g2 / fan,
        "he_uniform": lambda: 2.0 * g2 / fan,
        "lecun_normal": lambda: g2 / fi,
        "lecun_uniform": lambda: g2 / fi,
        "orthogonal": lambda: g2 / max(fi, fo),
        "identity": lambda: g2 / max(fi, fo),
    }
    return table[s]()


def sigma_w2_of(init, n_in: int, widths: Sequence[int], activation: str, slope: float = LEAKY_SLOPE) -> list[float]:
    """σ_w² = fan_in·E[W²] for each hidden layer, from an :class:`initlab.engine.model.InitSpec` (gain "auto" resolved)."""
    from initlab.engine.model import resolve_gain

    if init.scheme in DATA_DEPENDENT:
        raise EngineError(f"{init.scheme}: the weight scale depends on the data; use sigma_w2_from_model(model)")
    gain = resolve_gain(init, activation, slope)
    sizes = [int(n_in), *map(int, widths)]
    return [
        sizes[i] * weight_variance(init.scheme, sizes[i], sizes[i + 1], init.std, gain, init.value, init.mode)
        for i in range(len(widths))
    ]


def sigma_w2_from_model(model) -> list[float]:
    """σ_w² = fan_in·mean(W²) of each hidden layer's actual weights (works for every scheme, lsuv included)."""
    return [float(b.linear.fan_in * np.mean(np.square(b.linear.W.data, dtype=np.float64))) for b in model.blocks]


def predict_mlp(init, n_in: int, widths: Sequence[int], activation: str, input_q: float, *, bias: bool = True,
                batchnorm: bool = False, layernorm: bool = False, slope: float = LEAKY_SLOPE, model=None,
                residual: bool = False, branch_scale=None) -> Prediction:
    """:func:`predict` for an MLP built by ``build_mlp`` with this InitSpec (config-level convenience).

    σ_w² per layer comes from the scheme's formula, or from ``model``'s weights for ``lsuv`` (where
    a model is required). σ_b² = bias_std² (0 without biases). ``constant`` weights are not random:
    the per-layer numbers are None and ``applies`` is False. ``identity``: the length map is exact
    at layer 1 only (pre-activations stop being Gaussian), so ``applies`` is False there too.
    """
    scheme = init.scheme
    if residual:
        return _predict_residual(init, n_in, widths, activation, input_q, bias, batchnorm, layernorm, slope, branch_scale)
    if scheme in DATA_DEPENDENT:
        if model is None:
            raise EngineError(f"{scheme}: the weight scale depends on the data; pass the initialized model")
        sw2 = sigma_w2_from_model(model)
    else:
        sw2 = sigma_w2_of(init, n_in, widths, activation, slope)
    sb2 = float(init.bias_std) ** 2 if bias else 0.0
    norm = "batchnorm" if batchnorm else "layernorm" if layernorm else None
    p = predict(activation, sw2, sb2, input_q, len(widths), slope, norm=norm, widths=list(widths))
    canon = scheme if scheme in DATA_DEPENDENT else canonical(scheme)
    if canon == "constant" and norm is None:
        nan = [math.nan] * p.depth
        p.q, p.preact_std, p.act_mean, p.act_std, p.chi, p.grad_sq = nan, nan, nan, nan, nan, nan
        p.applies = False
        p.note = "constant weights are not random (every unit of a layer is identical): mean-field theory does not apply"
    elif canon == "identity" and norm is None:
        p.applies = False
        p.note = "identity weights are not random: the prediction is exact at layer 1 only (later pre-activations are not Gaussian)"
    return p


def _predict_residual(init, n_in, widths, activation, input_q, bias, batchnorm, layernorm, slope, branch_scale) -> Prediction:
    """:func:`initlab.theory.residual.predict_residual` for a net built with ``residual=True``: the
    structural schemes are their start scheme's σ_w², then Fixup's zero branches (weights and biases)
    and SkipInit's α = 0."""
    from dataclasses import replace

    from initlab.engine.residual import STRUCTURAL, resolve_branch_scale
    from initlab.theory.residual import predict_residual

    structural = STRUCTURAL.get(init.scheme)
    if structural is not None:
        init = replace(init, scheme=structural.start)
        branch_scale = structural.branch_scale or branch_scale
    alpha, _ = resolve_branch_scale(branch_scale, len(widths) - 1)
    sw2 = sigma_w2_of(init, n_in, widths, activation, slope)
    sb2 = float(init.bias_std) ** 2 if bias else 0.0
    branch_sb2 = sb2
    if structural is STRUCTURAL.get("fixup"):
        sw2, branch_sb2 = sw2[:1] + [0.0] * (len(sw2) - 1), 0.0
    norm = "batchnorm" if batchnorm else "layernorm" if layernorm else None
    return predict_residual(activation, sw2, sb2, input_q, alpha, slope, norm=norm, branch_sigma_b2=branch_sb2)
