"""The multi-layer perceptron: hidden blocks Linear → [BatchNorm | LayerNorm] → φ, then a Linear output
(with ``residual=True``, blocks 2… are pre-activation residual blocks: :mod:`initlab.engine.residual`)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from initlab.engine.activations import get_activation
from initlab.engine.initializers import STD_SCHEMES, calculate_gain, canonical, get_initializer
from initlab.engine.layers import ActivationLayer, BatchNorm, LayerNorm, Linear, pack
from initlab.engine.residual import ResidualBlock, branch_scales, resolve_branch_scale
from initlab.errors import EngineError, check_number, check_size

DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class InitSpec:
    """How to draw every Linear layer's weights (and biases)."""

    scheme: str = "xavier_normal"
    std: float | None = None
    gain: float | str | None = None  # a number, "auto" (PyTorch's calculate_gain) or None (= 1)
    bias_std: float = 0.0
    value: float = 0.01  # for `constant`
    mode: str = "fan_in"  # for he_*


class Block:
    """One hidden layer: its Linear, optional normalization and activation."""

    def __init__(self, linear: Linear, norm, act: ActivationLayer):
        self.linear, self.norm, self.act = linear, norm, act

    def layers(self):
        return [self.linear] + ([self.norm] if self.norm is not None else []) + [self.act]

    @property
    def preact(self) -> np.ndarray:
        """What went into φ on the last forward pass (after normalization)."""
        return self.act.z

    @property
    def output(self) -> np.ndarray:
        return self.act.a


class MLP:
    """``n_in → widths[0] → … → widths[-1] → n_out``; forward caches per-layer values for recording."""

    def __init__(self, blocks: list[Block], head: Linear, dtype):
        self.blocks = blocks
        self.head = head
        self.dtype = np.dtype(dtype)
        self._layers = [layer for b in blocks for layer in b.layers()] + [head]
        self._params = pack([p for layer in self._layers for p in layer.params()])

    @property
    def n_in(self) -> int:
        return (self.blocks[0].linear if self.blocks else self.head).fan_in

    def params(self):
        """Every trainable parameter, in a fixed order (the optimizer's list; flat storage, see
        :class:`~initlab.engine.layers.Parameters`)."""
        return self._params

    def forward(self, x, train=True):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_in:
            raise EngineError(f"model expects input of shape (n, {self.n_in}), got {getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        for layer in self._layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dout, input_grad=True):
        """Backpropagate d loss/d output ``(n_ex, n_out)``, filling every parameter's ``grad``.

        Returns d loss/d input ``(n_ex, n_in)``; pass ``input_grad=False`` in training, where
        nobody needs it, to skip the first layer's largest product (it returns None then).
        """
        layers = self._layers
        owned = False  # the caller's dout is theirs; the arrays layers return are this pass's own
        for layer in layers[:0:-1]:
            dout = layer.backward(dout, overwrite=True) if owned and type(layer) is ActivationLayer else layer.backward(dout)
            owned = True
        return layers[0].backward(dout, input_grad=input_grad)

    def _batchnorms(self) -> list[BatchNorm]:
        return [b.norm for b in self.blocks if isinstance(b.norm, BatchNorm)]

    def state(self) -> list[np.ndarray]:
        """The arrays that define what the net computes, in a fixed order: every parameter's data,
        then BatchNorm's running averages (evaluation mode uses them). Copying them into a copy of
        the model makes it compute exactly what this one does."""
        return [p.data for p in self._params] + [a for n in self._batchnorms() for a in (n.running_mean, n.running_var)]

    @contextmanager
    def running_stats_kept(self):
        """Training-mode passes inside this block leave BatchNorm's running averages as they were
        (recording and data-dependent init look at the net; they must not change what it evaluates with)."""
        norms = self._batchnorms()
        saved = [(n.running_mean.copy(), n.running_var.copy()) for n in norms]
        try:
            yield
        finally:
            for n, (mean, var) in zip(norms, saved):
                n.running_mean[...] = mean
                n.running_var[...] = var

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self._layers)
        return f"MLP([{inner}], dtype={self.dtype.name})"


def resolve_gain(init: InitSpec, activation: str, slope: float) -> float:
    """The multiplier applied to the scheme's own scale."""
    if init.gain is None:
        return 1.0
    if init.gain == "auto":
        g = calculate_gain(activation, slope)
        # He's formula already holds ReLU's √2; "auto" swaps it for φ's gain (PyTorch's kaiming_*).
        return g / np.sqrt(2.0) if canonical(init.scheme).startswith("he_") else g
    return check_number("init.gain", init.gain, lo_open=True, hi_open=True)


def draw_weights(init: InitSpec, fan_in: int, fan_out: int, rng, gain: float) -> np.ndarray:
    scheme = canonical(init.scheme)
    fn = get_initializer(scheme)
    kwargs = {"gain": gain}
    if init.std is not None:
        if scheme not in STD_SCHEMES:
            raise EngineError(f"init.std applies to {', '.join(STD_SCHEMES)}, not {scheme} (use init.gain)")
        kwargs["std"] = init.std
    if scheme == "constant":
        kwargs["value"] = init.value
    if scheme.startswith("he_"):
        kwargs["mode"] = init.mode
    return fn(fan_in, fan_out, rng, **kwargs)


def build_mlp(
    n_in: int,
    n_out: int,
    widths: list[int],
    activation: str = "sigmoid",
    init: InitSpec | None = None,
    rng: np.random.Generator | None = None,
    bias: bool = True,
    batchnorm: bool = False,
    layernorm: bool = False,
    dtype: str = "float32",
    slope: float = 0.01,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    residual: bool = False,
    branch_scale=None,
) -> MLP:
    """Assemble an MLP; the init applies to every Linear layer, the output layer included.

    ``residual``: hidden blocks 2… are pre-activation residual blocks ``h + α·f(h)`` (block 1, the
    stem, stays plain and projects the input to the width; see :mod:`initlab.engine.residual`);
    ``branch_scale`` is α (None: 1).
    """
    init = init or InitSpec()
    rng = rng if rng is not None else np.random.default_rng(0)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise EngineError(f"unknown dtype '{dtype}' (choose float32 or float64)")
    if not isinstance(widths, (list, tuple)):
        raise EngineError(f"widths must be a list of hidden-layer sizes, got {widths!r}")
    bias_std = check_number("init.bias_std", init.bias_std, 0.0, float("inf"), hi_open=True)
    if batchnorm and layernorm:
        raise EngineError("choose batchnorm or layernorm, not both")
    sizes = [check_size("n_in", n_in), *(check_size("width", w) for w in widths), check_size("n_out", n_out)]
    widths = sizes[1:-1]
    if residual:
        if len(widths) < 2 or len(set(widths)) != 1:
            raise EngineError(f"a residual net needs at least 2 hidden layers of one width (a plain stem, then "
                              f"residual blocks), got widths {widths}")
        alpha, learnable = resolve_branch_scale(branch_scale, len(widths) - 1)
    elif branch_scale is not None:
        raise EngineError("branch_scale applies to residual nets only (set residual)")
    dt = DTYPES[dtype]
    phi = get_activation(activation, slope)
    gain = resolve_gain(init, activation, slope)

    def linear(i):
        W = draw_weights(init, sizes[i], sizes[i + 1], rng, gain).astype(dt)
        b = None
        if bias:
            b = (rng.standard_normal(sizes[i + 1]) * bias_std if bias_std else np.zeros(sizes[i + 1])).astype(dt)
        return Linear(W, b, name=f"layer{i + 1}" if i < len(widths) else "output")

    blocks = []
    shared_alpha = branch_scales(len(widths) - 1, dt) if residual and learnable else None
    for i, w in enumerate(widths):
        norm = None
        if batchnorm:
            norm = BatchNorm(w, dt, eps=bn_eps, momentum=bn_momentum, name=f"bn{i + 1}")
        elif layernorm:
            norm = LayerNorm(w, dt, name=f"ln{i + 1}")
        act = ActivationLayer(phi, name=f"act{i + 1}")
        if residual and i > 0:
            scale = (shared_alpha, i - 1) if shared_alpha is not None else alpha
            blocks.append(ResidualBlock(linear(i), norm, act, scale, name=f"res{i + 1}"))
        else:
            blocks.append(Block(linear(i), norm, act))
    return MLP(blocks, linear(len(widths)), dt)
