"""Clipping: PyTorch's clip_grad_norm_ (returns the pre-clip norm) and clip_grad_value_."""
import math

import numpy as np
import pytest

from initlab.engine.clipping import clip_grad_norm, clip_grad_value, grad_norm
from initlab.engine.layers import Parameter
from initlab.errors import EngineError


def params_with(*grads, dtype=np.float64):
    ps = []
    for i, g in enumerate(grads):
        p = Parameter(f"p{i}", np.zeros(np.shape(g), dtype=dtype))
        p.grad[...] = g
        ps.append(p)
    return ps


def test_global_norm_spans_all_parameters():
    ps = params_with([3.0, 4.0], [[12.0]])
    assert grad_norm(ps) == 13.0
    assert grad_norm(params_with(np.zeros(3))) == 0.0
    assert grad_norm([]) == 0.0


def test_clip_scales_to_max_norm_and_returns_the_norm_before():
    ps = params_with([3.0, 4.0], [[12.0]])
    total = clip_grad_norm(ps, 6.5)
    assert total == 13.0
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad, [3 * coef, 4 * coef], rtol=1e-15)
    np.testing.assert_allclose(ps[1].grad, [[12 * coef]], rtol=1e-15)
    assert grad_norm(ps) == pytest.approx(6.5, rel=1e-6)


@pytest.mark.parametrize("max_norm", [13.0 + 1e-6, 100.0, float("inf")])
def test_no_change_when_the_norm_is_within_the_limit(max_norm):
    ps = params_with([3.0, 4.0], [[12.0]])
    assert clip_grad_norm(ps, max_norm) == 13.0
    np.testing.assert_array_equal(ps[0].grad, [3.0, 4.0])
    np.testing.assert_array_equal(ps[1].grad, [[12.0]])


def test_at_exactly_the_norm_the_1e_6_still_scales_as_in_pytorch():
    ps = params_with([3.0, 4.0], [[12.0]])
    clip_grad_norm(ps, 13.0)
    np.testing.assert_allclose(ps[0].grad, np.array([3.0, 4.0]) * 13 / (13 + 1e-6), rtol=1e-15)


def test_max_norm_zero_zeroes_the_gradients():
    ps = params_with([3.0, 4.0])
    assert clip_grad_norm(ps, 0.0) == 5.0
    np.testing.assert_array_equal(ps[0].grad, [0.0, 0.0])


def test_float32_gradients_stay_float32_and_in_place():
    ps = params_with(np.full((10, 10), 2.0), dtype=np.float32)
    buf = ps[0].grad
    total = clip_grad_norm(ps, 1.0)
    assert total == pytest.approx(20.0, rel=1e-6)
    assert ps[0].grad is buf and buf.dtype == np.float32
    assert grad_norm(ps) == pytest.approx(1.0, rel=1e-6)


def test_huge_float32_gradients_give_the_true_norm_not_inf():
    # Σ g² = 2e50 overflows float32; the exploding-gradient demo reaches such values.
    ps = params_with([1e25, -1e25], dtype=np.float32)
    total = clip_grad_norm(ps, 10.0)
    assert total == pytest.approx(math.sqrt(2) * 1e25, rel=1e-6)
    np.testing.assert_allclose(ps[0].grad, [10 / math.sqrt(2), -10 / math.sqrt(2)], rtol=1e-5)


def test_tiny_float32_gradients_keep_their_norm():
    ps = params_with([3e-25, 4e-25], dtype=np.float32)  # Σ g² underflows float32
    assert grad_norm(ps) == pytest.approx(5e-25, rel=1e-6)


def test_non_finite_gradients_propagate_like_pytorch():
    ps = params_with([np.nan, 1.0], [2.0])
    assert math.isnan(clip_grad_norm(ps, 1.0))
    assert np.all(np.isnan(ps[1].grad))


def test_clip_value_clamps_each_element():
    ps = params_with([-3.0, -0.5, 0.0, 0.2, 7.0], dtype=np.float32)
    buf = ps[0].grad
    clip_grad_value(ps, 0.5)
    np.testing.assert_array_equal(buf, np.array([-0.5, -0.5, 0.0, 0.2, 0.5], np.float32))
    assert ps[0].grad is buf and buf.dtype == np.float32


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "x", None])
def test_impossible_limits_are_engine_errors(bad):
    with pytest.raises(EngineError, match="clip_norm"):
        clip_grad_norm(params_with([1.0]), bad)
    with pytest.raises(EngineError, match="clip_value"):
        clip_grad_value(params_with([1.0]), bad)
