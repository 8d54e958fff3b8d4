"""Theory beside measurement for one run: the mean-field prediction and the Jacobian spectrum at init.

Both are computed from the config and the freshly initialized model, before any training step,
and never change the model's parameters or what it trains on.
"""
from __future__ import annotations

import numpy as np

from initlab.config import Config
from initlab.engine.model import InitSpec

# The Jacobian costs about 3·Σ fan_in·fan_out·width_L multiply-adds per input: skip it past this.
JACOBIAN_BUDGET = 2e10
JACOBIAN_INPUTS = 4


def init_spec(cfg: Config) -> InitSpec:
    i = cfg.init
    return InitSpec(scheme=i.scheme, std=i.std, gain=i.gain, bias_std=i.bias_std, value=i.value, mode=i.mode)


def predict_for(cfg: Config, probe_x: np.ndarray, model=None):
    """The mean-field :class:`initlab.theory.meanfield.Prediction` for a config on this probe batch."""
    from initlab.theory.schemes import predict_mlp

    m = cfg.model
    input_q = float(np.mean(np.square(probe_x, dtype=np.float64)))
    return predict_mlp(init_spec(cfg), probe_x.shape[1], m.widths, m.activation, input_q, bias=m.bias,
                       batchnorm=m.batchnorm, layernorm=m.layernorm, slope=m.slope, model=model,
                       residual=m.residual, branch_scale=m.branch_scale)


def jacobian_cost(model) -> float:
    sizes = [b.linear.fan_in for b in model.blocks] + [model.blocks[-1].linear.fan_out]
    return 3.0 * sum(a * b for a, b in zip(sizes, sizes[1:])) * sizes[-1]


def spectrum_for(model, probe_x: np.ndarray):
    """Singular values ``(inputs, k)`` of d(last hidden)/d(input), or None when too costly."""
    from initlab.theory.jacobian import jacobian_singular_values

    n = min(JACOBIAN_INPUTS, len(probe_x))
    if jacobian_cost(model) * n > JACOBIAN_BUDGET:
        return None
    return jacobian_singular_values(model, probe_x, n_inputs=n)


def merge_prediction(layers: list[dict], prediction: dict | None) -> None:
    """Add ``predicted_mean``, ``predicted_std`` and ``predicted_preact_std`` to each layer's metrics."""
    if not prediction:
        return
    for layer, pred in zip(layers, prediction.get("layers", [])):
        layer["predicted_mean"] = pred["mean"]
        layer["predicted_std"] = pred["std"]
        layer["predicted_preact_std"] = pred["preact_std"]
