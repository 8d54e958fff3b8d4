"""The bundled sweeps reproduce what the seeds claim, with their real settings (10×10 nets, 100 samples)."""
import numpy as np
import pytest

import initlab
from initlab.output.files import read_history, read_json
from tests.conftest import CONFIGS


def run(name, tmp_path):
    res = initlab.sweep(CONFIGS / f"{name}.yaml", out=tmp_path, workers=2)
    assert (res.sweep_dir / "sweep.png").is_file()
    histories = [read_history(res.sweep_dir / p["run_dir"] / "history.csv") for p in res.points]
    return res, histories


def test_vanishing_sigmoid_learns_slowly_relu_fast(tmp_path):
    res, (sig, relu) = run("vanishing_sigmoid_vs_relu", tmp_path)
    assert [p["overrides"] for p in res.points] == [{"model.activation": "sigmoid"}, {"model.activation": "relu"}]
    assert [p["status"] for p in res.points] == ["completed", "completed"]
    s, r = (p["final"]["train_loss"] for p in res.points)
    assert s > 6.0  # stalls near the variance of y (≈ 9.25): the net predicts about the mean
    assert r < 0.25 * s  # ReLU gets most of the way to the noise floor (0.25)
    assert relu["train_loss"][50:150].mean() < 0.5 * sig["train_loss"][50:150].mean()  # and gets there early
    # why: sigmoid's gradient vanishes on its way down (σ' ≤ 1/4 per layer), ReLU's does not
    grads = [[layer["grad_norm"] for layer in read_json(res.sweep_dir / p["run_dir"] / "metrics.json")["layers"]]
             for p in res.points]
    assert grads[0][0] / grads[0][-1] < 1e-3 and grads[1][0] / grads[1][-1] > 1e-1


def test_exploding_without_clipping_blows_up_with_clipping_decreases(tmp_path):
    res, (raw, clipped) = run("exploding_clip", tmp_path)
    assert [p["overrides"] for p in res.points] == [{"train.clip_norm": None}, {"train.clip_norm": 10.0}]
    first = raw["train_loss"][0]
    assert first > 1e20  # std-10 weights: the signal grows ~22× per layer
    # without clipping: the loss becomes non-finite (a result, not a failure) or jumps far up
    assert res.points[0]["status"] == "diverged" or np.nanmax(raw["train_loss"]) > 100 * first
    # with clip_norm 10: it decreases by orders of magnitude over the 50 steps
    assert res.points[1]["status"] == "completed"
    loss = clipped["train_loss"]
    assert np.median(loss[-10:]) < loss[0] / 100
    assert np.median(np.log10(loss[25:])) < np.median(np.log10(loss[:25])) - 0.5  # second half lower
    assert np.nanmax(clipped["grad_norm"]) > 10  # the norm before clipping is reported, far above the limit


def test_he_trains_the_10_layer_relu_net_faster_than_xavier(tmp_path):
    res, (xavier, he) = run("xavier_vs_kaiming", tmp_path)
    assert [p["overrides"] for p in res.points] == [{"init.scheme": "xavier_uniform"}, {"init.scheme": "he_uniform"}]
    x, h = (p["final"]["train_loss"] for p in res.points)
    assert h < 0.75 * x
    assert he["train_loss"].mean() < 0.5 * xavier["train_loss"].mean()  # area under the curve: faster
    assert he["train_loss"][:100].mean() < 0.6 * xavier["train_loss"][:100].mean()
    # why: Xavier's activations shrink with depth, He's keep their size
    xs, hs = (p["init_std"] for p in res.points)
    assert xs[-1] / xs[0] < 0.05 and hs[-1] / hs[0] > 0.1


@pytest.mark.parametrize("name", ["vanishing_sigmoid_vs_relu", "exploding_clip", "xavier_vs_kaiming"])
def test_bundled_sweeps_have_two_points_and_a_comment_saying_what_to_see(name):
    from initlab.sweeps.plan import make_plan

    plan = make_plan(CONFIGS / f"{name}.yaml")
    assert len(plan.points) == 2 and plan.name == name
    assert "What to see" in (CONFIGS / f"{name}.yaml").read_text()
