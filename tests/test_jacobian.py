"""Input–output Jacobian spectrum: exact isometry of orthogonal linear nets, agreement with finite
differences, and Pennington et al.'s contrast between orthogonal and Gaussian weights."""
import json
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from initlab.engine.model import InitSpec, build_mlp
from initlab.errors import EngineError
from initlab.theory import meanfield as T
from initlab.theory.jacobian import jacobian, jacobian_singular_values, jacobian_summary


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _model(widths, act="linear", scheme="orthogonal", n_in=None, dtype="float64", seed=0, **kw):
    rng = np.random.default_rng(seed)
    n_in = n_in or widths[0]
    init = kw.pop("init", None) or InitSpec(scheme)
    return build_mlp(n_in, 7, widths, act, init, rng, dtype=dtype, **kw), rng


@pytest.mark.parametrize("widths,n_in", [([64] * 10, 64), ([90, 80, 80, 64, 50], 100), ([40, 60, 60, 90], 30)])
def test_orthogonal_linear_nets_are_exact_isometries(widths, n_in):
    model, rng = _model(widths, n_in=n_in)
    sv = jacobian_singular_values(model, rng.standard_normal((5, n_in)), n_inputs=3)
    assert sv.shape == (3, min(n_in, widths[-1]))
    assert np.max(np.abs(sv - 1)) < 1e-12
    s = jacobian_summary(sv)
    assert s["max_over_min"] == pytest.approx(1.0, abs=1e-12) and s["frac_within_10pct"] == 1.0


def test_float32_orthogonal_isometry_to_float32_precision():
    model, rng = _model([128] * 10, dtype="float32")
    sv = jacobian_singular_values(model, rng.standard_normal((2, 128)), n_inputs=2)
    assert np.max(np.abs(sv - 1)) < 1e-5


def _finite_difference(model, x, output="hidden", h=1e-6):
    def f(v):
        out = model.forward(v[None, :], train=False)
        return out[0] if output == "logits" else model.blocks[-1].output[0]

    cols = [(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    return np.array(cols)  # (n_in, n_out): row i = d output / d x_i


@pytest.mark.parametrize("norm", [None, "layernorm", "batchnorm"])
@pytest.mark.parametrize("output", ["hidden", "logits"])
def test_jacobian_matches_finite_differences(norm, output):
    kw = {norm: True} if norm else {}
    init = InitSpec("lecun_normal", gain=1.5, bias_std=0.3)
    model, rng = _model([12, 9, 11], act="tanh", n_in=8, init=init, **kw)
    if norm == "batchnorm":  # evaluation mode uses the running statistics: make them non-trivial
        for b in model.blocks:
            b.norm.running_mean[...] = rng.standard_normal(b.norm.n)
            b.norm.running_var[...] = rng.uniform(0.5, 2.0, b.norm.n)
            b.norm.gamma.data[...] = rng.uniform(0.5, 1.5, b.norm.n)
    x = rng.standard_normal(8)
    J = jacobian(model, x, output=output, chunk=4)  # chunks smaller than the output: several passes
    assert J.shape == (8, 7 if output == "logits" else 11)
    assert np.allclose(J, _finite_difference(model, x, output), atol=1e-8)


def test_mean_squared_singular_value_follows_mean_field():
    # E[mean s²] = Π over layers of σ_w²·E[φ'(√q^l z)²] (the per-layer χ of the prediction).
    width, depth, sw2 = 200, 10, 1.5
    init = InitSpec("normal", std=math.sqrt(sw2 / width))
    model, rng = _model([width] * depth, act="tanh", init=init, seed=3)
    x = rng.standard_normal((4, width))
    s = jacobian_summary(jacobian_singular_values(model, x, n_inputs=4))
    p = T.predict("tanh", sw2, 0.0, float(np.mean(x * x)), depth)
    assert s["mean_sq"] == pytest.approx(np.prod(p.chi), rel=0.2)


def test_orthogonal_concentrates_the_spectrum_and_gaussian_spreads_it():
    width, depth = 128, 20
    x = 0.05 * np.random.default_rng(1).standard_normal((3, width))  # near the origin: tanh ≈ linear
    results = {}
    for act in ("linear", "tanh"):
        for scheme in ("orthogonal", "lecun_normal"):  # both σ_w² = 1
            model, _ = _model([width] * depth, act=act, scheme=scheme, seed=2)
            results[act, scheme] = jacobian_summary(jacobian_singular_values(model, x, n_inputs=3))
    for act in ("linear", "tanh"):
        ortho, gauss = results[act, "orthogonal"], results[act, "lecun_normal"]
        assert ortho["log10_spread"] < 0.1 and ortho["frac_within_10pct"] > 0.9
        assert gauss["log10_spread_90"] > 3 and gauss["frac_within_10pct"] < 0.2
        json.dumps(gauss, allow_nan=False)


def test_gradient_buffers_are_restored_and_inputs_untouched():
    model, rng = _model([16, 16], act="relu")
    for p in model.params():
        p.grad[...] = rng.standard_normal(p.grad.shape)
    before = [p.grad.copy() for p in model.params()]
    x = rng.standard_normal((3, 16))
    x_copy = x.copy()
    jacobian_singular_values(model, x, n_inputs=3, output="logits")
    assert all(np.array_equal(a, p.grad) for a, p in zip(before, model.params()))
    assert np.array_equal(x, x_copy)


def test_summary_handles_a_zero_singular_value_and_rejects_bad_input():
    s = jacobian_summary(np.array([[2.0, 1.0, 0.0]]))
    json.dumps(s, allow_nan=False)
    assert s["max_over_min"] is None and s["log10_spread"] is None and s["min"] == 0.0
    assert s["log10_spread_90"] == pytest.approx(math.log10(1.9 / 0.1))  # interpolated p95 / p5
    assert s["mean_sq"] == pytest.approx(5 / 3) and s["n_inputs"] == 1 and s["n_values"] == 3
    model, rng = _model([8, 8])
    x = rng.standard_normal((2, 8))
    with pytest.raises(EngineError):
        jacobian_singular_values(model, x, n_inputs=3)
    with pytest.raises(EngineError):
        jacobian_singular_values(model, x[:, :5])
    with pytest.raises(EngineError):
        jacobian_singular_values(model, x, n_inputs=1, output="softmax")
    with pytest.raises(EngineError):
        jacobian_summary(np.array([]))
