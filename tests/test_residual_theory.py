"""Residual nets end to end: the mean-field recursion, config keys and bad input, metrics and figures."""
import math
import os
from pathlib import Path

import numpy as np
import pytest

import initlab
from initlab.cli import cli
from initlab.engine.model import InitSpec, build_mlp
from initlab.engine.residual import STRUCTURAL
from initlab.errors import ConfigError
from initlab.experiment import train
from initlab.theory.residual import predict_residual
from initlab.theory.schemes import predict_mlp
from tests.conftest import strict_json

# ------------------------------------------------------------------------------- the recursion


def test_linear_activation_stream_grows_geometrically_by_one_plus_alpha2_sigma_w2():
    """φ = identity: E[φ(h)²] = E[h²], so q_{l+1} = q_l·(1 + α²σ_w²) exactly (and q₁ = σ_w²·input_q)."""
    p = predict_residual("linear", [1.5] * 6, 0.0, 2.0, alpha=0.5)
    q = p.residual["stream_q"]
    assert q[0] == pytest.approx(3.0, rel=1e-9)
    for a, b in zip(q, q[1:]):
        assert b / a == pytest.approx(1 + 0.25 * 1.5, rel=1e-6)


def test_relu_he_alpha_one_doubles_at_the_first_block():
    """The stem's output s = relu(z) ≥ 0, so the first branch sees E[relu(s)²] = E[s²]: with He (σ_w² = 2)
    it adds 2·E[s²] and the stream's second moment triples at layer 2 (it doubles within one block)."""
    p = predict_mlp(InitSpec("he_normal"), 50, [100] * 5, "relu", 1.0, residual=True)
    q = p.residual["stream_q"]
    assert q[0] == pytest.approx(1.0, rel=1e-9)  # σ_w²·input_q/2 = 2·1/2
    assert q[1] == pytest.approx(3.0, rel=1e-6)
    assert p.residual["doubling_depth"] == 2
    assert p.theory()["residual"]["n_blocks"] == 4


def test_additive_growth_and_the_doubling_depth_follow_alpha():
    depth = 50
    ps = {bs: predict_mlp(InitSpec("he_normal"), 50, [100] * depth, "relu", 1.0, residual=True, branch_scale=bs)
          for bs in (1.0, "1/sqrt(depth)", "1/depth", "rezero")}
    one, sqrt, lin, rezero = (ps[k].residual for k in (1.0, "1/sqrt(depth)", "1/depth", "rezero"))
    assert one["doubling_depth"] == 2
    # 1/√L: each block adds ~q/L·(1..2), the stream ends a bounded factor (between e and e²) above the stem's
    assert math.e < sqrt["stream_q"][-1] / sqrt["stream_q"][0] < math.e ** 2
    assert 10 < sqrt["doubling_depth"] < depth
    # 1/L: growth O(1/L) in total: it never doubles inside the net; continued, it doubles much later
    assert lin["stream_q"][-1] / lin["stream_q"][0] < 1.1
    assert lin["doubling_depth"] is None or lin["doubling_depth"] > depth
    # ReZero: α = 0, the stream is the stem's at every layer and never doubles
    assert rezero["stream_q"] == pytest.approx([rezero["stream_q"][0]] * depth)
    assert rezero["doubling_depth"] is None
    # q grows additively: the increments are non-negative and the stream never shrinks
    assert all(b >= a for a, b in zip(sqrt["stream_q"], sqrt["stream_q"][1:]))


def test_fixup_and_skipinit_predict_the_stem_everywhere():
    for scheme in STRUCTURAL:
        p = predict_mlp(InitSpec(scheme), 30, [200] * 6, "relu", 1.0, residual=True)
        assert p.residual["doubling_depth"] is None
        assert p.act_std == pytest.approx([p.act_std[0]] * 6, rel=1e-9)


def ensemble(widths, activation, branch_scale, norm, seeds=4, n=300, n_in=80):
    """Per-layer mean over seeds of the measured activation and pre-activation std (float64, training mode)."""
    act, pre = [], []
    for seed in range(seeds):
        m = build_mlp(n_in, 10, widths, activation, InitSpec("he_normal"), np.random.default_rng(seed),
                      residual=True, branch_scale=branch_scale, layernorm=norm == "layernorm",
                      batchnorm=norm == "batchnorm", dtype="float64")
        x = np.random.default_rng(1000 + seed).standard_normal((n, n_in))
        m.forward(x, train=True)
        act.append([b.output.std() for b in m.blocks])
        pre.append([b.preact.std() for b in m.blocks])
    return np.mean(act, axis=0), np.mean(pre, axis=0)


@pytest.mark.parametrize("activation, branch_scale, norm", [
    ("relu", "1/sqrt(depth)", None),
    ("relu", 0.5, "layernorm"),
    ("tanh", 1.0, None),
    ("relu", 1.0, "batchnorm"),
])
def test_prediction_within_5_percent_of_an_ensemble_at_width_500(activation, branch_scale, norm):
    widths = [500] * 6
    p = predict_mlp(InitSpec("he_normal"), 80, widths, activation, 1.0, residual=True, branch_scale=branch_scale,
                    layernorm=norm == "layernorm", batchnorm=norm == "batchnorm")
    act, pre = ensemble(widths, activation, branch_scale, norm)
    np.testing.assert_allclose(p.act_std, act, rtol=0.05)
    np.testing.assert_allclose(p.preact_std, pre, rtol=0.05)


# ---------------------------------------------------------------------------- config and runs

SMALL = {"data": {"samples": 300, "eval_samples": 100, "features": 20}, "record": {"samples": 200}}


def small(model, init=None, **train):
    return initlab.load_config({**SMALL, "model": {"width": 30, "activation": "relu", **model},
                                "init": init or {"scheme": "he_normal"}, "train": {"steps": 20, **train}})


def test_plain_config_is_built_exactly_as_before():
    """residual: false passes no residual keywords: the same weights, the same training, the same metrics."""
    a = train(small({"depth": 3}))
    b = train(small({"depth": 3, "residual": False}))
    assert a.metrics["final"] == b.metrics["final"]
    assert a.metrics["theory"]["residual"] is None
    assert all(type(blk).__name__ == "Block" for blk in a.model.blocks)


def test_residual_run_records_prediction_next_to_measurement(tmp_path):
    cfg = small({"depth": 8, "residual": True, "branch_scale": "1/sqrt(depth)"})
    r = initlab.run(cfg, out=tmp_path)
    assert r.status == "completed"
    m = strict_json((Path(r.run_dir) / "metrics.json").read_text())
    res = m["theory"]["residual"]
    assert res["n_blocks"] == 7 and res["branch_scale"] == pytest.approx(1 / math.sqrt(7))
    assert len(res["stream_q"]) == 8 and res["doubling_depth"] >= 2
    for layer in m["layers"]:
        assert layer["predicted_std"] == pytest.approx(layer["std"], rel=0.25)  # width 30, one net
    assert "jacobian" in m and m["jacobian"]["n_values"] > 0
    assert (Path(r.run_dir) / "activations.png").stat().st_size > 0


@pytest.mark.parametrize("scheme", sorted(STRUCTURAL))
def test_structural_schemes_run_from_a_config(scheme):
    r = train(small({"depth": 4, "residual": True}, {"scheme": scheme}))
    assert r.status == "completed", r.error
    assert r.metrics["theory"]["residual"]["doubling_depth"] is None


def test_rezero_alpha_is_trained_from_a_config():
    r = train(small({"depth": 4, "residual": True, "branch_scale": "rezero"}))
    assert r.model.blocks[1].alpha.data.any()


BAD = {
    "branch-scale-without-residual": ("model.branch_scale=0.5", "residual nets only"),
    "residual-depth-1": ("model.residual=true\nmodel.depth=1", "depth ≥ 2"),
    "residual-unequal-widths": ("model.residual=true\nmodel.depth=2\nmodel.width=[10, 20]", "same width"),
    "alpha-inf": ("model.residual=true\nmodel.branch_scale=.inf", "finite"),
    "alpha-nan": ("model.residual=true\nmodel.branch_scale=.nan", "finite"),
    "alpha-name": ("model.residual=true\nmodel.branch_scale=1/sqrt(L)", "1/sqrt(depth)"),
    "alpha-bool": ("model.residual=true\nmodel.branch_scale=true", "number"),
    "fixup-with-batchnorm": ("model.residual=true\ninit.scheme=fixup\nmodel.batchnorm=true", "fixup replaces normalization"),
    "fixup-with-layernorm": ("model.residual=true\ninit.scheme=fixup\nmodel.layernorm=true", "fixup replaces normalization"),
    "fixup-plain": ("init.scheme=fixup", "residual"),
    "skipinit-plain": ("init.scheme=skipinit", "residual"),
    "skipinit-with-alpha": ("model.residual=true\ninit.scheme=skipinit\nmodel.branch_scale=0.5", "skipinit sets it"),
    "lsuv-residual": ("model.residual=true\ninit.scheme=lsuv", "plain nets"),
    "pixel-scale-not-mnist": ("data.pixel_scale=raw", "mnist only"),
    "pixel-scale-unknown": ("data.kind=mnist\ndata.pixel_scale=huge", "pixel_scale"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_residual_input_is_one_error_line_exit_2_nothing_written(runner, tmp_path, case):
    sets, fragment = BAD[case]
    args = ["run", "--out", "outputs"]
    for s in sets.split("\n"):
        args += ["--set", s]
    res = runner.invoke(cli, args, catch_exceptions=False)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.stderr, res.stderr
    assert fragment in lines[0], lines[0]
    assert not Path("outputs").exists()


def test_bad_input_is_a_config_error_in_the_library():
    with pytest.raises(ConfigError, match="branch_scale"):
        initlab.load_config({"model": {"branch_scale": "rezero"}})


@pytest.mark.parametrize("name, points", [("residual_depth.yaml", 5), ("norm_small_batch.yaml", 12),
                                          ("mnist_standardization.yaml", 3)])
def test_bundled_config_is_valid_and_commented(configs_dir, name, points):
    from initlab.sweeps.plan import make_plan

    text = (configs_dir / name).read_text()
    assert text.startswith("#") and "What to look at" in text and "Run: initlab sweep" in text
    assert len(make_plan(configs_dir / name).points) == points  # every point validates


def test_residual_depth_has_fixup_as_its_fifth_point(configs_dir):
    from initlab.sweeps.plan import make_plan

    fixup = make_plan(configs_dir / "residual_depth.yaml").points[4].config
    assert fixup.model.depth == 50 and fixup.model.residual and fixup.init.scheme == "fixup"


def test_data_dir_is_not_hard_coded():
    src = Path(initlab.__file__).parent
    for path in [src / "engine" / "residual.py", src / "theory" / "residual.py"]:
        assert "/work/" not in path.read_text() and os.sep + "shared" not in path.read_text()
