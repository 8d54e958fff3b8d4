"""The MLP: structure, per-layer access, dtypes (no float64 leak), seeding, init, training, errors."""
import math

import numpy as np
import pytest

from initlab.engine.activations import ACTIVATIONS
from initlab.engine.clipping import clip_grad_norm
from initlab.engine.initializers import INITIALIZERS, STD_SCHEMES
from initlab.engine.layers import ActivationLayer, BatchNorm, LayerNorm, Linear
from initlab.engine.losses import LOSSES
from initlab.engine.model import DTYPES, InitSpec, build_mlp
from initlab.engine.optimizers import OPTIMIZERS, make_optimizer
from initlab.errors import EngineError


def small(activation="relu", seed=0, **kw):
    return build_mlp(6, 3, [8, 5], activation, kw.pop("init", InitSpec("he_normal")), np.random.default_rng(seed), **kw)


def batch(seed=1, n=10, loss="cross_entropy"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = rng.integers(0, 3, n) if loss == "cross_entropy" else rng.standard_normal((n, 3))
    return x, y


def test_structure_and_parameter_order():
    m = small(batchnorm=True)
    assert len(m.blocks) == 2 and m.n_in == 6 and m.head.fan_out == 3
    kinds = [type(layer) for layer in m._layers]
    assert kinds == [Linear, BatchNorm, ActivationLayer, Linear, BatchNorm, ActivationLayer, Linear]
    names = [p.name for p in m.params()]
    assert names == ["layer1.W", "layer1.b", "bn1.gamma", "bn1.beta", "layer2.W", "layer2.b", "bn2.gamma", "bn2.beta",
                     "output.W", "output.b"]
    assert m.params() is m.params()  # one explicit list, the optimizer's
    assert [type(layer) for layer in small(layernorm=True).blocks[0].layers()] == [Linear, LayerNorm, ActivationLayer]
    assert [p.name for p in small(bias=False).params()] == ["layer1.W", "layer2.W", "output.W"]
    assert "Linear(6, 8" in repr(small())


def test_no_hidden_layers_is_a_linear_model():
    m = build_mlp(4, 2, [], "relu", rng=np.random.default_rng(0))
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(m.forward(x), x @ m.head.W.data + m.head.b.data)
    assert m.backward(np.ones((3, 2), np.float32)).shape == (3, 4)


@pytest.mark.parametrize("norm", [None, "batchnorm", "layernorm"])
def test_per_layer_preactivations_outputs_and_gradients(norm):
    m = small("tanh", batchnorm=norm == "batchnorm", layernorm=norm == "layernorm", dtype="float64")
    x, y = batch()
    loss = LOSSES["cross_entropy"]()
    h = x
    expected_pre, expected_out = [], []
    for b in m.blocks:
        z = h @ b.linear.W.data + b.linear.b.data
        if norm == "batchnorm":
            z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
        elif norm == "layernorm":
            z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-5)
        h = np.tanh(z)
        expected_pre.append(z)
        expected_out.append(h)
    loss.forward(m.forward(x, train=True), y)
    m.backward(loss.backward())
    for b, z, a in zip(m.blocks, expected_pre, expected_out):
        np.testing.assert_allclose(b.preact, z, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.output, a, rtol=1e-10, atol=1e-12)
        assert b.linear.W.grad.shape == b.linear.W.data.shape and np.any(b.linear.W.grad != 0)


ALL_ACTIVATIONS = sorted(ACTIVATIONS)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("norm", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_float32_model_has_no_float64_anywhere(activation, norm, loss_name):
    m = small(activation, batchnorm=norm == "batchnorm", layernorm=norm == "layernorm")
    x, y = batch(loss=loss_name)  # float64 inputs and targets: the model casts, nothing leaks
    loss = LOSSES[loss_name]()
    opt = make_optimizer("adam", 0.01, weight_decay=0.01)
    out = m.forward(x, train=True)
    loss.forward(out, y)
    dx = m.backward(loss.backward())
    clip_grad_norm(m.params(), 0.1)
    opt.step(m.params())
    arrays = [out, dx] + [b.preact for b in m.blocks] + [b.output for b in m.blocks]
    arrays += [a for p in m.params() for a in (p.data, p.grad)]
    arrays += [v for s in opt.state for v in s.values()]
    for layer in m._layers:
        arrays += [v for v in vars(layer).values() if isinstance(v, np.ndarray)]
    assert all(a.dtype == np.float32 for a in arrays), {a.dtype for a in arrays}
    assert m.forward(x, train=False).dtype == np.float32


def test_float64_model_is_float64_throughout():
    m = small(dtype="float64", batchnorm=True)
    x, y = batch()
    out = m.forward(x.astype(np.float32))
    assert out.dtype == np.float64
    assert all(p.data.dtype == np.float64 for p in m.params())
    assert set(DTYPES) == {"float32", "float64"}


def test_forward_does_not_modify_its_input_and_casts_a_copy():
    m = small()
    x, _ = batch()
    before = x.copy()
    m.forward(x)
    np.testing.assert_array_equal(x, before)
    assert m.blocks[0].linear.x is not x and m.blocks[0].linear.x.dtype == np.float32


def test_input_grad_false_skips_only_the_input_gradient():
    m = small(batchnorm=True)
    x, y = batch()
    loss = LOSSES["cross_entropy"]()
    loss.forward(m.forward(x), y)
    d = loss.backward()
    assert m.backward(d).shape == x.shape
    full = [p.grad.copy() for p in m.params()]
    for p in m.params():
        p.grad[...] = 0
    assert m.backward(d, input_grad=False) is None
    for g, p in zip(full, m.params()):
        np.testing.assert_array_equal(p.grad, g)


def test_same_seed_same_model_and_global_numpy_state_untouched():
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    for pa, pb in zip(a.params(), b.params()):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert not np.array_equal(a.blocks[0].linear.W.data, c.blocks[0].linear.W.data)


def test_init_applies_to_every_linear_including_the_output_layer():
    m = build_mlp(400, 300, [500], "relu", InitSpec("he_normal"), np.random.default_rng(0), dtype="float64")
    for lin in [m.blocks[0].linear, m.head]:
        assert lin.W.data.std() == pytest.approx(math.sqrt(2 / lin.fan_in), rel=0.02)
        assert np.all(lin.b.data == 0)
    m = build_mlp(3, 3, [3], "linear", InitSpec("identity"), np.random.default_rng(0))
    np.testing.assert_array_equal(m.head.W.data, np.eye(3))


def test_textbook_std_and_bias_std():
    init = InitSpec("normal", std=0.01, bias_std=0.5)
    m = build_mlp(300, 10, [300], "sigmoid", init, np.random.default_rng(0), dtype="float64")
    assert m.blocks[0].linear.W.data.std() == pytest.approx(0.01, rel=0.02)
    assert m.blocks[0].linear.b.data.std() == pytest.approx(0.5, rel=0.3)


@pytest.mark.parametrize(
    "activation, scheme, factor",
    [
        ("tanh", "xavier_normal", 5 / 3),
        ("relu", "xavier_uniform", math.sqrt(2)),
        ("relu", "he_normal", 1.0),  # He already holds ReLU's √2
        ("tanh", "kaiming_uniform", 5 / 3 / math.sqrt(2)),
        ("selu", "lecun_normal", 0.75),
    ],
)
def test_gain_auto_uses_pytorch_calculate_gain(activation, scheme, factor):
    def w(gain):
        m = build_mlp(4, 4, [4], activation, InitSpec(scheme, gain=gain), np.random.default_rng(0), dtype="float64")
        return m.blocks[0].linear.W.data

    np.testing.assert_allclose(w("auto"), factor * w(None), rtol=1e-12)
    np.testing.assert_allclose(w(2.0), 2.0 * w(None), rtol=1e-12)


def test_every_initializer_builds_a_model():
    for scheme in INITIALIZERS:
        init = InitSpec(scheme, std=0.1 if scheme in STD_SCHEMES else None)
        m = build_mlp(5, 2, [4], "tanh", init, np.random.default_rng(0))
        assert m.forward(np.ones((2, 5))).shape == (2, 2)


def test_batchnorm_model_evaluation_uses_running_statistics():
    m = small(batchnorm=True, dtype="float64")
    x, _ = batch(n=20)
    train_out = m.forward(x, train=True)
    eval_out = m.forward(x, train=False)
    assert not np.allclose(train_out, eval_out)
    bn = m.blocks[0].norm
    z = x @ m.blocks[0].linear.W.data + m.blocks[0].linear.b.data
    np.testing.assert_allclose(m.blocks[0].preact, (z - bn.running_mean) / np.sqrt(bn.running_var + 1e-5), rtol=1e-10)
    ln = small(layernorm=True, dtype="float64")
    np.testing.assert_array_equal(ln.forward(x, train=True), ln.forward(x, train=False))


def test_zero_init_units_stay_identical_forever():
    m = build_mlp(5, 3, [6, 6], "tanh", InitSpec("constant", value=0.1), np.random.default_rng(0), dtype="float64")
    x, y = batch(n=16)
    x = x[:, :5]
    loss, opt = LOSSES["cross_entropy"](), make_optimizer("sgd", 0.5)
    for _ in range(30):
        loss.forward(m.forward(x), y)
        m.backward(loss.backward(), input_grad=False)
        opt.step(m.params())
    for b in m.blocks:
        W = b.linear.W.data
        assert np.ptp(W, axis=1).max() < 1e-12  # every column (unit) is the same
        assert np.ptp(b.output, axis=1).max() < 1e-12
    assert np.ptp(m.head.W.data) > 1e-3  # the output layer did move


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_a_small_classifier(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 3))).argmax(1)
    m = small("relu")
    loss, opt = LOSSES["cross_entropy"](), make_optimizer(name, {"adam": 0.01, "adamw": 0.01, "rmsprop": 0.003}.get(name, 0.1))
    first = loss.forward(m.forward(x), y)
    for _ in range(150):
        loss.forward(m.forward(x), y)
        m.backward(loss.backward(), input_grad=False)
        opt.step(m.params())
    assert loss.forward(m.forward(x), y) < 0.5 * first


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("x", [np.ones((4, 5)), np.ones(6), np.ones((2, 6, 1)), [[0.0] * 6], None])
def test_wrong_input_is_an_engine_error(x):
    with pytest.raises(EngineError, match=r"model expects input of shape \(n, 6\)"):
        small().forward(x)


def test_wrong_dout_is_an_engine_error():
    m = small()
    m.forward(np.ones((4, 6)))
    with pytest.raises(EngineError, match="output: backward expects dout of shape"):
        m.backward(np.ones((4, 2), np.float32))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"widths": [8, 0]}, "width"),
        ({"widths": [8, 2.5]}, "width"),
        ({"widths": 8}, "widths"),
        ({"widths": ["8"]}, "width"),
        ({"n_in": 0}, "n_in"),
        ({"n_out": -3}, "n_out"),
        ({"activation": "relux"}, "did you mean 'relu'"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": np.float32}, "dtype"),
        ({"batchnorm": True, "layernorm": True}, "batchnorm or layernorm"),
        ({"init": InitSpec("he_normal", std=0.1)}, "init.std"),
        ({"init": InitSpec("he_nomal")}, "did you mean 'he_normal'"),
        ({"init": InitSpec("normal", std=-1.0)}, "std"),
        ({"init": InitSpec("xavier_normal", gain="big")}, "gain"),
        ({"init": InitSpec("xavier_normal", bias_std=-0.1)}, "bias_std"),
        ({"init": InitSpec("he_normal", mode="fan_avg")}, "fan mode"),
        ({"bn_momentum": 2.0, "batchnorm": True}, "momentum"),
        ({"activation": "leaky_relu", "slope": 1.5}, "slope"),
    ],
)
def test_bad_model_settings_are_engine_errors(kwargs, word):
    args = {"n_in": 6, "n_out": 3, "widths": [8], "activation": "relu", "rng": np.random.default_rng(0)}
    args.update(kwargs)
    with pytest.raises(EngineError, match=word):
        build_mlp(**args)


def test_integral_float_sizes_are_accepted():
    m = build_mlp(6.0, 3, [8.0], "relu", rng=np.random.default_rng(0))
    assert m.blocks[0].linear.fan_out == 8


# ---------------------------------------------------------------------------- PyTorch as an oracle

TORCH_OPTIMIZERS = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {"eps": 1e-8}),
    "rmsprop": ("RMSprop", {"alpha": 0.99, "eps": 1e-8}),
    "adam": ("Adam", {"betas": (0.9, 0.999), "eps": 1e-8}),
    "adamw": ("AdamW", {"betas": (0.9, 0.999), "eps": 1e-8}),
}


def test_every_optimizer_has_a_pytorch_counterpart():
    assert set(TORCH_OPTIMIZERS) == set(OPTIMIZERS)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_matches_pytorch_in_float64(name, batchnorm):
    """Same weights, same batches: losses, clipping norms, parameters and BN statistics agree."""
    torch = pytest.importorskip("torch")
    lr, wd = (0.05 if name in ("adam", "adamw", "rmsprop") else 0.2), 0.01
    # No biases with BatchNorm: a bias before BN has a gradient of pure rounding noise, which
    # Adam-like rules normalize into real steps, so the two engines would part at ~1e-10.
    bias = not batchnorm
    m = build_mlp(5, 3, [6, 4], "tanh", InitSpec("xavier_normal", bias_std=0.1), np.random.default_rng(0),
                  bias=bias, batchnorm=batchnorm, dtype="float64")
    layers = []
    for b in m.blocks:
        layers.append(torch.nn.Linear(b.linear.fan_in, b.linear.fan_out, bias=bias, dtype=torch.float64))
        if batchnorm:
            layers.append(torch.nn.BatchNorm1d(b.linear.fan_out, eps=1e-5, momentum=0.1, dtype=torch.float64))
        layers.append(torch.nn.Tanh())
    layers.append(torch.nn.Linear(4, 3, bias=bias, dtype=torch.float64))
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for mine, theirs in zip([b.linear for b in m.blocks] + [m.head], [t for t in net if isinstance(t, torch.nn.Linear)]):
            theirs.weight.copy_(torch.from_numpy(mine.W.data.T.copy()))
            if bias:
                theirs.bias.copy_(torch.from_numpy(mine.b.data.copy()))
    cls, kw = TORCH_OPTIMIZERS[name]
    topt = getattr(torch.optim, cls)(net.parameters(), lr=lr, weight_decay=wd, **kw)
    opt, loss = make_optimizer(name, lr, wd), LOSSES["cross_entropy"]()
    rng = np.random.default_rng(1)
    for _ in range(6):
        x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
        value = loss.forward(m.forward(x, train=True), y)
        m.backward(loss.backward(), input_grad=False)
        norm = clip_grad_norm(m.params(), 0.5)
        opt.step(m.params())
        topt.zero_grad()
        tvalue = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        tvalue.backward()
        tnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        topt.step()
        assert value == pytest.approx(tvalue.item(), rel=1e-12)
        assert norm == pytest.approx(tnorm.item(), rel=1e-12)
    for mine, theirs in zip([b.linear for b in m.blocks] + [m.head], [t for t in net if isinstance(t, torch.nn.Linear)]):
        np.testing.assert_allclose(mine.W.data, theirs.weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
        if bias:
            np.testing.assert_allclose(mine.b.data, theirs.bias.detach().numpy(), rtol=1e-10, atol=1e-12)
    if batchnorm:
        for b, tbn in zip(m.blocks, [t for t in net if isinstance(t, torch.nn.BatchNorm1d)]):
            np.testing.assert_allclose(b.norm.running_mean, tbn.running_mean.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.norm.running_var, tbn.running_var.numpy(), rtol=1e-10, atol=1e-12)
    net.eval()
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(m.forward(x, train=False), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
