"""Activations: values and derivatives against independent scalar formulas, dtypes, stability."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initlab.engine.activations import ACTIVATIONS, SELU_ALPHA, SELU_LAMBDA, get_activation, leaky_relu
from initlab.errors import EngineError

LAM = 1.0507009873554804934193349852946
ALPHA = 1.6732632423543772848170429916717


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _phi(x):  # standard normal CDF (erfc form: exact in the left tail too) and density
    return 0.5 * math.erfc(-x / math.sqrt(2)), math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


# name -> (value, derivative) written from each function's definition, in plain Python floats.
REFERENCE = {
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "tanh": (math.tanh, lambda x: 1 / math.cosh(x) ** 2),
    "relu": (lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0),
    "leaky_relu": (lambda x: x if x > 0 else 0.01 * x, lambda x: 1.0 if x > 0 else 0.01),
    "elu": (lambda x: x if x > 0 else math.exp(x) - 1, lambda x: 1.0 if x > 0 else math.exp(x)),
    "selu": (
        lambda x: LAM * (x if x > 0 else ALPHA * (math.exp(x) - 1)),
        lambda x: LAM * (1.0 if x > 0 else ALPHA * math.exp(x)),
    ),
    "gelu": (lambda x: x * _phi(x)[0], lambda x: _phi(x)[0] + x * _phi(x)[1]),
    "softsign": (lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
    "linear": (lambda x: x, lambda x: 1.0),
}
# Activations whose derivative (or its derivative) jumps at 0: finite differences avoid 0 there.
KINKED = {"relu", "leaky_relu", "elu", "selu", "softsign"}
# name -> (natural range, has a "saturated" notion, has a "dead" notion), from the SPEC.
FACTS = {
    "sigmoid": ((0.0, 1.0), True, False),
    "tanh": ((-1.0, 1.0), True, False),
    "relu": (None, False, True),
    "leaky_relu": (None, False, True),
    "elu": (None, False, False),
    "selu": (None, False, False),
    "gelu": (None, False, False),
    "softsign": ((-1.0, 1.0), True, False),
    "linear": (None, False, False),
}
# Points away from 0 (no kink inside a finite-difference step), both signs, small and large.
POINTS = np.array([-20.0, -6.0, -2.5, -1.0, -0.3, -0.01, 0.01, 0.2, 0.7, 1.0, 3.0, 8.0, 25.0])


def test_every_activation_has_a_reference():
    assert set(REFERENCE) == set(ACTIVATIONS) == set(FACTS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_value_and_derivative_match_the_definition(name):
    act = ACTIVATIONS[name]
    fn, dfn = REFERENCE[name]
    a = act.fn(POINTS)
    np.testing.assert_allclose(a, [fn(x) for x in POINTS], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(act.grad(POINTS, a), [dfn(x) for x in POINTS], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_matches_central_differences(name):
    act = ACTIVATIONS[name]
    x = POINTS[np.abs(POINTS) <= 8]  # beyond, sigmoid/tanh derivatives underflow the step's resolution
    h = 1e-6
    numeric = (act.fn(x + h) - act.fn(x - h)) / (2 * h)
    analytic = act.grad(x, act.fn(x))
    assert np.all(np.abs(analytic - numeric) <= 1e-6 * np.maximum(np.abs(analytic), np.abs(numeric)) + 1e-10)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_shape_are_kept_and_input_untouched(name, dtype):
    act = ACTIVATIONS[name]
    z = np.random.default_rng(0).standard_normal((7, 5)).astype(dtype)
    before = z.copy()
    a = act.fn(z)
    g = act.grad(z, a)
    assert a.dtype == dtype and g.dtype == dtype
    assert a.shape == g.shape == z.shape
    np.testing.assert_array_equal(z, before)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_integer_input_is_computed_in_float64(name):
    act = ACTIVATIONS[name]
    z = np.array([-3, -1, 1, 2])
    a = act.fn(z)
    assert a.dtype == np.float64
    np.testing.assert_allclose(a, [REFERENCE[name][0](float(x)) for x in z], rtol=1e-12)
    np.testing.assert_allclose(act.grad(z, a), [REFERENCE[name][1](float(x)) for x in z], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_range_saturation_and_dead_notions(name):
    act = ACTIVATIONS[name]
    rng_, saturated, dead = FACTS[name]
    assert act.name == name
    assert act.range == rng_
    assert (act.saturated is not None) == saturated
    assert (act.dead is not None) == dead


def test_saturation_and_dead_thresholds():
    a = np.array([0.05, 0.1, 0.5, 0.9, 0.95])
    np.testing.assert_array_equal(ACTIVATIONS["sigmoid"].saturated(a), [True, False, False, False, True])
    t = np.array([-0.95, -0.9, 0.0, 0.9, 0.95])
    for name in ("tanh", "softsign"):
        np.testing.assert_array_equal(ACTIVATIONS[name].saturated(t), [True, False, False, False, True])
    r = np.array([0.0, 1e-30, 2.0])
    np.testing.assert_array_equal(ACTIVATIONS["relu"].dead(r), [True, False, False])
    np.testing.assert_array_equal(ACTIVATIONS["leaky_relu"].dead(np.array([-1e-3, 0.0, 1e-3])), [True, True, False])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    z = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = ACTIVATIONS["sigmoid"].fn(z)
        g = ACTIVATIONS["sigmoid"].grad(z, a)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(g))
    assert a[0] == 0.0 and a[-1] == 1.0 and a[3] == 0.5
    assert np.all((a >= 0) & (a <= 1)) and np.all(np.diff(a) >= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_gelu_keep_relative_precision_in_the_left_tail(dtype):
    z = np.array([-20.0, -40.0], dtype=dtype)
    expected = [_sigmoid(-20.0), _sigmoid(-40.0)]
    np.testing.assert_allclose(ACTIVATIONS["sigmoid"].fn(z), expected, rtol=1e-6 if dtype == np.float32 else 1e-13)
    g = np.array([-6.0, -9.0], dtype=dtype)
    np.testing.assert_allclose(ACTIVATIONS["gelu"].fn(g), [REFERENCE["gelu"][0](-6.0), REFERENCE["gelu"][0](-9.0)],
                               rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_no_overflow_warning_for_extreme_inputs(name):
    z = np.array([-1e30, -1e4, 1e4, 1e30])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = ACTIVATIONS[name].fn(z)
        ACTIVATIONS[name].grad(z, a)


def test_selu_constants_are_exact():
    assert SELU_LAMBDA == LAM and SELU_ALPHA == ALPHA
    selu = ACTIVATIONS["selu"].fn
    assert selu(np.array([1.0]))[0] == LAM
    assert selu(np.array([-1e3]))[0] == pytest.approx(-LAM * ALPHA, rel=1e-15)


def test_gelu_is_the_exact_erf_form_not_the_tanh_approximation():
    x = np.array([1.0, -1.0, 2.0])
    exact = x * 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    got = ACTIVATIONS["gelu"].fn(x)
    np.testing.assert_allclose(got, exact, rtol=1e-15)
    assert np.max(np.abs(got - approx)) > 1e-5
    assert got[0] == pytest.approx(0.8413447460685429, rel=1e-15)


def test_leaky_relu_slope_is_configurable():
    x = np.array([-2.0, 3.0])
    assert ACTIVATIONS["leaky_relu"].fn(x).tolist() == [-0.02, 3.0]
    act = get_activation("leaky_relu", slope=0.2)
    assert act.fn(x).tolist() == [-0.4, 3.0]
    assert act.grad(x, act.fn(x)).tolist() == [0.2, 1.0]
    assert leaky_relu(0.0).fn(x).tolist() == [0.0, 3.0]
    assert get_activation("leaky_relu") is ACTIVATIONS["leaky_relu"]


@pytest.mark.parametrize("slope", [-0.1, 1.0, 2.0, float("nan"), "a", None])
def test_bad_leaky_slope_is_an_engine_error(slope):
    with pytest.raises(EngineError, match="slope"):
        get_activation("leaky_relu", slope=slope)


@pytest.mark.parametrize("name", ["", "Relu", "sigmod", "swish", None, 3, ["relu"]])
def test_unknown_activation_is_an_engine_error(name):
    with pytest.raises(EngineError, match="unknown activation"):
        get_activation(name)


def test_unknown_activation_suggests_the_closest_name():
    with pytest.raises(EngineError, match="did you mean 'sigmoid'"):
        get_activation("sigmod")


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-700, max_value=700, allow_nan=False))
def test_sigmoid_symmetry_and_bounds(x):
    s = ACTIVATIONS["sigmoid"].fn(np.array([x, -x]))
    assert 0.0 <= s[0] <= 1.0
    assert s[0] + s[1] == pytest.approx(1.0, abs=1e-15)
    assert s[0] == pytest.approx(_sigmoid(x), rel=1e-12, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(ACTIVATIONS)), st.floats(min_value=-6, max_value=6, allow_nan=False))
def test_derivative_matches_differences_at_random_points(name, x):
    if name in KINKED and abs(x) < 1e-4:
        x = 1e-4 if x >= 0 else -1e-4
    act = ACTIVATIONS[name]
    h = 1e-6
    numeric = (act.fn(np.array([x + h]))[0] - act.fn(np.array([x - h]))[0]) / (2 * h)
    analytic = act.grad(np.array([x]), act.fn(np.array([x])))[0]
    assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), abs(numeric)) + 1e-9
