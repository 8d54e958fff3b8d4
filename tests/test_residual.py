"""Residual blocks in the engine: structure, branch scales, Fixup and SkipInit, gradient checks."""
import math

import numpy as np
import pytest

from initlab.engine.layers import BatchNorm, LayerNorm
from initlab.engine.losses import LOSSES
from initlab.engine.model import InitSpec, build_mlp
from initlab.engine.optimizers import OPTIMIZERS, make_optimizer
from initlab.engine.residual import BRANCH_SCALES, STRUCTURAL, ResidualBlock, resolve_branch_scale
from initlab.errors import EngineError
from tests.test_layers import numeric_grad as layers_numeric_grad

H = 1e-6
NORMS = [None, "batchnorm", "layernorm"]
SCALES = [None, 0.5, *BRANCH_SCALES]


def build(norm=None, branch_scale=None, scheme="he_normal", activation="tanh", widths=(4, 4, 4), seed=0, **kw):
    entry = STRUCTURAL.get(scheme)
    if entry is not None:
        branch_scale = entry.branch_scale or branch_scale
    model = build_mlp(5, 3, list(widths), activation, InitSpec(entry.start if entry else scheme), np.random.default_rng(seed),
                      batchnorm=norm == "batchnorm", layernorm=norm == "layernorm", dtype="float64",
                      residual=True, branch_scale=branch_scale, **kw)
    if entry is not None:
        entry.apply(model)
    return model


def numeric_grad(f, array):
    return layers_numeric_grad(f, array, h=H)


def check_gradients(model, x, y, what):
    loss = LOSSES["cross_entropy"]()

    def f():
        return loss.forward(model.forward(x, train=True), y)

    f()
    dx = model.backward(loss.backward())
    analytic = {p.name: p.grad.copy() for p in model.params()}
    for p in model.params():
        np.testing.assert_allclose(analytic[p.name], numeric_grad(f, p.data), rtol=1e-5, atol=1e-8, err_msg=f"{what} {p.name}")
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-8, err_msg=f"{what} input")


def test_structure_plain_stem_then_residual_blocks():
    m = build(widths=(4, 4, 4, 4))
    assert not isinstance(m.blocks[0], ResidualBlock)
    assert all(isinstance(b, ResidualBlock) for b in m.blocks[1:])
    assert [b.branch_scale for b in m.blocks[1:]] == [1.0] * 3
    x = np.random.default_rng(1).standard_normal((7, 5))
    out = m.forward(x)
    # By hand: h1 = φ(x W1 + b1), h_{l+1} = h_l + α (φ(h_l) W + b), logits = h_L W_out + b_out.
    h = np.tanh(x @ m.blocks[0].linear.W.data + m.blocks[0].linear.b.data)
    for b in m.blocks[1:]:
        h = h + (np.tanh(h) @ b.linear.W.data + b.linear.b.data)
    np.testing.assert_allclose(out, h @ m.head.W.data + m.head.b.data, rtol=1e-12)
    # the recorder's view: φ's input (the stream, without norm) and φ's output
    np.testing.assert_allclose(m.blocks[-1].output, np.tanh(m.blocks[-1].preact))


@pytest.mark.parametrize("n_branches", [1, 4, 49])
def test_branch_scales(n_branches):
    assert resolve_branch_scale(None, n_branches) == (1.0, False)
    assert resolve_branch_scale(0.3, n_branches) == (0.3, False)
    assert resolve_branch_scale("1/sqrt(depth)", n_branches) == (pytest.approx(1 / math.sqrt(n_branches)), False)
    assert resolve_branch_scale("1/depth", n_branches) == (pytest.approx(1 / n_branches), False)
    assert resolve_branch_scale("rezero", n_branches) == (0.0, True)
    m = build(branch_scale="1/sqrt(depth)", widths=[4] * (n_branches + 1))
    assert all(b.branch_scale == pytest.approx(1 / math.sqrt(n_branches)) for b in m.blocks[1:])


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, "1/sqrt(L)", True, [1]])
def test_bad_branch_scale_is_an_engine_error(bad):
    with pytest.raises(EngineError, match="branch_scale"):
        build(branch_scale=bad)


@pytest.mark.parametrize("kw, word", [
    ({"widths": [4]}, "at least 2 hidden layers"),
    ({"widths": [4, 6]}, "one width"),
])
def test_residual_needs_two_equal_hidden_layers(kw, word):
    with pytest.raises(EngineError, match=word):
        build(**kw)


def test_branch_scale_without_residual_is_an_engine_error():
    with pytest.raises(EngineError, match="residual"):
        build_mlp(5, 3, [4, 4], "relu", branch_scale=0.5)


def test_rezero_is_a_learnable_parameter_starting_at_zero_and_the_net_starts_as_its_stem():
    m = build(branch_scale="rezero")
    alphas = [p for p in m.params() if p.name == "alpha"]  # one Parameter, one entry per branch
    assert len(alphas) == 1 and alphas[0].data.shape == (2,) and not alphas[0].data.any()
    assert [b.index for b in m.blocks[1:]] == [0, 1]
    x = np.random.default_rng(1).standard_normal((6, 5))
    out = m.forward(x)
    stem = m.blocks[0].output
    np.testing.assert_allclose(out, stem @ m.head.W.data + m.head.b.data, rtol=1e-12)
    loss = LOSSES["cross_entropy"]()
    loss.forward(out, np.array([0, 1, 2, 0, 1, 2]))
    m.backward(loss.backward())
    assert alphas[0].grad.all()  # α moves off 0 at the first step...
    opt = make_optimizer("sgd", 0.1, 0.0)
    opt.step(m.params())
    assert alphas[0].data.all()  # ...because the optimizer updates it
    assert [b.branch_scale for b in m.blocks[1:]] == list(alphas[0].data)


def test_fixup_zeroes_each_branch_and_the_output_layer_and_keeps_he_stem():
    """Zhang et al. 2019 with m = 1 Linear per branch: that layer is the branch's last → 0; no layer is left
    for the L^(−1/(2m−2)) rescaling; the classification layer → 0; the stem keeps He's N(0, 2/fan_in)."""
    m = build(scheme="fixup", activation="relu", widths=[400] * 4, seed=3)
    for b in m.blocks[1:]:
        assert not b.linear.W.data.any() and not b.linear.b.data.any()
    assert not m.head.W.data.any() and not m.head.b.data.any()
    w = m.blocks[0].linear.W.data
    assert np.var(w) * 5 == pytest.approx(2.0, rel=0.1)
    x = np.random.default_rng(1).standard_normal((6, 5))
    m.forward(x)
    np.testing.assert_array_equal(m.blocks[-1].preact, m.blocks[0].output)  # every block is the identity


def test_fixup_refuses_normalization():
    with pytest.raises(EngineError, match="normalization"):
        build(scheme="fixup", norm="batchnorm")


def test_skipinit_is_a_learnable_zero_scalar_per_branch_over_he_weights():
    m = build(scheme="skipinit", activation="relu", widths=[400] * 3, seed=2)
    assert [b.branch_scale for b in m.blocks[1:]] == [0.0, 0.0]
    assert all(b.alpha is not None for b in m.blocks[1:])
    for b in m.blocks:
        assert np.var(b.linear.W.data) * b.linear.fan_in == pytest.approx(2.0, rel=0.1)


def test_structural_schemes_need_a_residual_net():
    plain = build_mlp(5, 3, [4, 4], "relu", InitSpec("he_normal"))
    for entry in STRUCTURAL.values():
        with pytest.raises(EngineError, match="residual"):
            entry.apply(plain)


@pytest.mark.parametrize("scheme", ["he_normal", "fixup", "skipinit"])
@pytest.mark.parametrize("branch_scale", SCALES)
@pytest.mark.parametrize("norm", NORMS)
def test_gradients_match_finite_differences(norm, branch_scale, scheme):
    if scheme == "fixup" and norm is not None:
        pytest.skip("fixup refuses normalization (tested above)")
    if scheme == "skipinit" and branch_scale not in (None, "rezero"):
        pytest.skip("skipinit sets the branch scale itself")
    model = build(norm, branch_scale, scheme)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    check_gradients(model, x, y, f"{norm}/{branch_scale}/{scheme} at init")
    # Off the initial point too: a zero α or zero branch makes half the gradients trivially 0 at init.
    for p in model.params():
        p.data += 0.3 * rng.standard_normal(p.data.shape)
    check_gradients(model, x, y, f"{norm}/{branch_scale}/{scheme} perturbed")


def test_relu_gradients_away_from_the_kink():
    for seed in range(50):
        model = build(None, "1/sqrt(depth)", "he_normal", activation="relu", seed=seed)
        rng = np.random.default_rng(seed)
        x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
        model.forward(x)
        # The first branch's input is the stem's output, with exact zeros (dead ReLU units, which no small
        # step moves); every other pre-activation must stay clear of the kink.
        first = model.blocks[1].preact
        clear = [np.min(np.abs(b.preact)) > 1e-2 for b in model.blocks if b is not model.blocks[1]]
        if all(clear) and np.min(np.abs(first[first != 0]), initial=1.0) > 1e-2:
            check_gradients(model, x, y, f"relu seed {seed}")
            return
    raise AssertionError("no kink-free draw")  # pragma: no cover


def test_evaluation_mode_batchnorm_backward_inside_the_branch():
    """The Jacobian path runs in evaluation mode: BN is then a fixed per-feature affine map."""
    m = build("batchnorm", 0.5)
    for b in m.blocks:
        b.norm.running_mean[...] = np.random.default_rng(0).standard_normal(4)
        b.norm.running_var[...] = 2.0
    block = m.blocks[1]
    h = np.random.default_rng(1).standard_normal((3, 4))
    w = np.random.default_rng(2).standard_normal((3, 4))

    def f():
        return float(np.sum(block.forward(h, train=False) * w))

    f()
    dh = block.backward(w)
    np.testing.assert_allclose(dh, numeric_grad(f, h), rtol=1e-5, atol=1e-8)


def test_running_stats_kept_covers_norms_inside_branches():
    m = build("batchnorm")
    assert isinstance(m.blocks[1].norm, BatchNorm)
    before = m.blocks[1].norm.running_mean.copy()
    with m.running_stats_kept():
        m.forward(np.random.default_rng(0).standard_normal((8, 5)) + 3, train=True)
    np.testing.assert_array_equal(before, m.blocks[1].norm.running_mean)
    assert isinstance(build("layernorm").blocks[2].norm, LayerNorm)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_a_residual_classifier(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    y = np.argmax(x @ rng.standard_normal((5, 3)), axis=1)
    m = build(None, "rezero", activation="relu", widths=[16] * 4)
    opt, loss = make_optimizer(name, 0.05 if name in ("sgd", "momentum", "nesterov", "adagrad") else 0.01, 0.0), LOSSES["cross_entropy"]()
    first = None
    for _ in range(60):
        v = loss.forward(m.forward(x), y)
        first = v if first is None else first
        m.backward(loss.backward(), input_grad=False)
        opt.step(m.params())
    assert v < 0.7 * first
    assert m.blocks[1].alpha.data.any()


def test_float32_residual_net_stays_float32():
    m = build_mlp(5, 3, [4, 4, 4], "relu", InitSpec("he_normal"), np.random.default_rng(0), residual=True,
                  branch_scale="rezero", dtype="float32")
    out = m.forward(np.ones((3, 5), np.float32))
    loss = LOSSES["cross_entropy"]()
    loss.forward(out, np.array([0, 1, 2]))
    m.backward(loss.backward())
    assert out.dtype == np.float32 and all(p.grad.dtype == np.float32 and p.data.dtype == np.float32 for p in m.params())


def test_residual_matches_pytorch_in_float64():
    torch = pytest.importorskip("torch")
    m = build(None, "rezero", activation="tanh")
    m.blocks[1].alpha.data[...] = 0.7
    x = np.random.default_rng(1).standard_normal((6, 5))
    t = torch.from_numpy(x)
    h = torch.tanh(t @ torch.from_numpy(m.blocks[0].linear.W.data) + torch.from_numpy(m.blocks[0].linear.b.data))
    for b in m.blocks[1:]:
        h = h + 0.7 * (torch.tanh(h) @ torch.from_numpy(b.linear.W.data) + torch.from_numpy(b.linear.b.data))
    ref = h @ torch.from_numpy(m.head.W.data) + torch.from_numpy(m.head.b.data)
    np.testing.assert_allclose(m.forward(x), ref.numpy(), rtol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_jacobian_of_a_residual_net_matches_finite_differences(norm):
    from initlab.theory.jacobian import jacobian

    m = build(norm, "1/sqrt(depth)", widths=(4, 4, 4))
    x = np.random.default_rng(3).standard_normal(5)
    J = jacobian(m, x)  # evaluation mode: BatchNorm uses its running statistics

    def hidden(v):  # the last hidden block's output, by forward passes only
        h = v[None, :]
        for layer in [la for b in m.blocks for la in b.layers()]:
            h = layer.forward(h, False)
        return h[0]

    fd = np.stack([(hidden(x + H * e) - hidden(x - H * e)) / (2 * H) for e in np.eye(5)])
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-8)


def test_jacobian_of_a_float32_residual_net_is_float64_and_leaves_the_net_alone():
    from initlab.theory.jacobian import jacobian

    m32 = build_mlp(5, 3, [6, 6, 6], "relu", InitSpec("he_normal"), np.random.default_rng(1), dtype="float32",
                    residual=True, branch_scale="rezero")
    m32.blocks[1].alpha.data[:] = [0.5, -0.25]  # non-zero, so the branches count
    m64 = build_mlp(5, 3, [6, 6, 6], "relu", InitSpec("he_normal"), np.random.default_rng(1), dtype="float64",
                    residual=True, branch_scale="rezero")
    for p32, p64 in zip(m32.params(), m64.params(), strict=True):
        p64.data[...] = p32.data  # the same (float32-representable) weights in a float64 net
    x = np.random.default_rng(2).standard_normal((3, 5))
    m32.forward(x.astype(np.float32))
    before = [(b.preact.copy(), b.output.copy()) for b in m32.blocks]
    J = jacobian(m32, x[0])
    assert J.dtype == np.float64
    np.testing.assert_allclose(J, jacobian(m64, x[0]), rtol=1e-12, atol=1e-15)
    for b, (z, a) in zip(m32.blocks, before):
        assert b.preact.dtype == np.float32 and np.array_equal(b.preact, z) and np.array_equal(b.output, a)


def test_lsuv_refuses_a_residual_net():
    from initlab.engine.lsuv import lsuv_init

    with pytest.raises(EngineError, match="plain nets"):
        lsuv_init(build(), np.random.default_rng(0).standard_normal((10, 5)))
