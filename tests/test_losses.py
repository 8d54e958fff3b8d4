"""Losses: values against hand computation, gradients, stability, dtypes and bad input."""
import math

import numpy as np
import pytest

from initlab.engine.losses import LOSSES, MSE, SoftmaxCrossEntropy
from initlab.errors import EngineError

LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
LABELS = np.array([0, 1])


def hand_cross_entropy(logits, labels):
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        total += -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
    return total / len(labels)


def hand_mse(y, t):
    flat = [(a - b) ** 2 for a, b in zip(np.ravel(y).tolist(), np.ravel(t).tolist())]
    return sum(flat) / len(flat)


def check_cross_entropy():
    ce = SoftmaxCrossEntropy()
    assert ce.forward(LOGITS, LABELS) == pytest.approx(hand_cross_entropy(LOGITS, LABELS), rel=1e-14)
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
    onehot = np.eye(3)[LABELS]
    np.testing.assert_allclose(ce.backward(), (probs - onehot) / 2, rtol=1e-14)


def check_mse():
    y, t = np.array([[1.0, 2.0], [3.0, -1.0]]), np.array([[0.5, 2.0], [1.0, 1.0]])
    mse = MSE()
    assert mse.forward(y, t) == pytest.approx(hand_mse(y, t), rel=1e-15)  # (0.25 + 0 + 4 + 4) / 4
    np.testing.assert_allclose(mse.backward(), 2 * (y - t) / 4, rtol=1e-15)


CHECKS = {"cross_entropy": check_cross_entropy, "mse": check_mse}


def test_every_loss_has_a_check():
    assert set(CHECKS) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_value_and_gradient_by_hand(name):
    assert LOSSES[name].name == name
    CHECKS[name]()


def test_cross_entropy_literal_value():
    # uniform logits over 4 classes: −log(1/4)
    assert SoftmaxCrossEntropy().forward(np.zeros((3, 4)), np.array([0, 1, 3])) == pytest.approx(math.log(4), rel=1e-15)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_matches_central_differences(name):
    rng = np.random.default_rng(0)
    out = rng.standard_normal((5, 4))
    target = rng.integers(0, 4, 5) if name == "cross_entropy" else rng.standard_normal((5, 4))
    loss = LOSSES[name]()
    loss.forward(out, target)
    analytic = loss.backward()
    numeric = np.zeros_like(out)
    h = 1e-6
    for idx in np.ndindex(out.shape):
        up, down = out.copy(), out.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (loss.forward(up, target) - loss.forward(down, target)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-5e4, -5e4, -5e4], [1e30, 0.0, -1e30]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ce = SoftmaxCrossEntropy()
        value = ce.forward(logits, np.array([1, 2, 0]))
        grad = ce.backward()
    # row 0: label 1 is 2000 below the max → loss 2000; row 1: log 3; row 2: label is the max → 0
    assert value == pytest.approx((2000.0 + math.log(3) + 0.0) / 3, rel=1e-6)
    assert np.all(np.isfinite(grad)) and grad.dtype == logits.dtype


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float32_outputs_get_a_float32_gradient_even_with_float64_targets(name):
    out = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 1]) if name == "cross_entropy" else np.ones((4, 3), np.float64)
    loss = LOSSES[name]()
    value = loss.forward(out, target)
    assert isinstance(value, float)
    assert loss.backward().dtype == np.float32


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_never_modifies_its_inputs(name):
    out = np.random.default_rng(2).standard_normal((4, 3))
    target = np.array([0, 2, 1, 1]) if name == "cross_entropy" else np.zeros((4, 3))
    before = out.copy(), target.copy()
    loss = LOSSES[name]()
    loss.forward(out, target)
    loss.backward()
    loss.backward()  # twice gives the same and changes nothing
    np.testing.assert_array_equal(out, before[0])
    np.testing.assert_array_equal(target, before[1])


def test_mse_accepts_a_flat_target_for_a_single_output():
    mse = MSE()
    assert mse.forward(np.array([[1.0], [3.0]]), np.array([0.0, 1.0])) == pytest.approx(2.5)
    assert mse.backward().shape == (2, 1)


@pytest.mark.parametrize(
    "y, t",
    [
        (np.ones((4, 2)), np.ones((2, 4))),  # same size, transposed: no silent reshape
        (np.ones((4, 2)), np.ones(8)),
        (np.ones((4, 2)), np.ones((4, 1))),  # no silent broadcasting
        (np.ones((4, 1)), np.ones(5)),
        (np.ones(4), np.ones(4)),
        (np.ones((4, 2)), np.full((4, 2), "a")),
        (np.ones((4, 2), dtype=int), np.ones((4, 2))),
    ],
)
def test_mse_bad_shapes_are_engine_errors(y, t):
    with pytest.raises(EngineError, match="mse"):
        MSE().forward(y, t)


@pytest.mark.parametrize(
    "logits, labels, word",
    [
        (np.zeros((3, 4)), np.array([0, 1, 4]), r"\[0, 4\)"),
        (np.zeros((3, 4)), np.array([0, -1, 2]), r"\[0, 4\)"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), "integer labels"),
        (np.zeros((3, 4)), np.array([0, 1]), "integer labels"),
        (np.zeros((3, 4)), np.array([[0], [1], [2]]), "integer labels"),
        (np.zeros((3, 4)), np.array([True, False, True]), "integer labels"),
        (np.zeros(4), np.array([0]), "2-D"),
        (np.zeros((0, 4)), np.zeros(0, dtype=int), "empty"),
    ],
)
def test_cross_entropy_bad_input_is_an_engine_error(logits, labels, word):
    with pytest.raises(EngineError, match=word):
        SoftmaxCrossEntropy().forward(logits, labels)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_backward_before_forward_is_an_engine_error(name):
    with pytest.raises(EngineError, match="before forward"):
        LOSSES[name]().backward()
