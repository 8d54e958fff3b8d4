"""Residual blocks and the init schemes that need a residual net's structure (Fixup, SkipInit).

A residual hidden block is in *pre-activation* form (He et al. 2016, "Identity mappings"):

    h_out = h + α·f(h),     f(h) = W·φ(N(h)) + b,

with N the optional normalization (BatchNorm or LayerNorm, inside the branch) and one Linear per
branch. A residual block needs equal input and output widths, so a residual net's *first* hidden
block is always a plain block (Linear → [norm] → φ) that projects the input to the width: the
stem. With ``depth`` hidden layers there are ``depth − 1`` residual branches; that count is the
L of ``1/sqrt(depth)`` and ``1/depth`` and of Fixup's rescaling.

Recording: a residual block's *activation* is its branch's φ output and its *pre-activation* is
what entered φ, exactly as for a plain block; without normalization that pre-activation is the
residual stream h itself, so the stream's growth with depth shows in the pre-activation std.

α (``branch_scale``): a number, ``"1/sqrt(depth)"``, ``"1/depth"`` or ``"rezero"`` (Bachlechner et
al. 2020: a learnable scalar per branch, starting at 0, a :class:`Parameter` every optimizer updates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from initlab.engine.layers import BatchNorm, Parameter
from initlab.errors import EngineError

BRANCH_SCALES = ("1/sqrt(depth)", "1/depth", "rezero")


def resolve_branch_scale(branch_scale: Union[float, str, None], n_branches: int) -> tuple[float, bool]:
    """``(α, learnable)`` for ``n_branches`` residual branches; None means α = 1."""
    if branch_scale is None:
        return 1.0, False
    if isinstance(branch_scale, str):
        if branch_scale == "rezero":
            return 0.0, True
        if branch_scale == "1/sqrt(depth)":
            return 1.0 / math.sqrt(n_branches), False
        if branch_scale == "1/depth":
            return 1.0 / n_branches, False
        raise EngineError(f"branch_scale must be a number or one of {', '.join(BRANCH_SCALES)}, got {branch_scale!r}")
    if isinstance(branch_scale, bool) or not isinstance(branch_scale, (int, float, np.floating, np.integer)):
        raise EngineError(f"branch_scale must be a number or one of {', '.join(BRANCH_SCALES)}, got {branch_scale!r}")
    if not math.isfinite(branch_scale):
        raise EngineError(f"branch_scale must be finite, got {branch_scale}")
    return float(branch_scale), False


def branch_scales(n_branches: int, dtype) -> Parameter:
    """The learnable α of every branch in one Parameter (entry k: branch k), starting at 0: one
    array for the optimizer instead of one per block (its per-parameter overhead is the cost)."""
    return Parameter("alpha", np.zeros(n_branches, dtype=dtype))


class ResidualBlock:
    """``h + α·(W·φ(N(h)) + b)``; acts as one layer (``forward``/``backward``/``params``) in the model's list.

    ``alpha``: a fixed α (a Python float: no parameter, nothing for the optimizer), or ``(param, k)``:
    entry k of a shared learnable :func:`branch_scales` Parameter (the block with k = 0 lists it in
    ``params()``, so the model lists it once).
    """

    def __init__(self, linear, norm, act, alpha=1.0, name: str = "res"):
        if linear.fan_in != linear.fan_out:
            raise EngineError(f"{name}: a residual block needs equal input and output widths, got {linear.fan_in} → {linear.fan_out}")
        self.linear, self.norm, self.act = linear, norm, act
        self.name = name
        if isinstance(alpha, tuple):
            self.alpha, self.index = alpha
            self.scale = None
        else:
            self.alpha, self.index = None, 0
            self.scale = float(alpha)
        self.f = None
        self._train = True

    @property
    def residual(self) -> bool:
        return True

    @property
    def branch_scale(self) -> float:
        """α now (the learnable one's current value)."""
        return float(self.alpha.data[self.index]) if self.alpha is not None else self.scale

    def layers(self):
        return [self]

    def params(self) -> list[Parameter]:
        ps = self.linear.params() + (self.norm.params() if self.norm is not None else [])
        return ps + ([self.alpha] if self.alpha is not None and self.index == 0 else [])

    @property
    def preact(self) -> np.ndarray:
        return self.act.z

    @property
    def output(self) -> np.ndarray:
        return self.act.a

    def forward(self, h, train=True):
        self._train = train
        u = self.norm.forward(h, train) if self.norm is not None else h
        f = self.linear.forward(self.act.forward(u, train), train)  # a fresh array: scaled and summed in place
        if self.alpha is not None:
            self.f = f  # d loss/dα = Σ dout·f
            out = f * self.alpha.data[self.index]
            out += h
            return out
        if self.scale != 1.0:
            f *= f.dtype.type(self.scale)
        f += h
        return f

    def backward(self, dout, input_grad=True):
        if self.alpha is not None:
            if self.f is None:
                raise EngineError(f"{self.name}: backward called before forward")
            self.alpha.grad[self.index] = np.vdot(dout, self.f)  # vdot flattens: no ravel calls
            df = dout * self.alpha.data[self.index]
        elif self.scale != 1.0:
            df = dout * dout.dtype.type(self.scale)
        else:
            df = dout
        du = self.act.backward(self.linear.backward(df))
        if self.norm is None:
            dh = du
        elif isinstance(self.norm, BatchNorm) and not self._train:
            # Evaluation mode: BatchNorm is the per-feature map γ·(h − running_mean)/√(running_var + eps).
            dh = du * (self.norm.gamma.data / np.sqrt(self.norm.running_var + self.norm.eps))
        else:
            dh = self.norm.backward(du)
        dh += dout  # the identity path
        return dh

    def __repr__(self) -> str:
        alpha = "rezero" if self.alpha is not None else f"{self.scale:g}"
        norm = f", {self.norm!r}" if self.norm is not None else ""
        return f"ResidualBlock({self.linear.fan_in}, α={alpha}{norm}, {self.act.activation.name})"


def residual_blocks(model) -> list:
    return [b for b in model.blocks if isinstance(b, ResidualBlock)]


def fixup_init(model) -> None:
    """Fixup (Zhang, Dauphin & Ma 2019) for one Linear per branch, in place.

    The paper: zero the last layer of every residual branch and the classification layer, scale
    the branch's other m − 1 layers by L^(−1/(2m−2)) (after a standard He init), add scalar
    multipliers and biases. Here every branch has m = 1 layer, its *last* one, so the rule is
    exactly: branch Linear (weights and bias) = 0, output layer = 0; there is no other branch
    layer to rescale (the exponent −1/(2m−2) has no value at m = 1 and nothing to apply to). The
    stem keeps its He init. The scalar multiplier is ``branch_scale`` (``rezero`` gives a learnable
    one; Fixup's starts at 1, so here it is the default α = 1), and initlab's per-unit biases,
    which start at 0, play the part of the scalar biases.
    """
    blocks = residual_blocks(model)
    if not blocks:
        raise EngineError("fixup needs a residual net (model.residual: true, depth ≥ 2)")
    if any(b.norm is not None for b in model.blocks):
        raise EngineError("fixup replaces normalization layers; use it without batchnorm/layernorm")
    for lin in [b.linear for b in blocks] + [model.head]:
        for p in lin.params():
            p.data[...] = 0


def skipinit_init(model) -> None:
    """SkipInit (De & Smith 2020): a learnable scalar α per branch, starting at 0, so every block
    starts as the identity; the weights keep their He init. ``build_mlp`` makes α learnable
    (``STRUCTURAL["skipinit"].branch_scale``); this checks that it did and that α is 0."""
    blocks = residual_blocks(model)
    if not blocks:
        raise EngineError("skipinit needs a residual net (model.residual: true, depth ≥ 2)")
    for b in blocks:
        if b.alpha is None:
            raise EngineError("skipinit needs a learnable branch scale (branch_scale: rezero)")
        b.alpha.data[b.index] = 0


@dataclass(frozen=True)
class StructuralInit:
    """An init scheme defined on a residual net's structure: every Linear is drawn by ``start``
    first, the net is built with ``branch_scale`` (None: the config's), then ``apply(model)``."""

    start: str
    apply: Callable
    branch_scale: Optional[str]
    reference: str


# The structural init schemes, by name (data-free ones: initializers.INITIALIZERS; data-dependent: lsuv.DATA_DEPENDENT).
STRUCTURAL = {
    "fixup": StructuralInit("he_normal", fixup_init, None, "Zhang, Dauphin & Ma 2019"),
    "skipinit": StructuralInit("he_normal", skipinit_init, "rezero", "De & Smith 2020"),
}
