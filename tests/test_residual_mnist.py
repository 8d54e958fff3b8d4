"""The findings of the three bundled 0.2 experiments on MNIST, on CI-sized versions of their configs."""
import numpy as np
import pytest

import initlab
from tests.conftest import CONFIGS, needs_mnist

pytestmark = needs_mnist


def point(config, *overrides):
    return initlab.run(initlab.load_config(CONFIGS / config, overrides=list(overrides)))


# residual_depth.yaml at depth 50 but width 32, 1000 images, batch 32 (still 400 steps)
DEPTH_CI = ("data.samples=1000", "data.eval_samples=500", "model.width=32", "train.batch_size=32",
            "train.eval_every=400", "record.samples=100")


def test_residual_depth_plain_he_at_depth_50_is_worse_than_residual_one_over_sqrt_depth():
    plain = point("residual_depth.yaml", *DEPTH_CI, "model.residual=false")
    scaled = point("residual_depth.yaml", *DEPTH_CI, "model.residual=true", "model.branch_scale=1/sqrt(depth)")
    assert plain.status == scaled.status == "completed"
    assert scaled.metrics["final"]["train_loss"] < 0.5 * plain.metrics["final"]["train_loss"]
    assert scaled.metrics["final"]["eval_acc"] > plain.metrics["final"]["eval_acc"] + 0.2
    # theory and measurement agree that the 1/√L stream grows, by a bounded factor
    pre = [layer["preact_std"] for layer in scaled.metrics["layers"]]
    assert 1.3 < pre[-1] / pre[1] < 4


def test_residual_depth_alpha_one_explodes_as_mean_field_predicts():
    r = point("residual_depth.yaml", *DEPTH_CI, "model.residual=true")
    assert r.metrics["theory"]["residual"]["doubling_depth"] == 2
    layers = r.metrics["layers"]
    assert layers[-1]["preact_std"] > 1e6 * layers[1]["preact_std"]  # ~2^48 in variance over 49 blocks
    assert r.status == "diverged" or r.metrics["final"]["train_loss"] > 2.0


# norm_small_batch.yaml with 4×64 hidden layers and 2000 images
NORM_CI = ("data.samples=2000", "data.eval_samples=1000", "model.depth=4", "model.width=64",
           "train.batch_size=2", "train.eval_every=1000", "record.samples=100")


def test_norm_small_batch_batchnorm_at_batch_2_is_worse_than_layernorm_at_batch_2():
    bn = point("norm_small_batch.yaml", *NORM_CI, "model.batchnorm=true")
    ln = point("norm_small_batch.yaml", *NORM_CI, "model.layernorm=true")
    assert bn.status == ln.status == "completed"
    assert bn.metrics["final"]["eval_acc"] < ln.metrics["final"]["eval_acc"] - 0.3
    assert bn.metrics["final"]["eval_loss"] > ln.metrics["final"]["eval_loss"] + 0.5


STD_CI = ("data.samples=2000", "data.eval_samples=1000", "model.width=64", "train.steps=300",
          "train.batch_size=64", "train.eval_every=300", "record.samples=100")


def test_mnist_standardization_raw_pixels_diverge_or_train_worse_than_standardized():
    raw = point("mnist_standardization.yaml", *STD_CI, "data.pixel_scale=raw")
    std = point("mnist_standardization.yaml", *STD_CI, "data.pixel_scale=standardized")
    assert std.status == "completed"
    assert raw.status == "diverged" or raw.metrics["final"]["train_loss"] > std.metrics["final"]["train_loss"] + 0.5
    # the first layer sees the input's scale: He keeps mean(x²), so raw pixels start ~100× wider
    assert raw.metrics["layers"][0]["preact_std"] > 50 * std.metrics["layers"][0]["preact_std"]
    assert raw.metrics["layers"][0]["predicted_preact_std"] == pytest.approx(raw.metrics["layers"][0]["preact_std"], rel=0.1)


def test_pixel_scales_and_standardization_is_leak_free():
    from initlab.data.datasets import build_dataset

    def data(**kw):
        cfg = initlab.load_config({"data": {"kind": "mnist", "samples": 500, "eval_samples": 200, **kw}})
        return build_dataset(cfg.data, np.random.default_rng(0), "float32")

    unit, raw, std = data(), data(pixel_scale="raw"), data(pixel_scale="standardized")
    assert unit.x_train.max() == 1.0 and raw.x_train.max() == 255.0
    assert np.array_equal(raw.x_train, np.round(raw.x_train)) and np.allclose(raw.x_train, unit.x_train * 255, atol=1e-3)
    # standardized with the 500 training images' statistics only, applied unchanged to the test images
    mean, sd = unit.x_train.astype(np.float64).mean(0), unit.x_train.astype(np.float64).std(0)
    sd[sd == 0] = 1
    np.testing.assert_allclose(std.x_eval, (unit.x_eval - mean) / sd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.x_train.mean(0), 0, atol=1e-4)
    assert not np.allclose(std.x_eval.mean(0), 0, atol=1e-4)
    # standardize: true is the same z-scoring, whatever the pixel scale under it
    np.testing.assert_allclose(data(standardize=True).x_train, std.x_train)
    np.testing.assert_allclose(data(standardize=True, pixel_scale="raw").x_train, std.x_train, atol=1e-4)
