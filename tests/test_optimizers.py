"""Optimizers: two steps on a tiny problem against each published update rule, in plain floats."""
import math

import numpy as np
import pytest

from initlab.engine.layers import Parameter
from initlab.engine.optimizers import OPTIMIZERS, OPTIONS, make_optimizer
from initlab.errors import EngineError

LR, WD = 0.1, 0.05
HYPER = {"momentum": 0.8, "alpha": 0.9, "beta1": 0.85, "beta2": 0.95, "eps": 1e-3}
START = {"w": [1.0, -2.0], "b": [0.5]}
# The tiny problem's gradient, g = c·w + d element-wise (a separable quadratic).
C = {"w": [1.0, 3.0], "b": [2.0]}
D = {"w": [0.2, -0.1], "b": [0.3]}


def grad(name, values):
    return [c * v + d for c, v, d in zip(C[name], values, D[name])]


# Each rule for one scalar weight: (w, g, state dict, step t) -> new w; written from the
# published definitions (PyTorch's torch.optim docs; Loshchilov & Hutter for AdamW).
def sgd(w, g, s, t):
    return w - LR * g


def momentum(w, g, s, t):
    s["v"] = HYPER["momentum"] * s.get("v", 0.0) + g
    return w - LR * s["v"]


def nesterov(w, g, s, t):
    s["v"] = HYPER["momentum"] * s.get("v", 0.0) + g
    return w - LR * (g + HYPER["momentum"] * s["v"])


def adagrad(w, g, s, t):
    s["h"] = s.get("h", 0.0) + g * g
    return w - LR * g / (math.sqrt(s["h"]) + HYPER["eps"])


def rmsprop(w, g, s, t):
    a = HYPER["alpha"]
    s["h"] = a * s.get("h", 0.0) + (1 - a) * g * g
    return w - LR * g / (math.sqrt(s["h"]) + HYPER["eps"])


def adam(w, g, s, t):
    b1, b2 = HYPER["beta1"], HYPER["beta2"]
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
    return w - LR * m_hat / (math.sqrt(v_hat) + HYPER["eps"])


RULES = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad, "rmsprop": rmsprop,
         "adam": adam, "adamw": adam}
DECOUPLED = {"adamw"}


def by_hand(name, weight_decay, steps=2):
    values = {k: list(v) for k, v in START.items()}
    states = {k: [{} for _ in v] for k, v in START.items()}
    for t in range(1, steps + 1):
        for k in values:
            g = grad(k, values[k])
            new = []
            for i, (w, gi) in enumerate(zip(values[k], g)):
                if name in DECOUPLED:
                    w = w * (1 - LR * weight_decay)
                else:
                    gi = gi + weight_decay * w
                new.append(RULES[name](w, gi, states[k][i], t))
            values[k] = new
    return values


def with_engine(name, weight_decay, steps=2, dtype=np.float64):
    params = [Parameter(k, np.array(v, dtype=dtype)) for k, v in START.items()]
    opt = make_optimizer(name, LR, weight_decay, **HYPER)
    for _ in range(steps):
        for p in params:
            p.grad[:] = grad(p.name, p.data.tolist())
        opt.step(params)
    return {p.name: p.data for p in params}


def test_every_optimizer_has_a_hand_rule():
    assert set(RULES) == set(OPTIMIZERS) == set(OPTIONS)


@pytest.mark.parametrize("weight_decay", [0.0, WD])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_two_steps_match_the_published_rule(name, weight_decay):
    got, expected = with_engine(name, weight_decay), by_hand(name, weight_decay)
    for k in START:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-13, atol=1e-15)
    assert not np.allclose(got["w"], START["w"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_weight_decay_changes_the_result(name):
    a, b = with_engine(name, 0.0), with_engine(name, WD)
    assert not np.allclose(a["w"], b["w"], rtol=1e-9)


def test_coupled_and_decoupled_decay_differ_for_adam():
    adam_l2, adamw = with_engine("adam", WD), with_engine("adamw", WD)
    assert not np.allclose(adam_l2["w"], adamw["w"], rtol=1e-9)
    np.testing.assert_array_equal(with_engine("adam", 0.0)["w"], with_engine("adamw", 0.0)["w"])


def test_literal_values():
    # SGD: w − 0.1·(c·w + d): 1 − 0.1·1.2 = 0.88, −2 − 0.1·(−6.1) = −1.39
    np.testing.assert_allclose(with_engine("sgd", 0.0, steps=1)["w"], [0.88, -1.39], rtol=1e-15)
    # Adam's first step moves each weight by lr·|g|/(|g| + eps): m̂ = g and v̂ = g².
    first = with_engine("adam", 0.0, steps=1)["w"]
    np.testing.assert_allclose(first, [1 - 0.1 * 1.2 / 1.201, -2 + 0.1 * 6.1 / 6.101], rtol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_parameters_are_updated_in_place_and_stay_float32(name):
    params = [Parameter("w", np.array([1.0, -2.0], np.float32))]
    buffer = params[0].data
    opt = make_optimizer(name, LR, WD, **HYPER)
    assert opt.state == []  # state is created lazily
    params[0].grad[:] = [0.5, -0.25]
    opt.step(params)
    assert params[0].data is buffer and buffer.dtype == np.float32
    assert len(opt.state) == 1
    assert all(v.dtype == np.float32 for v in opt.state[0].values())
    expected = by_hand_single(name, [1.0, -2.0], [0.5, -0.25])
    np.testing.assert_allclose(buffer, expected, rtol=1e-6, atol=1e-7)


def by_hand_single(name, w, g, weight_decay=WD):
    out = []
    for wi, gi in zip(w, g):
        if name in DECOUPLED:
            wi = wi * (1 - LR * weight_decay)
        else:
            gi = gi + weight_decay * wi
        out.append(RULES[name](wi, gi, {}, 1))
    return out


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_parameter_list_must_not_change(name):
    opt = make_optimizer(name, LR)
    p = [Parameter("a", np.ones(2)), Parameter("b", np.ones(3))]
    opt.step(p)
    with pytest.raises(EngineError, match="same list"):
        opt.step(p[:1])


def test_make_optimizer_passes_only_the_options_each_takes():
    opt = make_optimizer("momentum", 0.5, momentum=0.7, beta1=0.1, eps=None)
    assert opt.momentum == 0.7 and opt.lr == 0.5 and not hasattr(opt, "beta1")
    adam = make_optimizer("adam", 0.001, beta1=None)
    assert adam.beta1 == 0.9 and adam.beta2 == 0.999 and adam.eps == 1e-8
    for name in OPTIMIZERS:
        assert type(make_optimizer(name, 0.01)) is OPTIMIZERS[name]
        assert name in repr(make_optimizer(name, 0.01)).lower()


@pytest.mark.parametrize("name", ["sgdd", "Adam", "", None])
def test_unknown_optimizer_is_an_engine_error(name):
    with pytest.raises(EngineError, match="unknown optimizer"):
        make_optimizer(name, 0.01)


def test_unknown_optimizer_suggests_the_closest():
    with pytest.raises(EngineError, match="did you mean 'adam'"):
        make_optimizer("adma", 0.01)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), "fast", None])
def test_impossible_learning_rate_is_an_engine_error(name, lr):
    with pytest.raises(EngineError, match="lr"):
        make_optimizer(name, lr)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("wd", [-0.1, float("nan"), float("inf")])
def test_impossible_weight_decay_is_an_engine_error(name, wd):
    with pytest.raises(EngineError, match="weight_decay"):
        make_optimizer(name, 0.01, wd)


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("momentum", "momentum", -0.1),
        ("nesterov", "momentum", 1.5),
        ("adagrad", "eps", -1e-8),
        ("rmsprop", "alpha", 1.1),
        ("rmsprop", "eps", float("nan")),
        ("adam", "beta1", 1.0),
        ("adam", "beta2", -0.5),
        ("adamw", "eps", "tiny"),
    ],
)
def test_impossible_hyperparameters_are_engine_errors(name, option, value):
    with pytest.raises(EngineError, match=option):
        make_optimizer(name, 0.01, **{option: value})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_a_models_flat_parameters_are_updated_exactly_as_one_by_one(name, weight_decay):
    """model.params() lives in flat storage (engine.layers.pack): the optimizer updates it in one
    pass per operation; per parameter, as for a plain list, the numbers are the same bit for bit."""
    from initlab.engine.losses import SoftmaxCrossEntropy
    from initlab.engine.model import build_mlp

    def net():
        return build_mlp(12, 3, [7, 9], "tanh", rng=np.random.default_rng(1), batchnorm=True, residual=False)

    flat_model, plain_model = net(), net()
    flat_params, plain_params = flat_model.params(), list(plain_model.params())
    assert hasattr(flat_params, "flat") and not hasattr(plain_params, "flat")
    opts = [make_optimizer(name, 0.05, weight_decay) for _ in range(2)]
    rng = np.random.default_rng(2)
    for _ in range(5):
        x, y = rng.standard_normal((16, 12)).astype(np.float32), rng.integers(0, 3, 16)
        for model, params, opt in ((flat_model, flat_params, opts[0]), (plain_model, plain_params, opts[1])):
            loss = SoftmaxCrossEntropy()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step(params)
    assert len(opts[0].state) == 1 and len(opts[1].state) == len(plain_params)
    for a, b in zip(flat_params, plain_params):
        np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)
    pad = np.ones(flat_params.flat.data.size, bool)  # the gaps between parameters stay zero
    for p in flat_params:
        start = (p.data.ctypes.data - flat_params.flat.data.ctypes.data) // p.data.itemsize
        pad[start:start + p.data.size] = False
    assert pad.any() and not flat_params.flat.data[pad].any()


def _formula(name, w, g, s, t, lr=0.01, mu=0.9, alpha=0.99, b1=0.9, b2=0.999, eps=1e-8):
    """Each update rule as one NumPy expression with temporaries, in float32 (the engine's order)."""
    f = w.dtype.type
    if name == "sgd":
        return w - f(lr) * g
    if name in ("momentum", "nesterov"):
        s["v"] = s.get("v", np.zeros_like(w)) * f(mu) + g
        return w - f(lr) * (s["v"] if name == "momentum" else g + f(mu) * s["v"])
    if name in ("adagrad", "rmsprop"):
        h = s.get("h", np.zeros_like(w))
        s["h"] = h + g * g if name == "adagrad" else h * f(alpha) + f(1 - alpha) * g * g
        return w - f(lr) * g / (np.sqrt(s["h"]) + f(eps))
    s["m"] = s.get("m", np.zeros_like(w)) * f(b1) + f(1 - b1) * g
    s["v"] = s.get("v", np.zeros_like(w)) * f(b2) + f(1 - b2) * g * g
    return w - f(lr / (1 - b1**t)) * s["m"] / (np.sqrt(s["v"] * f(1.0 / (1 - b2**t))) + f(eps))


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_in_place_updates_equal_the_formulas_bit_for_bit(name):
    """The optimizers update through scratch arrays, in place: the same numbers as the formulas
    evaluated with temporaries, to the last bit (float32, gradients across 12 orders of magnitude)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(5000).astype(np.float32)
    p, state, expected = Parameter("w", w.copy()), {}, w.copy()
    opt = make_optimizer(name, 0.01)
    for t in range(1, 6):
        g = (rng.standard_normal(5000) * 10.0 ** rng.integers(-10, 2, 5000)).astype(np.float32)
        p.grad[...] = g
        opt.step([p])
        expected = _formula(name, expected, g, state, t)
        np.testing.assert_array_equal(p.data, expected)


class _Counting(np.ndarray):
    """An array that counts the NumPy operations (ufunc calls, in place or not) made on it."""

    calls = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _Counting.calls += 1
        plain = [x.view(np.ndarray) if isinstance(x, _Counting) else x for x in inputs]
        out = kwargs.get("out")
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, _Counting) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        return out[0] if out else result  # `v *= x` rebinds v to this: keep it counting


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_passes_count_each_rules_operations(name):
    # UPDATE_PASSES ranks a sweep's points by cost (initlab/sweeps/order.py): it must be what the update does.
    from initlab.engine.optimizers import UPDATE_PASSES

    w = np.ones(10, np.float32).view(_Counting)
    p = Parameter("w", w)
    p.grad = np.full(10, 0.5, np.float32).view(_Counting)
    opt = make_optimizer(name, 0.01)
    opt.step([p])  # the first step creates state and scratch arrays
    _Counting.calls = 0
    opt.step([p])
    assert _Counting.calls == UPDATE_PASSES[name]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_fresh_state_gets_fresh_scratch_arrays(name):
    # Scratch arrays are kept per state entry; a new state (new parameters) must not inherit old ones.
    opt = make_optimizer(name, 0.01)
    small = Parameter("a", np.ones(3, np.float32))
    opt.step([small])
    opt.state = []  # start over, as for another model
    big = Parameter("b", np.ones((4, 5), np.float32))
    big.grad[...] = 0.5
    opt.step([big])
    assert big.data.shape == (4, 5) and np.all(big.data < 1)
