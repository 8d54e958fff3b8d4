"""LSUV: every hidden layer's Linear output has unit variance (within tolerance) on the batch used."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from initlab.engine.lsuv import lsuv_init
from initlab.engine.model import InitSpec, build_mlp
from initlab.errors import EngineError


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _model(act="relu", widths=(100, 80, 120, 100, 60, 100, 100, 90), n_in=50, dtype="float64", seed=0, **kw):
    rng = np.random.default_rng(seed)
    init = kw.pop("init", None) or InitSpec("normal", std=0.5)  # far from unit variance on purpose
    return build_mlp(n_in, 10, list(widths), act, init, rng, dtype=dtype, **kw), rng


def _linear_output_variances(model, x):
    model.forward(x, train=True)
    out = []
    for b in model.blocks:
        y = b.linear.x @ b.linear.W.data
        if b.linear.b is not None:
            y = y + b.linear.b.data
        out.append(float(np.var(y, dtype=np.float64)))
    return np.array(out)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "linear", "selu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_layer_within_tolerance_on_its_batch(act, dtype):
    model, rng = _model(act, dtype=dtype)
    x = 3.0 * rng.standard_normal((200, 50))
    before = _linear_output_variances(model, x)
    assert np.any(np.abs(before - 1) >= 0.1)  # the test starts from a bad init
    passes = lsuv_init(model, x, tol=0.1, rng=rng)
    var = _linear_output_variances(model, x)
    assert np.all(np.abs(var - 1) < 0.1), var
    assert len(passes) == 8 and all(0 <= p <= 10 for p in passes)
    # Zero biases: the output is linear in W, so one rescaling is exact.
    assert all(p <= 1 for p in passes)


def test_tight_tolerance_and_orthonormal_start():
    model, rng = _model("tanh", init=InitSpec("normal", std=0.5, bias_std=0.1))
    x = rng.standard_normal((300, 50))
    passes = lsuv_init(model, x, tol=1e-6, rng=rng)
    var = _linear_output_variances(model, x)
    assert np.all(np.abs(var - 1) < 1e-6)
    assert all(1 <= p <= 10 for p in passes)
    for b in [*model.blocks, model.head]:  # orthonormal columns or rows, times one scale
        W = b.linear.W.data if hasattr(b, "linear") else b.W.data
        G = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
        assert np.allclose(G, G[0, 0] * np.eye(len(G)), atol=1e-10 * G[0, 0])


def test_passes_are_capped_when_the_target_is_unreachable():
    # Bias variance 4 alone exceeds 1 + tol: no rescaling of W can reach unit variance.
    model, rng = _model("relu", init=InitSpec("normal", std=0.5, bias_std=2.0))
    x = rng.standard_normal((100, 50))
    assert lsuv_init(model, x, max_passes=3, rng=rng)[0] == 3


def test_without_rng_the_current_weights_are_rescaled_and_global_state_is_untouched():
    model, rng = _model("relu")
    W0 = [b.linear.W.data.copy() for b in model.blocks]
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    lsuv_init(model, rng.standard_normal((64, 50)))
    assert np.array_equal(np.random.get_state()[1], state)
    for w0, b in zip(W0, model.blocks):
        ratio = b.linear.W.data / w0
        assert np.allclose(ratio, ratio.flat[0])


def test_same_rng_seed_same_weights():
    a, _ = _model("tanh")
    b, _ = _model("tanh")
    x = np.random.default_rng(9).standard_normal((64, 50))
    lsuv_init(a, x, rng=np.random.default_rng(4))
    lsuv_init(b, x, rng=np.random.default_rng(4))
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.params(), b.params()))


def test_batchnorm_running_statistics_are_not_changed():
    model, rng = _model("relu", batchnorm=True)
    stats = [(b.norm.running_mean.copy(), b.norm.running_var.copy()) for b in model.blocks]
    x = rng.standard_normal((64, 50))
    lsuv_init(model, x, rng=rng)
    assert all(np.array_equal(m, b.norm.running_mean) and np.array_equal(v, b.norm.running_var)
               for (m, v), b in zip(stats, model.blocks))
    assert np.all(np.abs(_linear_output_variances(model, x) - 1) < 0.1)


def test_include_head_rescales_the_output_layer():
    model, rng = _model("tanh")
    x = rng.standard_normal((128, 50))
    lsuv_init(model, x, rng=rng, include_head=True)
    out = model.forward(x, train=True)
    assert abs(np.var(out) - 1) < 0.1


@pytest.mark.parametrize("kwargs", [dict(tol=0.0), dict(tol=1.5), dict(max_passes=0), dict(max_passes=2.5)])
def test_rejects_bad_settings(kwargs):
    model, rng = _model()
    with pytest.raises(EngineError):
        lsuv_init(model, rng.standard_normal((10, 50)), **kwargs)


def test_rejects_bad_batches():
    model, rng = _model()
    with pytest.raises(EngineError):
        lsuv_init(model, rng.standard_normal((10, 49)))
    with pytest.raises(EngineError):
        lsuv_init(model, rng.standard_normal((1, 50)))
    with pytest.raises(EngineError, match="variance"):
        lsuv_init(model, np.zeros((10, 50)))  # zero input, zero biases: nothing to rescale
