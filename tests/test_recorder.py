"""The recorder's fast histogram and moments agree with NumPy's reference functions; gradient
norms on a sub-probe agree with the whole probe's within sampling error; recording never changes training."""
import numpy as np
import pytest

import initlab
from initlab.experiment import build, train
from initlab.layer_stats import bin_counts, fit_range, histograms, limits, moments, summaries, summary
from initlab.recorder import FIELDS, Recorder


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "uniform", "relu", "constant-ish"])
def test_bin_counts_match_numpy_histogram(dtype, kind):
    rng = np.random.default_rng(1)
    a = {"normal": rng.standard_normal((500, 40)), "uniform": rng.random((500, 40)),
         "relu": np.maximum(rng.standard_normal((500, 40)), 0),
         "constant-ish": 0.5 + 1e-4 * rng.standard_normal((500, 40))}[kind].astype(dtype)
    lo, hi = fit_range([a])
    for mine, ref in ((bin_counts(a, 30, lo, hi, inside=True), np.histogram(a, 30, (lo, hi))[0]),
                      (bin_counts(a, 30, 0.0, 1.0), np.histogram(a, 30, (0.0, 1.0))[0])):
        assert mine.sum() == ref.sum()
        if kind != "constant-ish":
            np.testing.assert_array_equal(mine, ref)
        else:  # values on a float32 grid that falls on a bin edge may land in the neighbouring bin
            assert np.abs(mine - ref).sum() <= 0.002 * a.size


def test_values_outside_a_given_range_and_nan_are_left_out():
    a = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    counts = bin_counts(a, 2, 0.0, 1.0)
    assert counts.tolist() == [1, 2]  # 0.0 | 0.5 and 1.0 (the right edge belongs to the last bin)


def test_histograms_share_one_range_across_layers():
    a, b = np.linspace(0, 1, 100).reshape(10, 10), np.linspace(0, 4, 100).reshape(10, 10)
    counts, edges = histograms([a, b], 8, None)
    np.testing.assert_array_equal(edges[0], edges[1])
    assert edges[0][0] == 0 and edges[0][-1] == 4 and counts.sum() == 200


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_match_numpy(dtype):
    rng = np.random.default_rng(2)
    arrays = [(0.5 + 0.01 * rng.standard_normal((300, 50))).astype(dtype), rng.standard_normal((300, 50)).astype(dtype)]
    mean, std = moments(arrays)
    for a, m, s in zip(arrays, mean, std):
        assert m == pytest.approx(a.mean(dtype=np.float64), rel=1e-12, abs=1e-15)
        assert s == pytest.approx(a.std(dtype=np.float64), rel=1e-6)


@pytest.mark.parametrize("bins", [1, 7, 30, 33, 34, 200, 1500])
@pytest.mark.parametrize("size", [2, 3, 999, 1000, 1001])
def test_grouped_counting_matches_numpy_for_every_group_size(bins, size):
    # bins ≤ 33 count triples, ≤ 999 pairs, more one value at a time; sizes leave remainders
    a = np.random.default_rng(bins * size).standard_normal(size).astype(np.float32)
    lo, hi = fit_range([a])
    mine = bin_counts(a, bins, lo, hi, inside=True)
    assert mine.sum() == size and len(mine) == bins
    np.testing.assert_array_equal(mine, np.histogram(a, bins, (lo, hi))[0])
    np.testing.assert_array_equal(bin_counts(a, bins, -1.0, 1.0), np.histogram(a, bins, (-1.0, 1.0))[0])


def _reference_summary(a):
    a64 = a.astype(np.float64)
    return a64.mean(), a64.std(), a64.std(axis=1).mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "relu", "offset", "first-outlier", "equal-units", "one-unit"])
def test_summary_matches_numpy(dtype, kind):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((300, 50))
    a = {"normal": z, "relu": np.maximum(z, 0), "offset": 1e3 + 0.01 * z,
         "first-outlier": np.column_stack([np.full(300, 50.0), 1 + 0.01 * z[:, 1:]]),
         "equal-units": np.repeat(z[:, :1], 50, axis=1), "one-unit": z[:, :1]}[kind].astype(dtype)
    mean, std, spread = summary(a)
    m, s, u = _reference_summary(a)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert mean == pytest.approx(m, rel=tol, abs=tol * s)
    assert std == pytest.approx(s, rel=tol)
    assert spread == pytest.approx(u, rel=10 * tol, abs=tol * s)
    if kind in ("equal-units", "one-unit"):
        assert spread == 0.0  # every unit the same unit: exactly, not up to rounding


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 1e30])
def test_summary_of_nonfinite_or_huge_values_is_numpys(value):
    a = np.random.default_rng(4).standard_normal((20, 10)).astype(np.float32)
    a[3, 4] = value
    with np.errstate(all="ignore"):
        mean, std, spread = summary(a)
        m, s, u = _reference_summary(a)
    np.testing.assert_allclose([mean, std, spread], [m, s, u], rtol=1e-6)


def _model_and_probe(batchnorm=False, n=1000):
    cfg = initlab.load_config({"data": {"kind": "teacher", "samples": n, "features": 30},
                               "model": {"depth": 3, "width": 40, "activation": "tanh", "batchnorm": batchnorm},
                               "init": {"scheme": "xavier_normal"}})
    data, model, loss, *_ = build(cfg)
    return model, loss, data.x_train[:n], data.y_train[:n]


def _layer_grad_norms(model, loss, x, y):
    loss.forward(model.forward(x, train=True), y)
    model.backward(loss.backward(), input_grad=False)
    return np.array([np.linalg.norm(b.linear.W.grad.astype(np.float64)) for b in model.blocks])


@pytest.mark.parametrize("batchnorm", [False, True])
def test_grad_norms_come_from_the_first_grad_samples_and_histograms_from_the_whole_probe(batchnorm):
    model, loss, x, y = _model_and_probe(batchnorm)
    full = Recorder(x, y, loss, grad_samples=None).snapshot(model, 0).data
    sub = Recorder(x, y, loss, grad_samples=100).snapshot(model, 0).data
    np.testing.assert_allclose(full["grad_norm"], _layer_grad_norms(model, loss, x, y), rtol=1e-5)
    np.testing.assert_allclose(sub["grad_norm"], _layer_grad_norms(model, loss, x[:100], y[:100]), rtol=1e-5)
    for k in FIELDS:  # everything else is the whole probe's, bit for bit
        if k != "grad_norm":
            np.testing.assert_array_equal(sub[k], full[k], err_msg=k)
    # as many grad_samples as probe examples is the whole probe, in one pass
    np.testing.assert_array_equal(Recorder(x, y, loss, grad_samples=5000).snapshot(model, 0).data["grad_norm"],
                                  full["grad_norm"])


def test_sub_probe_grad_norms_agree_with_the_whole_probe_within_sampling_error():
    """A 100-example gradient norm differs from the 1,000-example one by about its sampling error.

    The sampling error is measured on the ten disjoint 100-example blocks of the probe: their
    root-mean-square distance from the whole-probe norm (noise, plus the small upward bias of the
    norm of a noisier mean gradient). The recorded value lies within three of those.
    """
    model, loss, x, y = _model_and_probe()
    for _ in range(2):  # at init and after a few steps of training
        full = Recorder(x, y, loss, grad_samples=None).snapshot(model, 0).data["grad_norm"]
        sub = Recorder(x, y, loss, grad_samples=100).snapshot(model, 0).data["grad_norm"]
        blocks = np.array([_layer_grad_norms(model, loss, x[j:j + 100], y[j:j + 100]) for j in range(0, 1000, 100)])
        rms = np.sqrt(np.mean((blocks - full) ** 2, axis=0))
        assert np.all(np.abs(sub - full) <= 3 * rms), (sub, full, rms)
        assert np.all(rms < full)  # and the error is a fraction of the value, not the value itself
        for _ in range(20):
            _layer_grad_norms(model, loss, x[:100], y[:100])
            for b in model.blocks:
                b.linear.W.data -= 0.1 * b.linear.W.grad


def test_recording_with_or_without_a_sub_probe_never_changes_training():
    base = {"model": {"depth": 3, "width": 20, "activation": "relu", "batchnorm": True},
            "data": {"kind": "teacher", "samples": 300, "features": 10}, "train": {"steps": 30, "batch_size": 32}}
    runs = [initlab.run({**base, "record": r}) for r in
            ({}, {"every": 3}, {"every": 3, "grad_samples": None}, {"every": 1, "grad_samples": 7})]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.history["train_loss"], runs[0].history["train_loss"])
        np.testing.assert_array_equal(r.history["grad_norm"], runs[0].history["grad_norm"])
    assert runs[2].config.record.grad_samples is None and runs[0].config.record.grad_samples == 100


STEP_BASE = {"model": {"depth": 3, "width": 20, "activation": "relu", "batchnorm": True},
             "data": {"kind": "teacher", "samples": 300, "features": 10}, "train": {"steps": 30, "batch_size": 32}}


def test_recording_with_gradients_from_the_step_never_changes_training():
    runs = [initlab.run({**STEP_BASE, "record": r}) for r in
            ({"grad_from": "probe"}, {"every": 3}, {"every": 1}, {"every": 7, "grad_from": "step"})]
    assert runs[1].config.record.grad_from == "step"  # the default
    for r in runs[1:]:
        np.testing.assert_array_equal(r.history["train_loss"], runs[0].history["train_loss"])
        np.testing.assert_array_equal(r.history["grad_norm"], runs[0].history["grad_norm"])


def _replayed_step_grad_norms(cfg, steps_before):
    """The per-layer gradient norms of training step ``steps_before + 1`` (its minibatch, at the weights
    after ``steps_before`` steps), by replaying the run's training by hand (for the run's last snapshot:
    the minibatch a step after its last would draw)."""
    from initlab.experiment import _new_history, _step

    cfg = initlab.load_config(cfg)
    data, model, loss, opt, batch_rng, _ = build(cfg)
    n, bs, hist = len(data.x_train), cfg.train.batch_size, _new_history(steps_before)
    for i in range(steps_before):
        idx = batch_rng.integers(0, n, size=bs)
        assert _step(model, loss, opt, model.params(), data.x_train[idx], data.y_train[idx], cfg.train, hist, i)
    idx = batch_rng.integers(0, n, size=bs)
    return _layer_grad_norms(model, loss, data.x_train[idx], data.y_train[idx])


@pytest.mark.parametrize("batchnorm", [False, True])
def test_step_grad_norms_are_those_of_the_next_training_step_and_the_last_of_a_fresh_minibatch(batchnorm):
    cfg = {**STEP_BASE, "model": {**STEP_BASE["model"], "batchnorm": batchnorm}, "record": {"every": 10},
           "train": {**STEP_BASE["train"], "clip_norm": 0.5}}  # norms are taken before clipping
    result = initlab.run(cfg)
    assert [s.step for s in result.snapshots] == [0, 10, 20, 30]
    for snap in result.snapshots:  # the last: the minibatch a 31st step would draw, at the final weights
        np.testing.assert_allclose(snap.data["grad_norm"], _replayed_step_grad_norms(cfg, snap.step), rtol=1e-5,
                                   err_msg=str(snap.step))
    # the step's gradient is not the probe's: a different minibatch, so different norms
    probe = initlab.run({**cfg, "record": {"every": 10, "grad_from": "probe"}})
    for a, b in zip(result.snapshots, probe.snapshots):
        assert not np.allclose(a.data["grad_norm"], b.data["grad_norm"], rtol=1e-3)
        for k in FIELDS:  # everything else is the same, bit for bit
            if k != "grad_norm":
                np.testing.assert_array_equal(a.data[k], b.data[k], err_msg=k)


@pytest.mark.parametrize("case", ["no steps", "diverged", "interrupted"])
def test_a_snapshot_no_step_follows_still_gets_its_gradient_norms(case, monkeypatch):
    cfg = {**STEP_BASE, "record": {"every": 5}}
    if case == "no steps":
        cfg["train"] = {"steps": 0}
    if case == "diverged":  # randn·10 weights and lr 10: the loss overflows after a step or two
        cfg.update(optimizer={"name": "sgd", "lr": 10}, init={"scheme": "normal", "std": 10},
                   model={**STEP_BASE["model"], "batchnorm": False})

    def stop(done):
        if case == "interrupted" and done == 12:
            raise KeyboardInterrupt

    result = train(cfg, on_step=stop)
    assert result.status == {"no steps": "completed", "diverged": "diverged", "interrupted": "interrupted"}[case]
    last = result.snapshots[-1]
    if case != "diverged":
        assert np.all(np.isfinite(last.data["grad_norm"])) and np.all(last.data["grad_norm"] > 0)
    if case == "interrupted":  # snapshot 10 waited for step 11, which ran: the next step's gradients
        assert [s.step for s in result.snapshots] == [0, 5, 10]
        np.testing.assert_allclose(last.data["grad_norm"], _replayed_step_grad_norms(cfg, 10), rtol=1e-5)
    for snap in result.snapshots:  # nothing left pending: every snapshot has its numbers (NaN only where the
        # gradient itself is not finite: a diverged run's last)
        assert not np.any(np.isnan(snap.data["grad_norm"])) or not np.isfinite(result.history["train_loss"][-1])


def test_step_grad_norms_agree_with_the_whole_probe_within_sampling_error():
    """As the sub-probe's: the next step's minibatch (32 examples here) differs from the whole probe by
    about the sampling error of 32-example gradients, measured on disjoint 32-example blocks."""
    cfg = {**STEP_BASE, "model": {**STEP_BASE["model"], "batchnorm": False},
           "data": {"kind": "teacher", "samples": 1000, "features": 10}, "record": {"every": 10}}
    step = initlab.run(cfg)
    full = initlab.run({**cfg, "record": {"every": 10, "grad_from": "probe", "grad_samples": None}})
    c = initlab.load_config(cfg)
    data, model0, loss, *_ = build(c)
    blocks = np.array([_layer_grad_norms(model0, loss, data.x_train[j:j + 32], data.y_train[j:j + 32])
                       for j in range(0, 992, 32)])
    f0 = full.snapshots[0].data["grad_norm"]
    rms = np.sqrt(np.mean((blocks - f0) ** 2, axis=0))
    assert np.all(np.abs(step.snapshots[0].data["grad_norm"] - f0) <= 3 * rms)
    assert np.all(rms < f0)
    for a, b in zip(step.snapshots, full.snapshots):  # and along the run, the same size
        assert np.all(np.abs(np.log(a.data["grad_norm"] / b.data["grad_norm"])) < np.log(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "relu", "offset", "first-outlier", "equal-units", "narrow", "row-offsets"])
def test_summaries_of_all_layers_at_once_match_numpy(dtype, kind):
    """The snapshot's path (every layer of one shape, buffers kept across calls) agrees with float64 NumPy."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 300, 50))
    a = {"normal": z, "relu": np.maximum(z, 0), "offset": 1e3 + 0.01 * z,
         "first-outlier": np.concatenate([np.full((4, 300, 1), 50.0), 1 + 0.01 * z[:, :, 1:]], axis=2),
         "equal-units": np.repeat(z[:, :, :1], 50, axis=2), "narrow": 0.5 + 1e-4 * z,
         "row-offsets": 10 * z[:, :, :1] + 1e-3 * z}[kind].astype(dtype)
    arrays, scratch = list(a), {}
    for _ in range(2):  # the second call reuses the buffers
        mean, std, spread = summaries(arrays, lims=limits(arrays), scratch=scratch)
        tol = 1e-6 if dtype == np.float32 else 1e-12
        for i, layer in enumerate(arrays):
            m, s, u = _reference_summary(layer)
            assert mean[i] == pytest.approx(m, rel=tol, abs=tol * s)
            assert std[i] == pytest.approx(s, rel=tol)
            assert spread[i] == pytest.approx(u, rel=10 * tol, abs=tol * s)
            if kind == "equal-units":
                assert spread[i] == 0.0
    assert np.isnan(summaries(arrays, spread=False, lims=limits(arrays), scratch=scratch)[2]).all()


@pytest.mark.parametrize("value", [np.inf, np.nan, 1e30])
def test_summaries_with_a_nonfinite_or_huge_layer_are_numpys(value):
    arrays = list(np.random.default_rng(6).standard_normal((3, 20, 10)).astype(np.float32))
    arrays[1][3, 4] = value
    with np.errstate(all="ignore"):
        mean, std, spread = summaries(arrays, lims=limits(arrays), scratch={})
        for i, layer in enumerate(arrays):
            np.testing.assert_allclose([mean[i], std[i], spread[i]], _reference_summary(layer), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["common", "own", "given-inside", "given-outside", "nan", "narrow"])
def test_histograms_with_buffers_match_numpy_histogram(dtype, case):
    """Counts from the snapshot's path (buffers kept, masks skipped when a given range holds the data)."""
    rng = np.random.default_rng(7)
    z = rng.standard_normal((3, 400, 30))
    a = {"common": z, "own": z * np.array([1.0, 1e-3, 1.0])[:, None, None], "given-inside": np.tanh(z),
         "given-outside": 0.8 * z, "nan": z, "narrow": 0.5 + 1e-4 * z}[case].astype(dtype)
    if case == "nan":
        a[1, 0, 0] = np.nan
    arrays, scratch = list(a), {}
    given = (-1.0, 1.0) if case.startswith("given") else None
    for _ in range(2):
        counts, edges = histograms(arrays, 30, given, limits(arrays), scratch)
        if case == "nan":
            assert counts.sum() == 0 and np.isnan(edges).all()
            continue
        ref_counts, ref_edges = histograms(arrays, 30, given)  # without limits or buffers
        np.testing.assert_array_equal(counts, ref_counts)
        np.testing.assert_array_equal(edges, ref_edges)
        for i, layer in enumerate(arrays):
            ref = np.histogram(layer, 30, (edges[i][0], edges[i][-1]))[0]
            assert counts[i].sum() == ref.sum()
            if case != "narrow":
                np.testing.assert_array_equal(counts[i], ref)
    if case == "own":
        assert edges[1][-1] < 0.1 < edges[0][-1]  # the collapsed layer has its own range


@pytest.mark.parametrize("activation, batchnorm", [("relu", False), ("relu", True), ("tanh", False), ("sigmoid", True)])
def test_snapshot_matches_numpy_on_the_probe(activation, batchnorm):
    cfg = initlab.load_config({"data": {"kind": "teacher", "samples": 500, "features": 30},
                               "model": {"depth": 3, "width": 40, "activation": activation, "batchnorm": batchnorm,
                                         "dtype": "float32"}})
    data, model, loss, *_ = build(cfg)
    x, y = data.x_train, data.y_train
    rec = Recorder(x, y, loss)
    for _ in range(2):  # the second snapshot reuses the first one's buffers
        d = rec.snapshot(model, 0).data
        with model.running_stats_kept():
            model.forward(x, train=True)
        for i, b in enumerate(model.blocks):
            for kind, arr in (("act", b.output), ("preact", b.preact)):
                ref = np.histogram(arr, 30, (d[f"{kind}_edges"][i][0], d[f"{kind}_edges"][i][-1]))[0]
                np.testing.assert_array_equal(d[f"{kind}_counts"][i], ref)
                a64 = arr.astype(np.float64)
                assert d[f"{kind}_mean"][i] == pytest.approx(a64.mean(), rel=1e-6, abs=1e-6 * a64.std())
                assert d[f"{kind}_std"][i] == pytest.approx(a64.std(), rel=1e-6)
            assert d["unit_std"][i] == pytest.approx(b.output.astype(np.float64).std(axis=1).mean(), rel=1e-5)
