"""Synthetic data sets and standardization with training statistics."""
import numpy as np
import pytest

import initlab
from initlab.data.datasets import DATASETS, Dataset, standardize
from initlab.experiment import build


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(200, 4)).astype(np.float32)
    xe = rng.normal(-2.0, 0.5, size=(50, 4)).astype(np.float32)  # a shifted test set
    ds = standardize(Dataset(x, np.zeros(200, int), xe, np.zeros(50, int), "classification", 2))
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-5)
    expected = (xe - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64)
    np.testing.assert_allclose(ds.x_eval, expected, rtol=1e-5)
    # had test statistics leaked, the test set would be centred: it must not be
    assert np.all(ds.x_eval.mean(0) < -1.5)
    # changing the test set never changes the training data
    ds2 = standardize(Dataset(x, np.zeros(200, int), xe * 100, np.zeros(50, int), "classification", 2))
    np.testing.assert_array_equal(ds.x_train, ds2.x_train)


def test_standardize_constant_feature_stays_finite():
    x = np.ones((10, 3), np.float32)
    ds = standardize(Dataset(x, np.zeros(10, int), x, np.zeros(10, int), "classification", 2))
    assert np.isfinite(ds.x_train).all() and np.all(ds.x_train == 0)


@pytest.mark.parametrize("kind", [k for k in DATASETS if k != "mnist"])
def test_synthetic_kinds_are_deterministic_and_typed(kind):
    cfg = initlab.load_config({"data": {"kind": kind}, "model": {"dtype": "float64"}})
    a, b = build(cfg)[0], build(cfg)[0]
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.float64
    assert len(a.x_eval) == cfg.data.eval_samples and len(a.x_train) == cfg.data.samples


def test_every_dataset_kind_is_tested():
    assert set(DATASETS) == {"gaussian", "teacher", "regression", "mnist"}


def test_regression_is_the_seeds_toy_problem():
    cfg = initlab.load_config({"data": {"kind": "regression"}})
    d = build(cfg)[0]
    assert d.x_train.shape == (100, 1) and d.task == "regression"
    resid = d.y_train[:, 0] - (3 * d.x_train[:, 0] + 2)
    assert abs(resid.std() - 0.5) < 0.15 and abs(resid.mean()) < 0.2


def test_teacher_labels_are_learnable_and_balanced_enough():
    d = build(initlab.load_config({"data": {"kind": "teacher", "samples": 2000}}))[0]
    counts = np.bincount(d.y_train, minlength=10)
    assert counts.min() > 0 and counts.max() < 0.5 * len(d.y_train)


def test_pixels_must_be_the_bytes_of_the_floats():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 12), dtype=np.uint8)
    x = pixels.astype(np.float32)
    x /= np.float32(255)
    y = np.arange(5)
    ds = Dataset(x, y, x, y, "classification", 10, pixels)
    idx = np.array([4, 0, 4, 2])
    for got, want in zip(ds.batch(idx), (x[idx], y[idx])):
        np.testing.assert_array_equal(got, want, strict=True)
    for bad in (pixels[:, ::-1], pixels.astype(np.int16), pixels[:4]):
        with pytest.raises(ValueError, match="pixels"):
            Dataset(x, y, x, y, "classification", 10, np.ascontiguousarray(bad))
    assert standardize(ds).pixels is None  # a transformed set gathers from its own floats


def test_no_held_out_set_leaves_its_columns_empty_and_still_measures_training_accuracy(tmp_path):
    from initlab.plots.run import loss_figure

    cfg = {"data": {"kind": "teacher", "samples": 200, "features": 8, "classes": 3, "eval_samples": 0},
           "model": {"depth": 2, "width": 8, "activation": "relu"},
           "train": {"steps": 30, "batch_size": 20, "eval_every": 10}, "record": {"samples": 100}}
    with pytest.raises(initlab.ConfigError, match="eval_samples"):
        initlab.load_config({"data": {"eval_samples": -1}})
    data = build(initlab.load_config(cfg))[0]
    assert data.x_eval.shape == (0, 8) and len(data.y_eval) == 0
    result = initlab.run(cfg, out=tmp_path)
    h = result.history
    assert np.isnan(h["eval_loss"]).all() and np.isnan(h["eval_acc"]).all()
    assert list(np.flatnonzero(np.isfinite(h["train_acc"])) + 1) == [10, 20, 30]
    final = result.metrics["final"]
    assert final["eval_loss"] is None and final["eval_acc"] is None and 0 <= final["train_acc"] <= 1
    fig = loss_figure(result.run_dir)  # the accuracy panel shows training accuracy alone
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["train (eval mode)"]
