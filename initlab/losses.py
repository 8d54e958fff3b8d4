"""Losses: ``forward(output, target) -> float`` then ``backward() -> d loss / d output``."""
from __future__ import annotations

import numpy as np

from initlab.errors import EngineError


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels, fused with its gradient.

    ``logits``: ``(n_ex, n_classes)``; ``labels``: ``(n_ex,)`` integers in ``[0, n_classes)``.
    Uses the log-sum-exp shift, so it is finite for any finite logits.
    """

    name = "cross_entropy"

    def __init__(self):
        self.probs = None
        self.labels = None

    def forward(self, logits, labels):
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise EngineError(f"cross-entropy expects logits (n, k) and labels (n,), got {logits.shape} and {labels.shape}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        self.probs = exp / total
        self.labels = labels
        n = logits.shape[0]
        logp = shifted[np.arange(n), labels] - np.log(total[:, 0])
        return float(-logp.mean())

    def backward(self):
        n = self.probs.shape[0]
        d = self.probs.copy()
        d[np.arange(n), self.labels] -= 1
        d *= d.dtype.type(1.0 / n)
        return d


class MSE:
    """Mean squared error ``mean((y - t)²)`` over every element, as PyTorch's ``MSELoss``."""

    name = "mse"

    def __init__(self):
        self.diff = None

    def forward(self, y, target):
        target = target.reshape(y.shape) if target.size == y.size else target
        if target.shape != y.shape:
            raise EngineError(f"mse expects output and target of the same shape, got {y.shape} and {target.shape}")
        self.diff = y - target
        return float(np.mean(self.diff * self.diff))

    def backward(self):
        return self.diff * self.diff.dtype.type(2.0 / self.diff.size)


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MSE}
