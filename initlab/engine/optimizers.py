"""Optimizers: ``step(params)`` updates each :class:`Parameter`'s ``data`` in place from its ``grad``.

State (velocities, moment estimates) is created lazily, one entry per parameter in the order
of the list given to ``step``; always pass the same list. Updates work in place through at most
two scratch arrays per parameter (``Optimizer.scratch``): the same operations in the same order as the
formulas, so the same numbers, without a fresh temporary per operation (Adam on the
784-100×5-10 MLP's 125,000 parameters: 221 µs a step with temporaries). Weight decay is L2, *coupled*
(``g + wd·w``) for every optimizer except AdamW, where it is decoupled (``w -= lr·wd·w``).
Update rules follow PyTorch's ``torch.optim`` definitions.
"""
from __future__ import annotations

import numpy as np

from initlab.errors import EngineError, check_number, unknown_name

INF = float("inf")


class Optimizer:
    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        self.lr = check_number("lr", lr, 0.0, INF, lo_open=True, hi_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0, INF, hi_open=True)
        self.state: list[dict] = []
        self._scratch: dict[int, list] = {}
        self.t = 0

    def step(self, params) -> None:
        """One update of every parameter in ``params`` (the same list, in the same order, every time).

        A model's own list (:class:`~initlab.engine.layers.Parameters`) is updated through its flat
        storage, all parameters at once: the same values, far fewer NumPy calls."""
        flat = getattr(params, "flat", None)
        items = [flat] if flat is not None else params
        if not self.state:
            self.state = [self.init_state(p.data) for p in items]
            self._scratch = {}  # keyed by id(state): a new state must not meet an old one's arrays
        elif len(self.state) != len(items):
            raise EngineError(f"optimizer.step got {len(items)} parameter arrays, {len(self.state)} before: pass the same list")
        self.t += 1
        for p, s in zip(items, self.state):
            g = p.grad
            if self.weight_decay and self.coupled_decay:
                g = g + p.grad.dtype.type(self.weight_decay) * p.data
            self.update(p.data, g, s)

    def scratch(self, s: dict, w, n: int = 1) -> list:
        """``n`` arrays like ``w`` for intermediate results, kept for the parameter whose state is ``s``
        (beside the state, not in it: they hold nothing between steps)."""
        have = self._scratch.setdefault(id(s), [])
        while len(have) < n:
            have.append(np.empty_like(w))
        return have

    coupled_decay = True

    def init_state(self, w) -> dict:
        return {}

    def update(self, w, g, s) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay})"


class SGD(Optimizer):
    """w ← w − lr·g"""

    def update(self, w, g, s):
        (t,) = self.scratch(s, w)
        np.multiply(g, w.dtype.type(self.lr), out=t)
        w -= t


class Momentum(Optimizer):
    """v ← μ·v + g;  w ← w − lr·v  (PyTorch's form; the textbook's v ← μv − lr·g is the same for constant lr)."""

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)

    def init_state(self, w):
        return {"v": np.zeros_like(w)}

    def update(self, w, g, s):
        v, (t,) = s["v"], self.scratch(s, w)
        v *= v.dtype.type(self.momentum)
        v += g
        np.multiply(v, w.dtype.type(self.lr), out=t)
        w -= t


class Nesterov(Momentum):
    """v ← μ·v + g;  w ← w − lr·(g + μ·v)"""

    def update(self, w, g, s):
        v, (t,) = s["v"], self.scratch(s, w)
        v *= v.dtype.type(self.momentum)
        v += g
        np.multiply(v, v.dtype.type(self.momentum), out=t)
        t += g
        t *= w.dtype.type(self.lr)
        w -= t


class AdaGrad(Optimizer):
    """h ← h + g²;  w ← w − lr·g / (√h + eps)"""

    def __init__(self, lr=0.01, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = check_number("eps", eps, 0.0, INF, hi_open=True)

    def init_state(self, w):
        return {"h": np.zeros_like(w)}

    def update(self, w, g, s):
        h, (t, u) = s["h"], self.scratch(s, w, 2)
        np.multiply(g, g, out=t)
        h += t
        _step_over_root(w, g, h, w.dtype.type(self.lr), w.dtype.type(self.eps), t, u)


class RMSprop(Optimizer):
    """h ← α·h + (1−α)·g²;  w ← w − lr·g / (√h + eps)"""

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0)
        self.eps = check_number("eps", eps, 0.0, INF, hi_open=True)

    def init_state(self, w):
        return {"h": np.zeros_like(w)}

    def update(self, w, g, s):
        h, (t, u) = s["h"], self.scratch(s, w, 2)
        h *= h.dtype.type(self.alpha)
        np.multiply(g, h.dtype.type(1 - self.alpha), out=t)
        t *= g
        h += t
        _step_over_root(w, g, h, w.dtype.type(self.lr), w.dtype.type(self.eps), t, u)


class Adam(Optimizer):
    """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  w ← w − lr·m̂ / (√v̂ + eps), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)"""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = check_number("beta1", beta1, 0.0, 1.0, hi_open=True)
        self.beta2 = check_number("beta2", beta2, 0.0, 1.0, hi_open=True)
        self.eps = check_number("eps", eps, 0.0, INF, hi_open=True)

    def init_state(self, w):
        return {"m": np.zeros_like(w), "v": np.zeros_like(w)}

    def update(self, w, g, s):
        f = w.dtype.type
        m, v, (t, u) = s["m"], s["v"], self.scratch(s, w, 2)
        m *= f(self.beta1)
        np.multiply(g, f(1 - self.beta1), out=t)
        m += t
        v *= f(self.beta2)
        np.multiply(g, f(1 - self.beta2), out=t)
        t *= g
        v += t
        mhat_scale = 1.0 / (1 - self.beta1**self.t)
        vhat_scale = 1.0 / (1 - self.beta2**self.t)
        np.multiply(v, f(vhat_scale), out=u)
        _step_over_root(w, m, u, f(self.lr * mhat_scale), f(self.eps), t, u)


def _step_over_root(w, num, den, lr, eps, t, u) -> None:
    """w ← w − (lr·num) / (√den + eps), in place through the scratch arrays t and u (u may be den)."""
    np.sqrt(den, out=u)
    u += eps
    np.multiply(num, lr, out=t)
    t /= u
    w -= t


class AdamW(Adam):
    """Adam with decoupled weight decay: w ← w − lr·wd·w before the Adam step."""

    coupled_decay = False

    def update(self, w, g, s):
        if self.weight_decay:
            w *= w.dtype.type(1 - self.lr * self.weight_decay)
        super().update(w, g, s)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}

# Passes over the parameters one update makes (element-wise NumPy operations, each reading and
# writing whole arrays; weight decay adds two, or one for AdamW). A sweep starts its costliest points first
# (initlab/sweeps/order.py): Adam's update costs 6× SGD's. Tested against the update code.
UPDATE_PASSES = {
    "sgd": 2,
    "momentum": 4,
    "nesterov": 6,
    "adagrad": 7,
    "rmsprop": 9,
    "adam": 13,
    "adamw": 13,
}

# Which optional settings each optimizer takes (the others are ignored).
OPTIONS = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adagrad": ("eps",),
    "rmsprop": ("alpha", "eps"),
    "adam": ("beta1", "beta2", "eps"),
    "adamw": ("beta1", "beta2", "eps"),
}


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0, **options) -> Optimizer:
    """Build an optimizer from the registry; options it does not take are ignored."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise EngineError(unknown_name("optimizer", name, OPTIMIZERS))
    kwargs = {k: v for k, v in options.items() if k in OPTIONS[name] and v is not None}
    return OPTIMIZERS[name](lr=lr, weight_decay=weight_decay, **kwargs)
