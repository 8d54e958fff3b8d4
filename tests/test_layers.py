"""Layers: central finite-difference gradient checks in float64, BatchNorm/LayerNorm facts, errors.

A gradient entry passes when |analytic − numeric| ≤ 1e-6·max(|analytic|, |numeric|) + 1e-9:
a relative error below 1e-6, except for entries that are zero up to the differences' noise
(e.g. the bias of a Linear followed by BatchNorm, exactly 0 analytically). The whole gradient
vector must also agree to a relative error below 1e-6.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initlab.engine.activations import ACTIVATIONS
from initlab.engine.layers import ALIGN_BYTES, ActivationLayer, BatchNorm, LayerNorm, Linear, Parameter, pack
from initlab.engine.losses import LOSSES
from initlab.engine.model import InitSpec, build_mlp
from initlab.errors import EngineError

H = 1e-5  # central-difference step (float64: truncation ~H², round-off ~1e-16/H)
RTOL, ATOL = 1e-6, 1e-9
KINKED = {"relu", "leaky_relu", "elu", "selu", "softsign"}  # φ' or φ'' jumps at 0
MARGIN = 1e-2  # pre-activations of kinked φ stay this far from 0, so no step crosses the kink
NORMS = ["none", "batchnorm", "layernorm"]


def numeric_grad(f, array, h=H):
    """∂f/∂array by central differences of step ``h``, perturbing ``array`` in place and restoring it."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def assert_grad_close(analytic, numeric, what):
    diff = np.abs(analytic - numeric)
    bound = RTOL * np.maximum(np.abs(analytic), np.abs(numeric)) + ATOL
    worst = np.argmax(diff - bound)
    assert np.all(diff <= bound), (
        f"{what}: analytic {analytic.flat[worst]!r} vs numeric {numeric.flat[worst]!r} at {np.unravel_index(worst, diff.shape)}"
    )
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    assert np.linalg.norm(analytic - numeric) <= RTOL * scale + ATOL, what


# ---------------------------------------------------------------------------- model-level checks


def loss_targets(loss_name, rng, n, k):
    if loss_name == "cross_entropy":
        return rng.integers(0, k, n)
    return rng.standard_normal((n, k))


def kink_free_model(activation, norm, loss_name):
    """A small float64 model and batch whose pre-activations avoid φ's kink (by redrawing seeds)."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        model = build_mlp(4, 3, [5, 4], activation, InitSpec("xavier_normal", bias_std=0.5), rng,
                          batchnorm=norm == "batchnorm", layernorm=norm == "layernorm", dtype="float64")
        x = rng.standard_normal((6, 4))
        model.forward(x, train=True)
        if activation not in KINKED or all(np.abs(b.preact).min() > MARGIN for b in model.blocks):
            return model, x, loss_targets(loss_name, rng, 6, 3)
    raise AssertionError("no kink-free draw found")  # pragma: no cover


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_model_gradients_match_finite_differences(activation, norm, loss_name):
    model, x, target = kink_free_model(activation, norm, loss_name)
    loss = LOSSES[loss_name]()
    x = x.copy()

    def f():
        return loss.forward(model.forward(x, train=True), target)

    f()
    dx = model.backward(loss.backward())
    analytic = {p.name: p.grad.copy() for p in model.params()}
    for p in model.params():
        assert_grad_close(analytic[p.name], numeric_grad(f, p.data), f"{activation}/{norm}/{loss_name} {p.name}")
    assert_grad_close(dx, numeric_grad(f, x), f"{activation}/{norm}/{loss_name} input")


def test_every_norm_kind_and_loss_is_covered():
    assert set(LOSSES) == {"cross_entropy", "mse"}
    assert NORMS == ["none", "batchnorm", "layernorm"]


# ---------------------------------------------------------------------------- layer-level checks


def check_layer(layer, x, train=True):
    """Gradient check of one layer under the loss Σ out·R for a fixed random R."""
    r = np.random.default_rng(99).standard_normal(layer.forward(x, train).shape)

    def f():
        return float(np.sum(layer.forward(x, train) * r))

    f()
    dx = layer.backward(r.copy())
    analytic = {p.name: p.grad.copy() for p in layer.params()}
    for p in layer.params():
        assert_grad_close(analytic[p.name], numeric_grad(f, p.data), f"{layer!r} {p.name}")
    assert_grad_close(dx, numeric_grad(f, x), f"{layer!r} input")


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias):
    rng = np.random.default_rng(0)
    layer = Linear(rng.standard_normal((5, 3)), rng.standard_normal(3) if bias else None)
    check_layer(layer, rng.standard_normal((4, 5)))


def test_batchnorm_gradients_in_training_mode():
    rng = np.random.default_rng(1)
    layer = BatchNorm(4, np.float64)
    layer.gamma.data[:] = rng.uniform(0.5, 2, 4)
    layer.beta.data[:] = rng.standard_normal(4)
    check_layer(layer, rng.standard_normal((7, 4)) * 3 + 1)


def test_layernorm_gradients():
    rng = np.random.default_rng(2)
    layer = LayerNorm(5, np.float64)
    layer.gamma.data[:] = rng.uniform(0.5, 2, 5)
    layer.beta.data[:] = rng.standard_normal(5)
    check_layer(layer, rng.standard_normal((3, 5)) * 2 - 1)
    check_layer(layer, rng.standard_normal((3, 5)), train=False)  # same function in evaluation


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_layer_gradients(name):
    x = np.random.default_rng(3).standard_normal((4, 6)) * 2
    x[np.abs(x) < MARGIN] = 0.5  # away from kinks
    check_layer(ActivationLayer(ACTIVATIONS[name]), x)


# ---------------------------------------------------------------------------- layer behaviour


def test_linear_is_x_at_w_plus_b_with_fan_in_rows():
    W = np.arange(6.0).reshape(2, 3)  # fan_in 2, fan_out 3
    b = np.array([1.0, -1.0, 0.5])
    layer = Linear(W, b)
    assert (layer.fan_in, layer.fan_out) == (2, 3)
    np.testing.assert_array_equal(layer.forward(np.array([[1.0, 2.0]])), [[1.0 + 6, -1.0 + 9, 0.5 + 12]])
    assert [p.name for p in layer.params()] == ["linear.W", "linear.b"]


def test_linear_backward_without_input_gradient_fills_the_same_parameter_grads():
    rng = np.random.default_rng(4)
    layer = Linear(rng.standard_normal((5, 3)), np.zeros(3))
    x, d = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    layer.forward(x)
    dx = layer.backward(d)
    gW, gb = layer.W.grad.copy(), layer.b.grad.copy()
    layer.W.grad[:] = 0
    assert layer.backward(d, input_grad=False) is None
    np.testing.assert_array_equal(layer.W.grad, gW)
    np.testing.assert_array_equal(layer.b.grad, gb)
    np.testing.assert_allclose(dx, d @ layer.W.data.T)


@pytest.mark.parametrize("shape", [(100, 100, 100), (300, 784, 100), (4, 5, 3)])  # small and large products
def test_linear_input_grad_is_backwards_product_bit_for_bit_and_leaves_the_parameter_grads(shape):
    n, fan_in, fan_out = shape
    rng = np.random.default_rng(5)
    layer = Linear(rng.standard_normal((fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, np.float32))
    d = rng.standard_normal((n, fan_out)).astype(np.float32)
    layer.forward(rng.standard_normal((n, fan_in)).astype(np.float32))
    dx = layer.backward(d)
    layer.W.grad[:] = 7
    layer.b.grad[:] = 7
    np.testing.assert_array_equal(layer.input_grad(d), dx)
    assert (layer.W.grad == 7).all() and (layer.b.grad == 7).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Linear(np.ones((5, 3)), np.zeros(3)),
        lambda: BatchNorm(5, np.float64),
        lambda: LayerNorm(5, np.float64),
        lambda: ActivationLayer(ACTIVATIONS["tanh"]),
    ],
    ids=["linear", "batchnorm", "layernorm", "activation"],
)
def test_layers_never_modify_their_inputs(make):
    layer = make()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5))
    x_before = x.copy()
    out = layer.forward(x, True)
    d = rng.standard_normal(out.shape)
    d_before = d.copy()
    layer.backward(d)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(d, d_before)


def test_batchnorm_training_normalizes_with_biased_variance():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, 3)) * [1.0, 5.0, 0.1] + [2.0, -3.0, 0.0]
    bn = BatchNorm(3, np.float64)
    assert np.all(bn.gamma.data == 1) and np.all(bn.beta.data == 0) and bn.eps == 1e-5 and bn.momentum == 0.1
    y = bn.forward(x, train=True)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=0) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_and_evaluation():
    rng = np.random.default_rng(7)
    bn = BatchNorm(3, np.float64)
    batches = [rng.standard_normal((8, 3)) * 2 + 1 for _ in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for x in batches:
        bn.forward(x, train=True)
        mean = 0.9 * mean + 0.1 * x.mean(0)  # PyTorch: momentum 0.1 on the new value,
        var = 0.9 * var + 0.1 * x.var(0, ddof=1)  # running variance unbiased
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
    x = rng.standard_normal((5, 3))
    y = bn.forward(x, train=False)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)  # evaluation does not update them
    # evaluation is per example: one example alone gives the same row
    np.testing.assert_allclose(bn.forward(x[:1], train=False), y[:1], rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 0.37, 1.0, 8.0, 1e3])
def test_batchnorm_output_is_invariant_to_scaling_the_incoming_weights(scale):
    rng = np.random.default_rng(8)
    W, b, x = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal((16, 6))
    # With eps → 0 the invariance is exact; with the default eps it holds while scale²·Var ≫ eps.
    for eps, tol in [(1e-12, 1e-6), (1e-5, 1e-4 / min(scale, 1) ** 2)]:
        ref = BatchNorm(4, np.float64, eps=eps).forward(Linear(W, b).forward(x), train=True)
        out = BatchNorm(4, np.float64, eps=eps).forward(Linear(W * scale, b * scale).forward(x), train=True)
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-4, max_value=1e4), st.integers(0, 2**32 - 1))
def test_batchnorm_scale_invariance_for_any_positive_factor(scale, seed):
    rng = np.random.default_rng(seed)
    W, x = rng.standard_normal((5, 3)), rng.standard_normal((12, 5))
    ref = BatchNorm(3, np.float64, eps=1e-30).forward(x @ W, train=True)
    out = BatchNorm(3, np.float64, eps=1e-30).forward(Linear(W * scale).forward(x), train=True)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)  # eps ≪ scale²·Var: only rounding is left


def test_layernorm_is_per_example_and_the_same_in_evaluation():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6)) * 3 + 2
    ln = LayerNorm(6, np.float64)
    y = ln.forward(x, train=True)
    expected = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(ln.forward(x, train=False), y)
    np.testing.assert_allclose(ln.forward(x[2:3], train=True), y[2:3], rtol=1e-12)


def test_activation_layer_caches_preactivation_and_output():
    layer = ActivationLayer(ACTIVATIONS["relu"])
    z = np.array([[-1.0, 2.0]])
    a = layer.forward(z)
    assert layer.z is z and layer.a is a
    np.testing.assert_array_equal(layer.backward(np.array([[3.0, 4.0]])), [[0.0, 4.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameters_and_outputs_keep_the_dtype(dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 4)).astype(dtype)
    for layer in [Linear(np.ones((4, 4), dtype), np.zeros(4, dtype)), BatchNorm(4, dtype), LayerNorm(4, dtype)]:
        y = layer.forward(x, True)
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == dtype
        assert all(p.data.dtype == p.grad.dtype == dtype for p in layer.params())
    bn = BatchNorm(4, dtype)
    bn.forward(x, True)
    assert bn.running_mean.dtype == bn.running_var.dtype == dtype


def test_parameter_grad_buffer_matches_data():
    p = Parameter("w", np.ones((2, 3), np.float32))
    assert p.grad.shape == (2, 3) and p.grad.dtype == np.float32 and np.all(p.grad == 0)
    assert "w" in repr(p)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "x",
    [np.ones((3, 4)), np.ones(5), np.ones((2, 5, 1)), [[1.0] * 5], None],
    ids=["wrong-width", "1-d", "3-d", "list", "none"],
)
@pytest.mark.parametrize(
    "make",
    [lambda: Linear(np.ones((5, 2))), lambda: BatchNorm(5, np.float64), lambda: LayerNorm(5, np.float64)],
    ids=["linear", "batchnorm", "layernorm"],
)
def test_wrong_input_shape_is_an_engine_error(make, x):
    layer = make()
    with pytest.raises(EngineError, match=r"expects input of shape \(n, 5\)"):
        layer.forward(x, True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Linear(np.ones((5, 2))),
        lambda: BatchNorm(2, np.float64),
        lambda: LayerNorm(2, np.float64),
        lambda: ActivationLayer(ACTIVATIONS["relu"]),
    ],
    ids=["linear", "batchnorm", "layernorm", "activation"],
)
def test_backward_before_forward_or_with_wrong_shape_is_an_engine_error(make):
    layer = make()
    with pytest.raises(EngineError, match="before"):
        layer.backward(np.ones((3, 2)))
    n_in = 5 if isinstance(layer, Linear) else 2
    layer.forward(np.ones((3, n_in)) * np.arange(3)[:, None] + np.arange(n_in), True)
    for bad in [np.ones((4, 2)), np.ones((3, 3)), np.ones((1, 2)), np.ones(2)]:
        with pytest.raises(EngineError, match="dout"):
            layer.backward(bad)


def test_batchnorm_errors():
    with pytest.raises(EngineError, match="at least 2"):
        BatchNorm(3, np.float64).forward(np.ones((1, 3)), train=True)
    BatchNorm(3, np.float64).forward(np.ones((1, 3)), train=False)  # fine in evaluation
    bn = BatchNorm(3, np.float64)
    bn.forward(np.ones((4, 3)), train=False)
    with pytest.raises(EngineError, match="training forward"):
        bn.backward(np.ones((4, 3)))
    for momentum in [-0.1, 1.5, float("nan"), "x"]:
        with pytest.raises(EngineError, match="momentum"):
            BatchNorm(3, momentum=momentum)
    for eps in [0.0, -1e-5, float("nan")]:
        with pytest.raises(EngineError, match="eps"):
            BatchNorm(3, eps=eps)
        with pytest.raises(EngineError, match="eps"):
            LayerNorm(3, eps=eps)


@pytest.mark.parametrize(
    "W, b",
    [
        (np.ones(3), None),
        (np.ones((2, 3), dtype=int), None),
        ([[1.0, 2.0]], None),
        (np.ones((2, 3)), np.ones(2)),
        (np.ones((2, 3)), np.ones(3, np.float32)),
    ],
    ids=["1-d", "int", "list", "bias-size", "bias-dtype"],
)
def test_bad_linear_parameters_are_engine_errors(W, b):
    with pytest.raises(EngineError, match="weights|bias"):
        Linear(W, b)


def test_pack_keeps_values_aligns_and_shares_storage():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((3, 5), (5,), (17, 2), (1,))]
    params = [Parameter(f"p{i}", a.copy()) for i, a in enumerate(arrays)]
    params[2].grad[...] = 7.0
    packed = pack(params)
    assert list(packed) == params
    for p, a in zip(packed, arrays):
        np.testing.assert_array_equal(p.data, a)
        assert p.data.ctypes.data % ALIGN_BYTES == 0 and p.grad.ctypes.data % ALIGN_BYTES == 0
        assert np.shares_memory(p.data, packed.flat.data) and np.shares_memory(p.grad, packed.flat.grad)
    assert (packed[2].grad == 7.0).all() and not packed[0].grad.any()
    packed.flat.data += 1  # one pass over the flat array moves every parameter
    np.testing.assert_array_equal(packed[1].data, arrays[1] + 1)


@pytest.mark.parametrize("bad", ["twice", "dtypes"])
def test_pack_refuses_a_parameter_twice_or_mixed_dtypes(bad):
    p = Parameter("p", np.zeros(3, np.float32))
    other = p if bad == "twice" else Parameter("q", np.zeros(3, np.float64))
    with pytest.raises(EngineError, match="distinct and of one dtype"):
        pack([p, other])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalization_in_place_is_the_formula_bit_for_bit(dtype):
    # The layers compute (x − μ)/√(σ²+ε)·γ + β step by step in one array; the formula's own
    # temporaries must give the same bits (a reordered product or a fused multiply-add would not).
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 20)) * 3 + 1).astype(dtype)
    bn = BatchNorm(20, dtype, eps=1e-5)
    bn.gamma.data[...] = rng.uniform(0.5, 2, 20)
    bn.beta.data[...] = rng.standard_normal(20)
    bn.running_mean[...] = rng.standard_normal(20)
    bn.running_var[...] = rng.uniform(0.1, 3, 20)
    g, b = bn.gamma.data, bn.beta.data
    want = ((x - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)) * g + b
    np.testing.assert_array_equal(bn.forward(x, train=False), want, strict=True)
    y = bn.forward(x, train=True)
    np.testing.assert_array_equal(y, bn.xn * g + b, strict=True)
    ln = LayerNorm(20, dtype)
    ln.gamma.data[...], ln.beta.data[...] = g, b
    np.testing.assert_array_equal(ln.forward(x), ln.xn * g + b, strict=True)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_backward_reuses_only_its_own_arrays(activation):
    # MLP.backward lets φ's backward write into the arrays the layers hand each other (one allocation
    # fewer a layer): the same gradients as without, and the caller's dout left as it was.
    from initlab.engine.model import InitSpec, build_mlp

    rng = np.random.default_rng(0)
    model = build_mlp(12, 3, [8, 8, 8], activation, InitSpec("he_normal"), rng)
    x, dout = rng.standard_normal((5, 12)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    model.forward(x, train=True)
    kept = dout.copy()
    dx = model.backward(dout)
    grads = [p.grad.copy() for p in model.params()]
    np.testing.assert_array_equal(dout, kept, strict=True)
    d = dout  # the same pass, layer by layer, nothing overwritten
    for layer in model._layers[::-1]:
        d = layer.backward(d)
    np.testing.assert_array_equal(d, dx, strict=True)
    for g, p in zip(grads, model.params()):
        np.testing.assert_array_equal(g, p.grad, strict=True)
    act = model.blocks[-1].act
    z_before = act.z.copy()
    mine = rng.standard_normal(act.z.shape).astype(np.float32)
    out = act.backward(mine, overwrite=True)
    assert out is mine and np.array_equal(act.z, z_before)  # overwrite: dout's memory, never z's
