"""The textbook's histogram findings (ch. 6), asserted on recorded statistics: 5×100 net, 1000×100 Gaussian input, no bias."""
import numpy as np
import pytest

import initlab


def layers(activation, scheme, std=None, depth=5, seed=0):
    init = {"scheme": scheme} if std is None else {"scheme": scheme, "std": std}
    cfg = {"seed": seed, "model": {"depth": depth, "width": 100, "activation": activation, "bias": False}, "init": init}
    result = initlab.run(cfg)
    assert result.status == "completed"
    return result, result.metrics["layers"]


def test_sigmoid_std1_is_bimodal_at_every_layer():
    result, ls = layers("sigmoid", "normal", 1.0)
    for layer in ls:
        assert layer["saturated_frac"] > 0.6, layer  # most values below 0.1 or above 0.9
    counts = result.snapshots[0].data["act_counts"]
    for c in counts:  # the two outer bins of [0,1] hold more than any inner bin
        assert c[0] > c[1:-1].max() and c[-1] > c[1:-1].max()


def test_sigmoid_std001_collapses_on_one_half():
    _, ls = layers("sigmoid", "normal", 0.01)
    for layer in ls[1:]:
        assert abs(layer["mean"] - 0.5) < 0.01
        assert layer["std"] < 0.02
        assert layer["saturated_frac"] == 0.0


def test_one_over_sqrt_n_keeps_a_wide_spread():
    _, small = layers("sigmoid", "normal", 0.01)
    _, xavier = layers("sigmoid", "lecun_normal")
    for a, b in zip(xavier, small):
        assert a["std"] > 4 * b["std"]


def test_relu_std001_shrinks_by_about_007_per_layer():
    _, ls = layers("relu", "normal", 0.01)
    ratios = [b["std"] / a["std"] for a, b in zip(ls, ls[1:])]
    # E[relu(z)²] = σ²/2, so the spread shrinks by 0.01·√(100/2) ≈ 0.071 per layer.
    for r in ratios:
        assert 0.05 < r < 0.09, ratios


def test_relu_xavier_shrinks_by_about_07_per_layer():
    _, ls = layers("relu", "lecun_normal")
    ratios = [b["std"] / a["std"] for a, b in zip(ls, ls[1:])]
    assert all(0.6 < r < 0.85 for r in ratios), ratios


def test_relu_he_keeps_the_spread():
    _, ls = layers("relu", "he_normal")
    stds = [layer["std"] for layer in ls]
    assert max(stds) / min(stds) < 1.25, stds


def test_about_half_of_relu_outputs_are_zero():
    for scheme in ("lecun_normal", "he_normal"):
        _, ls = layers("relu", scheme)
        for layer in ls:
            assert 0.4 < layer["dead_frac"] < 0.6


def test_tanh_xavier_stays_zero_centred():
    _, ls = layers("tanh", "lecun_normal")
    for layer in ls:
        assert abs(layer["mean"]) < 0.05
        assert layer["std"] > 0.2


@pytest.mark.parametrize("scheme,extra", [("zeros", {}), ("constant", {"value": 0.05})])
def test_symmetric_init_never_breaks_symmetry(scheme, extra):
    cfg = {
        "data": {"kind": "teacher", "samples": 500, "features": 12, "classes": 3},
        "model": {"depth": 3, "width": 8, "activation": "sigmoid"},
        "init": {"scheme": scheme, **extra},
        "optimizer": {"name": "sgd", "lr": 0.5},
        "train": {"steps": 200, "batch_size": 50},
    }
    result = initlab.run(cfg)
    assert result.status == "completed"
    moved = False
    for block in result.model.blocks:
        W = block.linear.W.data
        # every column (a unit's incoming weights) equals the first one
        np.testing.assert_array_equal(W, np.repeat(W[:, :1], W.shape[1], axis=1))
        moved |= bool(np.abs(W - (extra.get("value", 0.0))).max() > 1e-6)
    assert moved, "training must actually change the weights for the test to mean anything"


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    cfg = {"model": {"depth": 3, "width": 20, "activation": "relu"}, "init": {"scheme": "he_normal"},
           "data": {"kind": "teacher", "samples": 300, "features": 10}, "train": {"steps": 30, "batch_size": 32, "eval_every": 10}}
    a = initlab.run(cfg, out=tmp_path)
    b = initlab.run(cfg, out=tmp_path)
    assert a.run_dir != b.run_dir
    strip = lambda m: {k: v for k, v in m.items() if k != "timing"}  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)
    # the saved config reproduces the run
    c = initlab.run(initlab.load_config(f"{a.run_dir}/config.yaml"), out=tmp_path)
    assert strip(c.metrics)["final"] == strip(a.metrics)["final"]
    assert strip(c.metrics)["layers"] == strip(a.metrics)["layers"]
    assert c.metrics["config_hash"] == a.metrics["config_hash"]


def test_recording_schedule_does_not_change_training():
    base = {"model": {"depth": 3, "width": 20, "activation": "tanh", "batchnorm": True},
            "data": {"kind": "teacher", "samples": 300, "features": 10}, "train": {"steps": 40, "batch_size": 32}}
    a = initlab.run(base)
    b = initlab.run({**base, "record": {"every": 5}, "train": {**base["train"], "eval_every": 3}})
    assert len(b.snapshots) > len(a.snapshots)
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
