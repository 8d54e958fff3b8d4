"""Initializers: every scheme against its formula (statistics within sampling error), gains, errors."""
import math

import numpy as np
import pytest

from initlab.engine.initializers import (
    ALIASES,
    INITIALIZERS,
    STD_SCHEMES,
    TRUNC_STD_2SIGMA,
    calculate_gain,
    canonical,
    get_initializer,
    truncated_unit,
)
from initlab.errors import EngineError

SHAPES = [(256, 256), (400, 150), (150, 400)]


def rng(seed=0):
    return np.random.default_rng(seed)


# name -> (kind, scale(fan_in, fan_out)) from REFERENCE.md, with the registry's default options:
# "normal": N(0, s²) untruncated; "uniform": U(-s, s); "truncated": cut at ±2σ, final std s;
# "constant": every entry s; "orthogonal" and "identity": checked structurally.
EXPECTED = {
    "zeros": ("constant", lambda i, o: 0.0),
    "constant": ("constant", lambda i, o: 0.01),
    "normal": ("normal", lambda i, o: 0.01),
    "uniform": ("uniform", lambda i, o: 1 / math.sqrt(i)),
    "truncated_normal": ("truncated", lambda i, o: 0.01),
    "xavier_normal": ("normal", lambda i, o: math.sqrt(2 / (i + o))),
    "xavier_uniform": ("uniform", lambda i, o: math.sqrt(6 / (i + o))),
    "he_normal": ("normal", lambda i, o: math.sqrt(2 / i)),
    "he_uniform": ("uniform", lambda i, o: math.sqrt(6 / i)),
    "lecun_normal": ("normal", lambda i, o: 1 / math.sqrt(i)),
    "lecun_uniform": ("uniform", lambda i, o: math.sqrt(3 / i)),
    "orthogonal": ("orthogonal", None),
    "identity": ("identity", None),
}
ALIAS_TARGETS = {
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
}


def check_normal(w, std):
    """Mean and std within 6 standard errors; not truncated (the tails reach past 3.5σ)."""
    n = w.size
    assert abs(w.mean()) < 6 * std / math.sqrt(n)
    assert abs(w.std() / std - 1) < 6 / math.sqrt(2 * n)
    assert np.abs(w).max() > 3.5 * std


def check_uniform(w, bound):
    n = w.size
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > bound * (1 - 20 / n)  # the support reaches the bound
    assert abs(w.mean()) < 6 * bound / math.sqrt(3 * n)
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 6 * math.sqrt(0.8 / (4 * n))


def check_truncated(w, std):
    n = w.size
    limit = 2 * std / TRUNC_STD_2SIGMA  # ±2σ of the underlying normal, after the rescaling
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit
    assert abs(w.mean()) < 6 * std / math.sqrt(n)
    assert abs(w.std() / std - 1) < 6 / math.sqrt(2 * n)


def check_against_formula(name, w, fan_in, fan_out):
    kind, scale = EXPECTED[name]
    assert w.shape == (fan_in, fan_out) and w.dtype == np.float64
    if kind == "constant":
        assert np.all(w == scale(fan_in, fan_out))
    elif kind == "normal":
        check_normal(w, scale(fan_in, fan_out))
    elif kind == "uniform":
        check_uniform(w, scale(fan_in, fan_out))
    elif kind == "truncated":
        check_truncated(w, scale(fan_in, fan_out))
    elif kind == "orthogonal":
        small = w.T @ w if fan_in >= fan_out else w @ w.T
        np.testing.assert_allclose(small, np.eye(min(fan_in, fan_out)), atol=1e-12)
    elif kind == "identity":
        np.testing.assert_array_equal(w, np.eye(fan_in, fan_out))
    else:  # pragma: no cover
        raise AssertionError(kind)


def test_every_initializer_and_alias_has_a_test():
    assert set(EXPECTED) == set(INITIALIZERS)
    assert ALIAS_TARGETS == ALIASES
    assert set(STD_SCHEMES) <= set(INITIALIZERS)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_initializer_matches_its_formula(name, shape):
    w = INITIALIZERS[name](*shape, rng(1))
    check_against_formula(name, w, *shape)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_draws_exactly_what_its_target_draws(alias):
    target = ALIAS_TARGETS[alias]
    assert canonical(alias) == target
    np.testing.assert_array_equal(get_initializer(alias)(30, 20, rng(5)), INITIALIZERS[target](30, 20, rng(5)))
    check_against_formula(target, get_initializer(alias)(300, 200, rng(5)), 300, 200)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_gain_multiplies_the_scale(name):
    base = INITIALIZERS[name](40, 30, rng(3))
    scaled = INITIALIZERS[name](40, 30, rng(3), gain=2.5)
    np.testing.assert_allclose(scaled, 2.5 * base, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_same_seed_same_weights_and_global_state_untouched(name):
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = INITIALIZERS[name](20, 10, rng(7))
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the global generator is never used
    np.random.seed(999)
    np.testing.assert_array_equal(INITIALIZERS[name](20, 10, rng(7)), a)  # and plays no part


@pytest.mark.parametrize("name", ["normal", "uniform", "truncated_normal"])
@pytest.mark.parametrize("std", [1e-4, 0.3, 5.0])
def test_std_schemes_use_the_given_std(name, std):
    w = INITIALIZERS[name](300, 200, rng(2), std=std)
    {"normal": check_normal, "truncated_normal": check_truncated}.get(name, lambda w, s: check_uniform(w, s * math.sqrt(3)))(w, std)


def test_uniform_default_is_pytorch_linear_bound():
    w = INITIALIZERS["uniform"](784, 100, rng(0))
    check_uniform(w, 1 / 28)


def test_truncated_normal_redraws_rather_than_clips():
    u = truncated_unit(rng(0), 200_000)
    assert np.abs(u).max() <= 2
    assert np.mean(np.abs(u) > 1.99) < 0.01  # no pile-up at the cut
    assert u.std() == pytest.approx(TRUNC_STD_2SIGMA, rel=5e-3)
    # The constant is the std of N(0,1) truncated to [-2, 2]: 1 - 2·2·φ(2)/(2Φ(2)-1).
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert TRUNC_STD_2SIGMA == pytest.approx(math.sqrt(1 - 4 * phi2 / mass), rel=1e-15)


@pytest.mark.parametrize("name", ["he_normal", "he_uniform"])
def test_he_fan_out_mode(name):
    w = INITIALIZERS[name](150, 400, rng(4), mode="fan_out")
    kind, scale = EXPECTED[name]
    (check_normal if kind == "normal" else check_uniform)(w, scale(400, 150))
    with pytest.raises(EngineError, match="fan mode"):
        INITIALIZERS[name](10, 10, rng(), mode="fan_avg")


@pytest.mark.parametrize("shape", [(64, 64), (100, 30), (30, 100), (1, 5), (5, 1)])
def test_orthogonal_shape_gain_and_sign_fix(shape):
    fan_in, fan_out = shape
    w = INITIALIZERS["orthogonal"](fan_in, fan_out, rng(8), gain=1.7)
    small = w.T @ w if fan_in >= fan_out else w @ w.T
    np.testing.assert_allclose(small, 1.7**2 * np.eye(min(shape)), atol=1e-12)
    # The sign fix makes Q the unique factor with R's diagonal positive: Qᵀ·A is upper
    # triangular with a positive diagonal, A the Gaussian the generator drew.
    rows, cols = max(shape), min(shape)
    a = rng(8).standard_normal((rows, cols))
    q = (w if fan_in >= fan_out else w.T) / 1.7
    r = q.T @ a
    np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-10)
    assert np.all(np.diag(r) > 0)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_identity_is_a_partial_identity(shape):
    w = INITIALIZERS["identity"](*shape, rng(), gain=0.5)
    expected = np.zeros(shape)
    for k in range(min(shape)):
        expected[k, k] = 0.5
    np.testing.assert_array_equal(w, expected)


def test_constant_value():
    np.testing.assert_array_equal(INITIALIZERS["constant"](2, 3, rng(), value=0.25, gain=2.0), np.full((2, 3), 0.5))


GAINS = {
    "linear": 1.0,
    "sigmoid": 1.0,
    "tanh": 5 / 3,
    "relu": math.sqrt(2),
    "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
    "selu": 0.75,
    "elu": 1.0,
    "gelu": 1.0,
    "softsign": 1.0,
}


def test_calculate_gain_covers_every_activation():
    from initlab.engine.activations import ACTIVATIONS

    assert set(GAINS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(GAINS))
def test_calculate_gain_matches_pytorch(name):
    assert calculate_gain(name) == pytest.approx(GAINS[name], rel=1e-15)


def test_leaky_relu_gain_uses_the_slope():
    assert calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04), rel=1e-15)
    assert calculate_gain("leaky_relu", 0.0) == pytest.approx(math.sqrt(2), rel=1e-15)


@pytest.mark.parametrize("name", ["swish", "Relu", None])
def test_calculate_gain_unknown_activation(name):
    with pytest.raises(EngineError, match="unknown activation"):
        calculate_gain(name)


@pytest.mark.parametrize("name", ["he_nomal", "lsuvv", "", None, ["normal"]])
def test_unknown_scheme_is_an_engine_error(name):
    with pytest.raises(EngineError, match="unknown init scheme"):
        get_initializer(name)


def test_unknown_scheme_suggests_the_closest():
    with pytest.raises(EngineError, match="did you mean 'he_normal'"):
        canonical("he_nomal")


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize(
    "fans, word",
    [((0, 3), "fan_in"), ((3, -1), "fan_out"), ((2.5, 3), "fan_in"), (("4", 3), "fan_in"), ((None, 3), "fan_in"), ((3, True), "fan_out")],
)
def test_bad_fans_are_engine_errors(name, fans, word):
    with pytest.raises(EngineError, match=word):
        INITIALIZERS[name](*fans, rng())


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize("gain", [float("nan"), float("inf"), "x", None])
def test_bad_gain_is_an_engine_error(name, gain):
    with pytest.raises(EngineError, match="gain"):
        INITIALIZERS[name](3, 3, rng(), gain=gain)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_a_generator_is_required(name):
    with pytest.raises(EngineError, match="Generator"):
        INITIALIZERS[name](3, 3, None)
    with pytest.raises(EngineError, match="Generator"):
        INITIALIZERS[name](3, 3, np.random.RandomState(0))


@pytest.mark.parametrize("name", STD_SCHEMES)
@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf"), "big"])
def test_impossible_std_is_an_engine_error(name, std):
    with pytest.raises(EngineError, match="std"):
        INITIALIZERS[name](3, 3, rng(), std=std)


def test_integral_float_fans_are_accepted():
    assert INITIALIZERS["zeros"](3.0, np.int64(2), rng()).shape == (3, 2)
