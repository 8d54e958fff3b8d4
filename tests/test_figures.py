"""The figures tell the truth: tests on the figures' data (artists, ranges, texts), not on pixels.

Also the numbers beside them: the Jacobian block (rank, zeros, non-zero spread in float64), the
final-loss window, BatchNorm's ε and the sweep grid's consistency rule."""
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch

import initlab
from initlab.engine.model import InitSpec, build_mlp
from initlab.errors import ConfigError
from initlab.experiment import final_loss_window
from initlab.plots.common import smooth, smoothing_window
from initlab.plots.run import activations_figure, gradients_figure, jacobian_figure, loss_figure, plot_run
from initlab.sweeps.plan import command_axes, make_plan
from initlab.theory.jacobian import jacobian_singular_values, jacobian_summary
from tests.conftest import CONFIGS


def _run(tmp_path, config, *overrides, figures=False):
    cfg = initlab.load_config(CONFIGS / config, overrides=list(overrides))
    result = initlab.run(cfg, out=tmp_path, figures=figures)  # the tests draw the figures they look at
    assert result.run_dir, result
    return result


# ---------------------------------------------------------------- the Jacobian block


def _finite_difference_jacobian(model64, x, h=1e-6):
    def f(v):
        model64.forward(v[None, :], train=False)
        return model64.blocks[-1].output[0]

    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])


def test_relu_float32_rank_and_spread_match_float64_finite_differences():
    rng = np.random.default_rng(4)
    widths, n_in = [16, 16, 12], 10
    model32 = build_mlp(n_in, 3, widths, "relu", InitSpec("he_normal"), rng, dtype="float32")
    model64 = build_mlp(n_in, 3, widths, "relu", InitSpec("he_normal"), np.random.default_rng(0), dtype="float64")
    for p32, p64 in zip(model32.params(), model64.params()):  # the same weights, exactly, in float64
        p64.data[...] = p32.data.astype(np.float64)
    x = rng.standard_normal((3, n_in)).astype(np.float32)
    ours = jacobian_summary(jacobian_singular_values(model32, x, n_inputs=3))
    fd = np.stack([np.linalg.svd(_finite_difference_jacobian(model64, x[i].astype(np.float64)), compute_uv=False)
                   for i in range(3)])
    # central differences carry ~eps/h = 1e-10 of rounding, so their zeros are ~1e-10: a looser cut
    # for this path (the non-zero values here are all above 1e-2)
    fd_tol = 1e-7
    ranks = [(row > fd_tol * row.max()).sum() for row in fd]
    # dead ReLU units in the last layer make the Jacobian rank-deficient: a real test of the rank
    assert ours["n_per_input"] == 10 and min(ranks) < 10
    assert ours["numerical_rank"] == min(ranks) and ours["numerical_rank_max"] == max(ranks)
    assert ours["n_zero"] == sum(10 - r for r in ranks)
    nz = fd[fd > fd_tol * fd.max(axis=1, keepdims=True)]
    assert ours["log10_spread_nonzero"] == pytest.approx(math.log10(nz.max() / nz.min()), rel=1e-7)
    p5, p95 = np.percentile(nz, [5, 95])
    assert ours["log10_spread_90_nonzero"] == pytest.approx(math.log10(p95 / p5), rel=1e-7)
    # computed in float64: the float32 model's non-zero values agree with float64 arithmetic far
    # beyond float32's 1e-7 (they would not, were the product taken in float32)
    assert ours["nonzero_median"] == pytest.approx(float(np.median(nz)), rel=1e-8)
    for key in ("mean_sq", "max", "min", "median", "max_over_min", "log10_spread", "log10_spread_90",
                "frac_within_10pct", "n_inputs", "n_values"):
        assert key in ours  # existing keys are kept, never renamed


def test_the_jacobian_panel_states_the_zeros_and_draws_only_non_zero_values(tmp_path):
    r = _run(tmp_path, "relu_he.yaml", "record.samples=200")
    jac = r.metrics["jacobian"]
    assert jac["n_zero"] > 0 and jac["numerical_rank"] < jac["n_per_input"]
    fig = jacobian_figure(r.run_dir)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo > math.log10(jac["nonzero_min"]) - 1 and lo > -8  # no axis stretched to -300 by zeros
    assert sum(p.get_height() for p in ax.patches) == jac["n_values"] - jac["n_zero"]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"{jac['n_zero']} zero" in texts and "numerical rank" in texts


# ---------------------------------------------------------------- histograms: overlay and ranges


def _filled(ax):
    """Filled artists other than the histogram's own bars."""
    out = [p for p in ax.patches if not isinstance(p, StepPatch) and p.get_fill() and p.get_alpha() != 0]
    out += [c for c in ax.collections if len(c.get_facecolor()) and c.get_facecolor()[0][3] > 0]
    return out


def test_meanfield_overlay_is_a_thin_line_not_a_filled_region_and_can_be_switched_off(tmp_path):
    r = _run(tmp_path / "on", "tanh_xavier.yaml", "record.samples=200")
    fig = activations_figure(r.run_dir)
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 5
    for ax in panels:
        assert _filled(ax) == [], "no shaded region over (empty) bins"
        lines = [ln for ln in ax.lines if ln.get_gid() == "meanfield"]
        assert lines and all(ln.get_linewidth() <= 1.5 for ln in lines)
    off = _run(tmp_path / "off", "tanh_xavier.yaml", "record.samples=200", "record.theory=false")
    assert off.metrics.get("theory") is None and "predicted_std" not in off.metrics["layers"][0]
    fig = activations_figure(off.run_dir)
    assert not [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "meanfield"]
    assert "mean-field" not in fig.get_suptitle()


def test_collapsing_relu_gets_per_layer_ranges_that_follow_the_stds(tmp_path):
    r = _run(tmp_path, "relu_std0.01.yaml", "record.samples=300")
    stds = np.array([layer["std"] for layer in r.metrics["layers"]])
    assert stds[0] / stds[-1] > 100  # the collapse: ×~0.07 per layer
    fig = activations_figure(r.run_dir)
    panels = [ax for ax in fig.axes if ax.patches][:len(stds)]
    widths = np.array([np.subtract(*ax.get_xlim()[::-1]) for ax in panels])
    ratio = widths / stds
    assert ratio.max() / ratio.min() < 3, (widths, stds)  # each width is a few stds of its own layer
    assert all(ax.get_xlabel() == "own x-range" for ax in panels)
    assert "own x-range" in fig.get_suptitle()


def test_textbook_shared_axes_stay_where_they_make_the_point(tmp_path):
    r = _run(tmp_path, "sigmoid_std0.01.yaml", "record.samples=200")
    panels = [ax for ax in activations_figure(r.run_dir).axes if ax.patches]
    assert {ax.get_xlim() for ax in panels} == {(0.0, 1.0)} and not any(ax.get_xlabel() for ax in panels)


# ---------------------------------------------------------------- numbers agree with figures


def test_final_loss_window_is_at_most_100_steps_and_a_tenth_of_the_run():
    assert [final_loss_window(n) for n in (0, 1, 9, 10, 11, 50, 1000, 5000)] == [0, 1, 1, 1, 2, 5, 100, 100]


def test_exploding_demo_reports_its_end_not_its_mean(tmp_path):
    r = _run(tmp_path, "exploding_clip.yaml", "train.clip_norm=10")
    assert r.status == "completed" and r.metrics["final"]["train_loss_window"] == 5
    loss = r.history["train_loss"]
    # the loss oscillates by 10× from step to step here: "where the curve ends" is the figure's
    # moving mean at the last step (the run's mean, 100× larger, is what it used to report)
    end = smooth(loss, smoothing_window(len(loss)))[-1]
    assert 0.5 * end <= r.metrics["final"]["train_loss"] <= 2 * end
    assert np.mean(loss) > 10 * r.metrics["final"]["train_loss"]


def test_diverged_run_marks_the_step_metrics_name(tmp_path):
    r = _run(tmp_path, "relu_he.yaml", "init.scheme=normal", "init.std=10", "optimizer.lr=10",
             "train.steps=30", "data.samples=200", "model.depth=5", "record.samples=100")
    assert r.status == "diverged"
    at = r.metrics["diverged_at_step"]
    ax = loss_figure(r.run_dir).axes[0]
    labels = [ln.get_label() for ln in ax.lines]
    assert f"non-finite at step {at}" in labels
    marker = ax.lines[labels.index(f"non-finite at step {at}")]
    assert marker.get_xdata()[0] == at and ax.get_xlim()[1] >= at
    written = plot_run(r.run_dir)  # the CLI's PNGs are these figures
    assert {p.name for p in written} == {"activations.png", "gradients.png", "jacobian.png", "loss.png"}
    assert all(p.stat().st_size > 10_000 for p in written)


# ---------------------------------------------------------------- layout: titles fit, deep nets wrap


def _outside(fig, texts):
    """The texts whose rendered extent leaves the canvas (one draw per figure: drawing is the cost)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    w, h = fig.canvas.get_width_height()
    out = []
    for t in texts:
        box = t.get_window_extent(renderer)
        if not (box.x0 >= -1 and box.x1 <= w + 1 and box.y0 >= -1 and box.y1 <= h + 1):
            out.append(t.get_text())
    return out


def test_every_title_fits_its_figure_and_deep_nets_wrap_into_rows(tmp_path):
    r = _run(tmp_path, "zero_init.yaml", "name=a_rather_long_experiment_name_for_the_title_test",
             "model.depth=12", "train.steps=20")
    figs = [activations_figure(r.run_dir), gradients_figure(r.run_dir), jacobian_figure(r.run_dir),
            loss_figure(r.run_dir)]
    for fig in figs:
        assert isinstance(fig, Figure)
        titles = [t for t in [fig._suptitle] if t is not None] + [ax.title for ax in fig.axes if ax.get_title()]
        assert titles and _outside(fig, titles) == []
    act = figs[0]
    assert act.get_figwidth() <= 13, "12 layers: rows of at most 5 panels, not a 2000-pixel strip"
    rows = {round(ax.get_position().y0, 3) for ax in act.axes if ax.patches}
    assert len(rows) >= 4  # 10 panels × (init, after training), 2 rows each


def test_sweep_figure_is_a_figure_with_readable_labels(tmp_path):
    from initlab.plots.sweep import sweep_figure
    from initlab.sweeps.runner import sweep as run_sweep

    sweep = run_sweep(CONFIGS / "meanfield_tanh.yaml", out=tmp_path, workers=1,
                      overrides=["model.depth=3", "model.width=40", "data.features=40", "data.samples=60",
                                 "record.samples=60"])
    fig = sweep_figure(sweep.sweep_dir)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts if "σ_w²" in t.get_text()]
    assert len(labels) == 3 and "gain=" not in " ".join(labels)
    assert any("ordered" in t for t in labels) and any("χ₁=" in t for t in labels)
    assert _outside(fig, [fig._suptitle]) == []


def test_sweep_per_layer_panel_names_the_points_that_are_zero_on_its_log_axis(tmp_path):
    """ReZero and Fixup start with zero branch gradients: a log axis cannot draw them, so the panel says so."""
    from initlab.plots.sweep import sweep_figure
    from initlab.sweeps.runner import sweep as run_sweep

    cfg = {"data": {"kind": "teacher", "samples": 200, "features": 10, "classes": 3, "eval_samples": 100},
           "model": {"depth": 4, "width": 10, "activation": "relu", "residual": True},
           "train": {"steps": 20, "batch_size": 20}, "record": {"samples": 100},
           "sweep": {"points": [{"model": {"branch_scale": "1/sqrt(depth)"}}, {"model": {"branch_scale": "rezero"}},
                                {"init": {"scheme": "fixup"}}]}}
    sweep = run_sweep(cfg, out=tmp_path, workers=1)
    fig = sweep_figure(sweep.sweep_dir)
    [grad_ax] = [ax for ax in fig.axes if ax.get_title().startswith("weight-gradient norm at init")]
    legend = grad_ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("rezero" in t and "0 in 3 of 4 layers" in t for t in texts), texts
    assert any("fixup" in t and "0 in every layer" in t for t in texts), texts
    assert not any("1/sqrt(depth)" in t for t in texts)


def test_seeds_draw_one_median_and_a_band_per_point_in_the_per_layer_panels(tmp_path):
    from matplotlib.collections import PolyCollection

    from initlab.plots.sweep import sweep_figure
    from initlab.sweeps.runner import sweep as run_sweep

    cfg = {"data": {"kind": "teacher", "samples": 200, "features": 10, "classes": 3, "eval_samples": 100},
           "model": {"depth": 3, "width": 10, "activation": "relu"}, "train": {"steps": 10, "batch_size": 20},
           "record": {"samples": 100}, "sweep": {"init.scheme": ["xavier_uniform", "he_uniform"]}}
    sweep = run_sweep(cfg, out=tmp_path, workers=1, seeds=4)
    fig = sweep_figure(sweep.sweep_dir)
    for title in ("activation std at init", "weight-gradient norm at init"):
        [ax] = [a for a in fig.axes if a.get_title().startswith(title)]
        assert "median of 4 seeds" in ax.get_title()
        assert len(ax.get_lines()) == 2  # one median per point, not 8 seed lines
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2


def test_a_two_axis_grid_gets_a_hue_per_first_axis_value_and_a_shade_per_second():
    """norm_small_batch's 3 norms × 4 batch sizes: 3 colour families, dark to light by batch size."""
    from types import SimpleNamespace

    from matplotlib.colors import rgb_to_hsv

    from initlab.plots.sweep_curves import _two_axis_palette

    norms = [{"batchnorm": False, "layernorm": False}, {"batchnorm": True}, {"layernorm": True}]
    batches = [2, 8, 32, 128]
    axes = [{"key": "model", "values": norms}, {"key": "train.batch_size", "values": batches}]
    points = [SimpleNamespace(index=4 * i + j, overrides={**{f"model.{k}": v for k, v in n.items()},
                                                           "train.batch_size": b})
              for i, n in enumerate(norms) for j, b in enumerate(batches)]
    colors = _two_axis_palette(points, axes)
    hsv = {k: rgb_to_hsv(c) for k, c in colors.items()}
    for i in range(3):
        family = [hsv[4 * i + j] for j in range(4)]
        assert max(h[0] for h in family) - min(h[0] for h in family) < 0.02  # one hue per norm
        lightness = [sum(colors[4 * i + j]) for j in range(4)]
        assert lightness == sorted(lightness) and len(set(lightness)) == 4  # darker = smaller batch
    assert len({round(hsv[4 * i][0], 2) for i in range(3)}) == 3
    # not a two-axis grid, or a point that matches no value: the ordinary palette is used
    assert _two_axis_palette(points, axes[:1]) is None
    assert _two_axis_palette(points + [SimpleNamespace(index=99, overrides={"train.batch_size": 5})], axes) is None


# ---------------------------------------------------------------- sweep grid: consistent settings


def test_std_with_a_consistent_scheme_is_accepted_and_a_contradiction_refused():
    plan = make_plan(CONFIGS / "relu_he.yaml", command_axes(std="0.1,0.05", sets=["init.scheme=normal"]))
    assert [p.config.init.std for p in plan.points] == [0.1, 0.05]
    assert {p.config.init.scheme for p in plan.points} == {"normal"}
    with pytest.raises(ConfigError, match="set twice"):
        make_plan(CONFIGS / "relu_he.yaml", command_axes(std="0.1,0.05", sets=["init.scheme=he_normal"]))
    with pytest.raises(ConfigError, match="set twice"):
        make_plan(CONFIGS / "relu_he.yaml", command_axes(std="0.1,0.05", sets=["init.std=0.3"]))


def test_bn_eps_reaches_batchnorm():
    cfg = initlab.load_config({"model": {"batchnorm": True, "depth": 2, "width": 4}})
    assert cfg.model.bn_eps == 1e-5
    from initlab.experiment import build

    model = build(initlab.load_config({"model": {"batchnorm": True, "depth": 2, "width": 4, "bn_eps": 1e-6}}))[1]
    assert {b.norm.eps for b in model.blocks} == {1e-6}


def test_the_gradient_panel_says_what_the_norms_were_measured_on(tmp_path):
    from initlab.plots.common import grad_norm_source

    assert grad_norm_source({"record": {"grad_from": "step"}, "train": {"batch_size": 128}}) == \
        "a training minibatch of 128"
    assert grad_norm_source({"record": {"grad_from": "probe", "grad_samples": 100, "samples": 1000}}) == \
        "the first 100 probe inputs"
    assert grad_norm_source({"record": {"grad_from": "probe", "grad_samples": None, "samples": 1000}}) == "the probe batch"
    # a config saved before grad_from existed (every key listed, this one absent): 0.2's probe inputs
    assert grad_norm_source({"record": {"grad_samples": 100, "samples": 1000}}) == "the first 100 probe inputs"
    result = initlab.run({"data": {"kind": "teacher", "samples": 200, "features": 8}, "train": {"steps": 5}},
                         out=str(tmp_path))
    from initlab.plots.run import gradients_figure

    fig = gradients_figure(result.run_dir)
    assert fig.axes[0].get_ylabel() == "‖∂loss/∂W‖ on a training minibatch of 100"


def test_titles_placed_at_the_top_draw_the_same_pixels_as_matplotlibs_automatic_placement(tmp_path, monkeypatch):
    """Every figure builder creates its axes with titles at y = 1 (plots.common.TITLE_RC), which skips
    matplotlib's search for tick labels above an axes: right only while no figure puts any there."""
    import io

    from PIL import Image

    import initlab.plots.common as common
    from initlab.comparison import compare_series
    from initlab.plots.compare import compare_figure
    from initlab.plots.sweep import sweep_figure
    from initlab.results import load_run

    run = _run(tmp_path / "run", "relu_he.yaml", "train.steps=30", "train.eval_every=10", "model.depth=3",
               "model.width=20", "data.features=20", "data.samples=200", "record.samples=100", "record.every=10")
    tiny = {"data": {"features": 10, "samples": 100, "eval_samples": 50}, "model": {"depth": 2, "width": 10},
            "train": {"steps": 20, "batch_size": 20, "eval_every": 10}, "record": {"samples": 50, "every": 10}}
    grid = initlab.sweep(dict(tiny, init={"scheme": "normal"}),
                         {"init.std": [1.0, 0.3, 0.1], "model.batchnorm": [False, True]}, out=tmp_path, workers=1)
    overlay = initlab.sweep(tiny, {"model.depth": [2, 3]}, out=tmp_path, workers=1)
    forward = initlab.sweep(dict(tiny, train={"steps": 0}), {"init.gain": [0.5, 2.0]}, out=tmp_path, workers=1)
    series = [compare_series(load_run(run.run_dir), "a"), compare_series(load_run(run.run_dir), "b")]
    builds = {
        "activations": lambda: activations_figure(run.run_dir), "loss": lambda: loss_figure(run.run_dir),
        "gradients": lambda: gradients_figure(run.run_dir), "jacobian": lambda: jacobian_figure(run.run_dir),
        "grid sweep": lambda: sweep_figure(grid.sweep_dir), "training sweep": lambda: sweep_figure(overlay.sweep_dir),
        "forward sweep": lambda: sweep_figure(forward.sweep_dir), "compare": lambda: compare_figure(series, "t"),
    }

    def pixels(make):
        buf = io.BytesIO()
        make().savefig(buf, format="png")
        return np.asarray(Image.open(buf))

    for name, make in builds.items():  # matplotlib's own flag: the search is skipped (private, but the point)
        assert all(ax._autotitlepos is False for ax in make().axes), name
    fixed = {name: pixels(make) for name, make in builds.items()}
    monkeypatch.setattr(common, "TITLE_RC", {"axes.titley": None})  # matplotlib's automatic placement
    for name, make in builds.items():
        auto = pixels(make)
        assert auto.shape == fixed[name].shape and np.array_equal(auto, fixed[name]), name
