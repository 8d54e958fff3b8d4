"""Mean-field theory: quadrature against closed forms, predictions against the engine's own networks.

The length map predicts the *ensemble* mean of each layer's second moment. One finite network
deviates from it by a shared-over-the-batch fluctuation of about √(2/width) per layer (the mean
activation and the biases are common to all examples), which for ReLU — no fixed point to pull
it back — compounds to ±20% at layer 10 for width 500 (up to ±50% in a bad draw). The tests
therefore compare the prediction with the mean over several independent width-500 networks;
the gradient and correlation tests use one network each, where the theory is tighter.
"""
import json
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from initlab.engine.activations import get_activation
from initlab.engine.initializers import INITIALIZERS, get_initializer
from initlab.engine.layers import ActivationLayer, Linear
from initlab.engine.model import MLP, Block, InitSpec, build_mlp
from initlab.errors import EngineError
from initlab.theory import meanfield as T
from initlab.theory import quadrature as Q
from initlab.theory import schemes as TI

WIDTH, DEPTH = 500, 10


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # Small products: one BLAS thread is as fast, and far faster when the cores are shared.
    with threadpool_limits(1):
        yield


def _net(act, sw2, sb2, rng, width=WIDTH, depth=DEPTH, n_in=None, **kw):
    n_in = n_in or width
    init = InitSpec(scheme="normal", std=math.sqrt(sw2 / width), bias_std=math.sqrt(sb2))
    return build_mlp(n_in, 10, [width] * depth, act, init, rng, dtype="float64", **kw)


def _deltas(model, x, rng):
    """Mean square of d loss/d pre-activation per hidden layer, for a random gradient at the logits."""
    out = model.forward(x, train=True)
    d = model.head.backward(rng.standard_normal(out.shape))
    ms = []
    for block in reversed(model.blocks):
        d = block.act.backward(d)
        ms.append(float(np.mean(d * d)))
        if block.norm is not None:
            d = block.norm.backward(d)
        d = block.linear.backward(d)
    return np.array(ms[::-1])


# --- quadrature ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [Q.gauss_hermite, Q.normal_rule])
def test_rules_integrate_gaussian_moments(rule):
    z, w = rule()
    assert len(z) == 100 and np.min(np.abs(z)) > 0  # no node at the kink of ReLU-like φ
    assert np.sum(w) == pytest.approx(1.0, abs=1e-14)
    for k, moment in [(0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0), (12, 10395.0)]:
        assert np.sum(w * z**k) == pytest.approx(moment, rel=1e-11)
    assert abs(np.sum(w * z**3)) < 1e-12
    with pytest.raises(EngineError):
        rule(0)


def test_half_line_rule_is_exact_where_the_full_line_rule_is_not():
    # E[|z|] = √(2/π): |z| has a kink at 0, which the half-line rule puts between its halves.
    exact = math.sqrt(2 / math.pi)
    z, w = Q.normal_rule()
    assert np.sum(w * np.abs(z)) == pytest.approx(exact, rel=1e-13)
    z, w = Q.gauss_hermite()
    assert abs(np.sum(w * np.abs(z)) / exact - 1) > 1e-3


@pytest.mark.parametrize("q", [0.01, 0.7, 2.5, 40.0])
def test_expectations_match_closed_forms(q):
    relu = T._act("relu", 0.01)
    assert Q.expect(lambda x: relu.fn(x) ** 2, q) == pytest.approx(q / 2, rel=1e-12)
    assert Q.expect(relu.fn, q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-12)
    assert T.chi1("relu", q, 2.0) == pytest.approx(1.0, rel=1e-12)
    s = 0.2
    leaky = T._act("leaky_relu", s)
    assert Q.expect(lambda x: leaky.fn(x) ** 2, q) == pytest.approx(q * (1 + s * s) / 2, rel=1e-12)
    assert T.length_map("linear", q, 1.5, 0.1) == pytest.approx(1.5 * q + 0.1, rel=1e-12)
    sigmoid = T._act("sigmoid", 0.01)
    assert Q.expect(sigmoid.fn, q) == pytest.approx(0.5, abs=1e-13)
    # GELU: E[x·Φ(x)] = q / √(2π(1+q)) for x ~ N(0, q).
    gelu = T._act("gelu", 0.01)
    assert Q.expect(gelu.fn, q) == pytest.approx(q / math.sqrt(2 * math.pi * (1 + q)), rel=1e-9)


def test_tanh_small_q_expansion_and_selu_fixed_point():
    q = 1e-4  # E[tanh'(√q z)²] = 1 − 2q + O(q²)
    assert T.chi1("tanh", q, 1.0) == pytest.approx(1 - 2 * q, abs=20 * q * q)
    selu = T._act("selu", 0.01)  # Klambauer et al.: mean 0, variance 1 is SELU's fixed point
    assert abs(Q.expect(selu.fn, 1.0)) < 1e-10
    assert Q.expect(lambda x: selu.fn(x) ** 2, 1.0) == pytest.approx(1.0, abs=1e-10)
    # ELU: E[elu(z)] = 1/√(2π) + e^{1/2}·Φ(−1) − 1/2.
    elu = T._act("elu", 0.01)
    exact = 1 / math.sqrt(2 * math.pi) + math.exp(0.5) * 0.5 * (1 + math.erf(-1 / math.sqrt(2))) - 0.5
    assert Q.expect(elu.fn, 1.0) == pytest.approx(exact, abs=1e-13)


@pytest.mark.parametrize("c", [-0.9, -0.3, 0.0, 0.4, 0.8, 0.99])
def test_correlation_map_relu_arc_cosine_and_smooth_convergence(c):
    # ReLU, σ_b = 0: c' = (√(1−c²) + (π − arccos c)·c)/π and slope (π − arccos c)/π (Cho & Saul).
    exact = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    got, dc = T.correlation_map("relu", 1.7, c, 2.0, 0.0)
    assert got == pytest.approx(exact, abs=1e-12)
    assert dc == pytest.approx((math.pi - math.acos(c)) / math.pi, abs=1e-12)
    coarse, dc = T.correlation_map("tanh", 1.3, c, 2.0, 0.05)
    fine, dc_fine = T.correlation_map("tanh", 1.3, c, 2.0, 0.05, n=400)
    assert coarse == pytest.approx(fine, abs=1e-9) and dc == pytest.approx(dc_fine, abs=1e-8)
    # The slope is the derivative of the map.
    h = 1e-5
    if abs(c) < 0.99:
        num = (T.correlation_map("tanh", 1.3, c + h, 2.0, 0.05)[0] - T.correlation_map("tanh", 1.3, c - h, 2.0, 0.05)[0]) / (2 * h)
        assert dc == pytest.approx(num, rel=1e-6)
    assert T.correlation_map("tanh", 1.3, 1.0, 2.0, 0.05)[0] == pytest.approx(1.0, abs=1e-11)


# --- predictions against networks ----------------------------------------------------------------

# (activation, σ_w², σ_b²) → networks averaged: ReLU fluctuates most (see the module docstring).
LENGTH_CASES = {
    ("tanh", 0.5, 0.0): 6, ("tanh", 1.5, 0.0): 6, ("tanh", 4.0, 0.0): 6, ("tanh", 2.5, 0.05): 8,
    ("relu", 2.0, 0.0): 32, ("relu", 1.2, 0.1): 32, ("relu", 3.0, 0.1): 32,
    ("sigmoid", 1.0, 0.0): 10, ("sigmoid", 4.0, 0.05): 10,
}


@pytest.fixture(scope="module")
def ensemble():
    """Per case: mean over independent width-500 networks of each layer's mean(preact²) and std(output).

    Each network's weights are drawn once as N(0, 1/fan_in), biases N(0, 1), and scaled to every
    case's σ_w², σ_b² (so each case sees exactly its own ensemble; the cases share draws).
    """
    rng = np.random.default_rng(2017)
    sums = {case: [np.zeros(DEPTH), np.zeros(DEPTH), 0.0] for case in LENGTH_CASES}
    for k in range(max(LENGTH_CASES.values())):
        Ws = [rng.standard_normal((WIDTH, WIDTH)) / math.sqrt(WIDTH) for _ in range(DEPTH)]
        bs = [rng.standard_normal(WIDTH) for _ in range(DEPTH)]
        x = rng.standard_normal((16, WIDTH))
        for (act, sw2, sb2), n_nets in LENGTH_CASES.items():
            if k >= n_nets:
                continue
            phi = get_activation(act)
            blocks = [Block(Linear(W * math.sqrt(sw2), b * math.sqrt(sb2)), None, ActivationLayer(phi)) for W, b in zip(Ws, bs)]
            model = MLP(blocks, Linear(np.zeros((WIDTH, 1))), np.float64)
            model.forward(x, train=True)
            acc = sums[(act, sw2, sb2)]
            acc[0] += [np.mean(b.preact ** 2) for b in model.blocks]
            acc[1] += [np.std(b.output) for b in model.blocks]
            acc[2] += np.mean(x * x)
    return {case: [v / LENGTH_CASES[case] for v in acc] for case, acc in sums.items()}


@pytest.mark.parametrize("case", list(LENGTH_CASES), ids=lambda c: "-".join(map(str, c)))
def test_predicted_second_moments_match_networks(case, ensemble):
    act, sw2, sb2 = case
    q_meas, std_meas, x_q = ensemble[case]
    p = T.predict(act, sw2, sb2, x_q, DEPTH)
    rel = q_meas / np.array(p.q) - 1
    assert abs(rel[0]) < 0.05, rel
    assert np.all(np.abs(rel) < 0.10), rel
    rel_std = std_meas / np.array(p.act_std) - 1
    assert np.all(np.abs(rel_std) < 0.10), rel_std
    assert np.allclose(p.preact_std, np.sqrt(p.q))


@pytest.mark.parametrize("act,sw2,sb2,phase", [
    ("tanh", 0.5, 0.0, "ordered"), ("tanh", 4.0, 0.0, "chaotic"),
    ("tanh", 1.3, 0.05, "ordered"), ("tanh", 2.5, 0.05, "chaotic"),  # the line moves up with σ_b²
    ("relu", 1.5, 0.0, "ordered"), ("relu", 2.5, 0.0, "chaotic"),
    ("sigmoid", 4.0, 0.0, "ordered"),
])
def test_phase_predicts_gradient_growth_with_depth(act, sw2, sb2, phase):
    rng = np.random.default_rng(int(sw2 * 1000) + len(act))
    model = _net(act, sw2, sb2, rng)
    x = rng.standard_normal((64, WIDTH))
    ms = _deltas(model, x, rng)
    p = T.predict(act, sw2, sb2, float(np.mean(x * x)), DEPTH)
    assert p.phase == phase
    measured = math.log(ms[0] / ms[-1])  # layer 1 relative to layer 10
    predicted = math.log(p.grad_sq[0])
    assert (measured > 0) == (phase == "chaotic")
    # Layer by layer: the measured profile follows the predicted one (log scale).
    assert np.allclose(np.log(ms / ms[-1]), np.log(p.grad_sq), atol=0.15 + 0.03 * abs(predicted))


def test_known_critical_points():
    for act, sw2 in [("relu", 2.0), ("tanh", 1.0), ("linear", 1.0)]:
        assert T.predict(act, sw2, 0.0, 1.0, 5).phase == "critical"
        assert T.predict(act, sw2 * 0.9, 0.0, 1.0, 5).phase == "ordered"
        assert T.predict(act, sw2 * 1.1, 0.0, 1.0, 5).phase == "chaotic"
    # Within CRITICAL_TOL of χ₁ = 1 counts as critical: tanh at σ_w² = 1.05 has χ₁ ≈ 1.0007.
    assert T.predict("tanh", 1.05, 0.0, 1.0, 5).phase == "critical"
    assert T.critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, abs=1e-6)
    assert T.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    # With biases the tanh line moves up: (1.76, 0.05) is Schoenholz et al.'s critical point.
    assert T.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.01)
    assert T.predict("tanh", 1.0, 0.05, 1.0, 5).phase == "ordered"
    assert math.isnan(T.critical_sigma_w2("sigmoid", 0.0, hi=4.0))  # χ₁ ≤ σ_w²/16 for sigmoid: no crossing


def test_depth_scales_diverge_at_the_edge_of_chaos():
    xi = {sw2: T.predict("tanh", sw2, 0.05, 1.0, 3).xi_c for sw2 in (1.2, 1.6, 1.76, 2.0, 3.0)}
    assert xi[1.76] > 1000 and xi[1.2] < xi[1.6] < xi[1.76] and xi[1.76] > xi[2.0] > xi[3.0]
    p = T.predict("tanh", 1.0, 0.0, 1.0, 3)
    assert math.isinf(p.xi_c) and math.isinf(p.xi_q)  # critical: power laws, no exponential scale


def test_fixed_point_and_xi_q_is_the_rate_of_approach():
    p = T.predict("tanh", 3.0, 0.05, 0.05, 40)
    assert p.fixed_point == "finite"
    assert T.length_map("tanh", p.q_star, 3.0, 0.05) == pytest.approx(p.q_star, rel=1e-12)
    gaps = np.abs(np.array(p.q) - p.q_star)
    ratio = gaps[16] / gaps[15]
    assert ratio == pytest.approx(math.exp(-1 / p.xi_q), rel=1e-3)
    # χ₁ + σ_w² E[φ''φ] (computed via Stein's lemma) is the derivative of the length map.
    h = 1e-6
    deriv = (T.length_map("tanh", p.q_star + h, 3.0, 0.05) - T.length_map("tanh", p.q_star - h, 3.0, 0.05)) / (2 * h)
    assert math.exp(-1 / p.xi_q) == pytest.approx(deriv, rel=1e-6)


def test_relu_has_no_finite_fixed_point_off_criticality():
    below, at, above = (T.predict("relu", s, 0.0, 1.0, 10) for s in (1.5, 2.0, 2.5))
    assert (below.fixed_point, below.q_star) == ("zero", 0.0)
    assert (above.fixed_point, above.q_star) == ("infinite", math.inf)
    assert at.fixed_point == "finite" and at.q_star == pytest.approx(at.q[0])
    for p, s in [(below, 1.5), (at, 2.0), (above, 2.5)]:
        assert p.chi1 == pytest.approx(s / 2, rel=1e-12)
        assert p.q[-1] == pytest.approx(s * (s / 2) ** 9, rel=1e-12)
        assert p.c_star == 1.0 and math.isinf(p.xi_c)  # ReLU correlations converge polynomially
    assert below.xi_q == pytest.approx(-1 / math.log(0.75))
    d = above.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["q_star"] is None and d["fixed_point"] == "infinite" and d["phase"] == "chaotic"


def _final_correlation(sw2, sb2, c0, q, rng, width=300, depth=40, pairs=8):
    """Mean correlation of `pairs` input pairs (correlation c0, pre-activation variance q) after `depth` tanh layers."""
    model = _net("tanh", sw2, sb2, rng, width=width, depth=depth)
    a, b = rng.standard_normal((2, pairs, width))
    x = np.concatenate([a, c0 * a + math.sqrt(1 - c0 * c0) * b]) * math.sqrt((q - sb2) / sw2)
    model.forward(x, train=True)
    h = model.blocks[-1].preact
    c = np.sum(h[:pairs] * h[pairs:], axis=1) / np.sqrt(np.sum(h[:pairs] ** 2, axis=1) * np.sum(h[pairs:] ** 2, axis=1))
    return float(np.mean(c))


def test_predicted_c_star_matches_network_correlations():
    # Chaotic tanh: inputs of any correlation end at the same c* < 1 (one network's estimate
    # fluctuates by ~0.05 at width 300, so six are averaged); ordered: they end at c* = 1.
    rng = np.random.default_rng(5)
    chaotic = T.predict("tanh", 3.0, 0.05, 1.0, 1)
    assert chaotic.c_star == pytest.approx(0.2993, abs=1e-3) and chaotic.phase == "chaotic"
    measured = [_final_correlation(3.0, 0.05, c0, chaotic.q_star, rng) for c0 in (0.9, 0.1) for _ in range(3)]
    assert np.mean(measured) == pytest.approx(chaotic.c_star, abs=0.08), measured
    ordered = T.predict("tanh", 1.2, 0.05, 1.0, 1)
    assert ordered.c_star == 1.0 and ordered.phase == "ordered"
    assert _final_correlation(1.2, 0.05, 0.2, ordered.q_star, rng) > 0.99


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_normalization_prediction_is_unit_preactivations(norm):
    p = T.predict("tanh", 4.0, 0.1, 3.0, 4, norm=norm)
    assert p.q == [1.0] * 4 and not p.applies and p.phase == "n/a" and norm in p.note
    ref = T.predict("tanh", 1.0, 0.0, 1.0, 1)
    assert p.act_std[0] == pytest.approx(ref.act_std[0])
    json.dumps(p.to_dict(), allow_nan=False)
    rng = np.random.default_rng(3)
    model = _net("tanh", 4.0, 0.1, rng, width=300, depth=4, **{norm: True})
    model.forward(3.0 * rng.standard_normal((200, 300)), train=True)
    for b, s in zip(model.blocks, p.act_std):
        assert np.mean(b.preact ** 2) == pytest.approx(1.0, rel=1e-3)
        assert np.std(b.output) == pytest.approx(s, rel=0.05)


# --- σ_w² of the schemes and the config-level helper ------------------------------------------------

@pytest.mark.parametrize("scheme", sorted(INITIALIZERS))
@pytest.mark.parametrize("fans", [(300, 200), (200, 300)])
def test_weight_variance_matches_drawn_weights(scheme, fans):
    kwargs = {"gain": 1.3}
    std = 0.05 if scheme in ("normal", "truncated_normal", "uniform") else None
    if std is not None:
        kwargs["std"] = std
    W = get_initializer(scheme)(*fans, np.random.default_rng(0), **kwargs)
    expected = TI.weight_variance(scheme, *fans, std=std, gain=1.3)
    if scheme == "zeros":
        assert expected == 0.0 == np.mean(W * W)
    else:
        assert np.mean(W * W) == pytest.approx(expected, rel=0.03)
    if scheme == "uniform":  # the default bound 1/√fan_in: σ_w² = gain²/3
        assert fans[0] * TI.weight_variance("uniform", *fans, gain=1.3) == pytest.approx(1.69 / 3)


def test_sigma_w2_of_schemes():
    assert TI.sigma_w2_of(InitSpec("he_normal"), 100, [100] * 3, "relu") == pytest.approx([2.0] * 3)
    assert TI.sigma_w2_of(InitSpec("kaiming_uniform"), 100, [100] * 3, "relu") == pytest.approx([2.0] * 3)
    assert TI.sigma_w2_of(InitSpec("lecun_normal", gain="auto"), 50, [80, 80], "tanh") == pytest.approx([25 / 9] * 2)
    first, second = TI.sigma_w2_of(InitSpec("xavier_normal"), 784, [100, 100], "sigmoid")
    assert first == pytest.approx(784 * 2 / 884) and second == pytest.approx(1.0)
    assert TI.sigma_w2_of(InitSpec("normal", std=0.01), 100, [100], "sigmoid") == pytest.approx([0.01])
    assert TI.sigma_w2_of(InitSpec("orthogonal"), 100, [100, 50, 200], "tanh") == pytest.approx([1.0, 1.0, 0.25])
    model = build_mlp(300, 10, [300, 300], "relu", InitSpec("he_normal"), np.random.default_rng(0), dtype="float64")
    assert TI.sigma_w2_from_model(model) == pytest.approx([2.0, 2.0], rel=0.02)
    with pytest.raises(EngineError, match="lsuv"):
        TI.sigma_w2_of(InitSpec("lsuv"), 10, [10], "relu")


def test_predict_mlp_wires_config_values():
    p = TI.predict_mlp(InitSpec("he_normal", bias_std=0.1), 784, [100] * 4, "relu", 0.1)
    assert p.sigma_w2 == pytest.approx([2.0] * 4) and p.sigma_b2 == pytest.approx(0.01)
    assert p.q[0] == pytest.approx(2.0 * 0.1 + 0.01) and p.phase == "critical"
    assert TI.predict_mlp(InitSpec("he_normal", bias_std=0.1), 784, [100], "relu", 0.1, bias=False).sigma_b2 == 0.0
    const = TI.predict_mlp(InitSpec("constant"), 10, [10, 10], "sigmoid", 1.0)
    d = const.to_dict()
    json.dumps(d, allow_nan=False)
    assert not d["applies"] and d["layers"][0]["std"] is None
    assert not TI.predict_mlp(InitSpec("identity"), 10, [10, 10], "tanh", 1.0).applies
    bn = TI.predict_mlp(InitSpec("normal", std=1.0), 10, [10, 10], "relu", 1.0, batchnorm=True)
    assert bn.norm == "batchnorm" and bn.q == [1.0, 1.0]
    with pytest.raises(EngineError, match="lsuv"):
        TI.predict_mlp(InitSpec("lsuv"), 10, [10], "relu", 1.0)
    model = build_mlp(10, 2, [10, 10], "relu", InitSpec("orthogonal"), np.random.default_rng(0), dtype="float64")
    assert TI.predict_mlp(InitSpec("lsuv"), 10, [10, 10], "relu", 1.0, model=model).sigma_w2 == pytest.approx([1.0, 1.0])


def test_to_dict_is_strict_json_with_per_layer_entries():
    p = T.predict("sigmoid", [1.77, 1.0, 1.0], 0.0, 0.1, slope=0.01)
    d = p.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert [layer["layer"] for layer in d["layers"]] == [1, 2, 3]
    assert set(d) >= {"q_star", "chi1", "phase", "xi_q", "xi_c", "c_star", "fixed_point", "applies", "layers"}
    assert set(d["layers"][0]) == {"layer", "q", "preact_std", "mean", "std", "chi", "grad_sq"}
    assert d["layers"][0]["q"] == pytest.approx(0.177)
    assert "q*=" in repr(p)


@pytest.mark.parametrize("bad", [
    dict(sigma_w2=-1.0), dict(sigma_w2=math.nan), dict(sigma_b2=-0.1), dict(input_q=math.inf),
    dict(depth=-1), dict(sigma_w2=[1.0, 1.0], depth=3), dict(norm="groupnorm"), dict(activation="tanhh"),
])
def test_predict_rejects_bad_values(bad):
    args = dict(activation="tanh", sigma_w2=1.0, sigma_b2=0.0, input_q=1.0, depth=2) | bad
    with pytest.raises(EngineError):
        T.predict(**args)


def test_chi1_grid_agrees_with_predict_and_phase_diagram_draws(tmp_path):
    w, b = [0.5, 2.0, 3.0], [0.0, 0.1]
    grid = T.chi1_grid("relu", w, b)
    assert grid.shape == (2, 3) and grid[0, 1] == pytest.approx(1.0)
    tanh = T.chi1_grid("tanh", w, b)
    for i, sb2 in enumerate(b):
        for j, sw2 in enumerate(w):
            assert tanh[i, j] == pytest.approx(T.predict("tanh", sw2, sb2, 1.0, 1).chi1, rel=1e-9)
    from initlab.plots.phase import phase_diagram

    out = phase_diagram(tmp_path / "phase.png", "tanh", 1.76, 0.05, n=9)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
