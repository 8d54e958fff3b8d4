"""Layers with ``forward(x, train)`` / ``backward(dout)``.

Shapes: inputs are ``(n_ex, n_in)``, outputs ``(n_ex, n_out)``. Each layer caches exactly what
its backward pass needs and never writes into the arrays it is given (unless told it owns one:
``ActivationLayer.backward(dout, overwrite=True)``, which ``MLP.backward`` uses). Parameters are
:class:`Parameter` objects whose ``grad`` buffer is filled by ``backward``.
"""
from __future__ import annotations

import numpy as np

from initlab.engine.activations import Activation
from initlab.errors import EngineError, check_number, check_size


class Parameter:
    """A trainable array and the gradient buffer of the same shape and dtype."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name: str, data: np.ndarray):
        self.name = name
        self.data = data
        self.grad = np.zeros_like(data)

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.data.shape}, dtype={self.data.dtype})"


class Parameters(list):
    """A model's parameters whose ``data`` and ``grad`` are views into two flat arrays, held by
    ``flat`` (a :class:`Parameter` of its own). Optimizers update ``flat`` in one pass per
    operation instead of one per parameter: a dozen NumPy calls fewer per rule and step, the
    same values (every update rule is element-wise; the padding between parameters stays 0)."""

    flat: Parameter


SMALL_PRODUCT = 1_000_000  # multiply-adds: see Linear.backward
ALIGN_BYTES = 64  # each parameter starts on a cache line, as its own allocation would for BLAS


def pack(params: list[Parameter]) -> Parameters:
    """Move ``params`` (one dtype, distinct objects) into flat storage; their values are unchanged."""
    dtype = params[0].data.dtype if params else np.dtype(np.float32)
    if len({id(p) for p in params}) != len(params) or any(p.data.dtype != dtype for p in params):
        raise EngineError("pack: parameters must be distinct and of one dtype")
    step = max(1, ALIGN_BYTES // dtype.itemsize)
    offsets, total = [], 0
    for p in params:
        offsets.append(total)
        total += -(-p.data.size // step) * step
    data, grad = (_aligned_zeros(total, dtype) for _ in range(2))
    for p, off in zip(params, offsets):
        shape, n = p.data.shape, p.data.size
        data[off:off + n] = p.data.reshape(-1)
        grad[off:off + n] = p.grad.reshape(-1)
        p.data, p.grad = data[off:off + n].reshape(shape), grad[off:off + n].reshape(shape)
    out = Parameters(params)
    out.flat = Parameter("flat", data)
    out.flat.grad = grad
    return out


def _aligned_zeros(n: int, dtype) -> np.ndarray:
    step = max(1, ALIGN_BYTES // dtype.itemsize)
    raw = np.zeros(n + step, dtype)
    start = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[start:start + n]


def _check_input(x, n_in, who):
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != n_in:
        shape = getattr(x, "shape", type(x).__name__)
        raise EngineError(f"{who} expects input of shape (n, {n_in}), got {shape}")


class Linear:
    """``y = x @ W + b`` with ``W`` of shape ``(fan_in, fan_out)``."""

    def __init__(self, W: np.ndarray, b: np.ndarray | None = None, name: str = "linear"):
        if not isinstance(W, np.ndarray) or W.ndim != 2 or W.dtype.kind != "f":
            raise EngineError(f"{name}: weights must be a 2-D float array, got {getattr(W, 'shape', type(W).__name__)}")
        if b is not None and (not isinstance(b, np.ndarray) or b.size != W.shape[1] or b.dtype != W.dtype):
            raise EngineError(f"{name}: bias must be a {W.dtype} array of {W.shape[1]} entries, got {getattr(b, 'shape', b)}")
        self.W = Parameter(f"{name}.W", W)
        self.b = None if b is None else Parameter(f"{name}.b", b.reshape(-1))
        self.name = name
        self.x = None

    @property
    def fan_in(self) -> int:
        return self.W.data.shape[0]

    @property
    def fan_out(self) -> int:
        return self.W.data.shape[1]

    def params(self) -> list[Parameter]:
        return [self.W] if self.b is None else [self.W, self.b]

    def forward(self, x, train=True):
        _check_input(x, self.fan_in, self.name)
        self.x = x
        y = x @ self.W.data
        if self.b is not None:
            y += self.b.data
        return y

    def backward(self, dout, input_grad=True):
        """Fill ``W.grad`` ``(fan_in, fan_out)`` and ``b.grad`` ``(fan_out,)`` from ``dout`` ``(n_ex, fan_out)``.

        Returns d loss/d x ``(n_ex, fan_in)``, or None when ``input_grad`` is False: the first
        layer's input is the data, whose gradient training never needs (it is the costliest product).
        """
        if self.x is None:
            raise EngineError(f"{self.name}: backward called before forward")
        if not isinstance(dout, np.ndarray) or dout.shape != (self.x.shape[0], self.fan_out):
            shape = getattr(dout, "shape", type(dout).__name__)
            raise EngineError(f"{self.name}: backward expects dout of shape {(self.x.shape[0], self.fan_out)}, got {shape}")
        np.matmul(self.x.T, dout, out=self.W.grad)
        if self.b is not None:
            np.add.reduce(dout, axis=0, out=self.b.grad)  # np.sum without its Python wrapper
        return self.input_grad(dout) if input_grad else None

    def input_grad(self, dout):
        """d loss/d x ``(n_ex, fan_in)`` from ``dout`` alone, leaving the parameters' gradients as they
        are (the Jacobian at init needs only this product)."""
        W = self.W.data
        if dout.shape[0] * W.size <= SMALL_PRODUCT:
            # OpenBLAS computes products of up to 1e6 multiply-adds with "small-matrix" kernels, whose
            # transposed-B ("NT") kernel is 1.4-1.5x slower than the plain one (100x100x100 float32:
            # 17 us against 11 us; the copy of W's transpose costs 2 us). Above that size the NT path
            # is as fast and the copy would only cost (batch 128: 24 us against 25 us).
            W = np.ascontiguousarray(W.T)
            return dout @ W
        return dout @ W.T

    def __repr__(self) -> str:
        return f"Linear({self.fan_in}, {self.fan_out}, bias={self.b is not None})"


class _Normalize:
    """Shared backward of batch and layer normalization along ``axis``."""

    axis = 0

    def __init__(self, n: int, dtype, eps: float, name: str):
        self.n = check_size(f"{name}: size", n)
        self.eps = check_number(f"{name}: eps", eps, 0.0, lo_open=True, hi_open=True)
        self.gamma = Parameter(f"{name}.gamma", np.ones(self.n, dtype=dtype))
        self.beta = Parameter(f"{name}.beta", np.zeros(self.n, dtype=dtype))
        self.name = name
        self.xn = None
        self.inv_std = None

    def params(self) -> list[Parameter]:
        return [self.gamma, self.beta]

    def _normalize(self, x):
        # np.add.reduce(...) / n is what x.mean() computes, without mean's Python layers (a few µs a call)
        n = x.shape[self.axis]
        mu = np.add.reduce(x, axis=self.axis, keepdims=True)
        mu /= n
        xc = x - mu
        var = np.add.reduce(xc * xc, axis=self.axis, keepdims=True)  # biased variance
        var /= n
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.xn = xc * self.inv_std
        return mu, var

    def _scale(self, xn):
        y = xn * self.gamma.data
        y += self.beta.data  # in place: the same values as xn·γ + β, one full-size array fewer
        return y

    def backward(self, dout):
        if self.xn is None:
            raise EngineError(f"{self.name}: backward called before a training forward pass")
        xn = self.xn
        if not isinstance(dout, np.ndarray) or dout.shape != xn.shape:
            raise EngineError(f"{self.name}: backward expects dout of shape {xn.shape}, got {getattr(dout, 'shape', dout)}")
        np.sum(dout, axis=0, out=self.beta.grad)
        np.sum(dout * xn, axis=0, out=self.gamma.grad)
        dxn = dout * self.gamma.data
        mean_dxn = dxn.mean(axis=self.axis, keepdims=True)
        mean_dxn_xn = np.mean(dxn * xn, axis=self.axis, keepdims=True)
        return (dxn - mean_dxn - xn * mean_dxn_xn) * self.inv_std


class BatchNorm(_Normalize):
    """Batch normalization over the batch axis, per feature.

    Training: minibatch mean and *biased* variance. Evaluation: running averages, updated
    PyTorch-style, ``running = (1 - momentum)·running + momentum·batch`` with momentum 0.1
    (the textbook's "0.9 on the old value" is the same rule), running variance stored
    unbiased and starting at 1, running mean starting at 0. γ = 1, β = 0, eps = 1e-5.
    """

    axis = 0

    def __init__(self, n: int, dtype=np.float32, eps: float = 1e-5, momentum: float = 0.1, name: str = "batchnorm"):
        super().__init__(n, dtype, eps, name)
        self.momentum = check_number(f"{name}: momentum", momentum, 0.0, 1.0)
        self.running_mean = np.zeros(self.n, dtype=dtype)
        self.running_var = np.ones(self.n, dtype=dtype)

    def forward(self, x, train=True):
        _check_input(x, self.n, self.name)
        if not train:
            self.xn = None
            # (x − μ)/√(σ²+ε)·γ + β with each step in place on one array: the same values as the
            # formula's temporaries, 40% faster on evaluation's 1,000-image batches
            y = x - self.running_mean
            y /= np.sqrt(self.running_var + self.eps)
            y *= self.gamma.data
            y += self.beta.data
            return y
        if x.shape[0] < 2:
            raise EngineError(f"{self.name}: batch normalization needs a batch of at least 2 in training")
        mu, var = self._normalize(x)
        m = x.shape[0]
        k = self.momentum
        self.running_mean *= 1 - k
        self.running_mean += k * mu.reshape(-1)
        self.running_var *= 1 - k
        self.running_var += (k * m / (m - 1)) * var.reshape(-1)
        return self._scale(self.xn)

    def backward(self, dout):
        """As :meth:`_Normalize.backward`, with the batch means of dxn = dout·γ and dxn·x̂ taken from
        the β and γ gradients (their sums over the same axis): two reductions and a full-size product
        fewer, and γ·(1/σ) folded into one per-feature factor."""
        if self.xn is None:
            raise EngineError(f"{self.name}: backward called before a training forward pass")
        xn = self.xn
        if not isinstance(dout, np.ndarray) or dout.shape != xn.shape:
            raise EngineError(f"{self.name}: backward expects dout of shape {xn.shape}, got {getattr(dout, 'shape', dout)}")
        m = xn.shape[0]
        np.add.reduce(dout, axis=0, out=self.beta.grad)  # Σ dout
        np.add.reduce(dout * xn, axis=0, out=self.gamma.grad)  # Σ dout·x̂
        s = self.gamma.data * self.inv_std.reshape(-1)  # γ/σ per feature
        dx = dout * s
        dx -= xn * (s * (self.gamma.grad / m))
        dx -= s * (self.beta.grad / m)
        return dx

    def __repr__(self) -> str:
        return f"BatchNorm({self.n}, momentum={self.momentum}, eps={self.eps})"


class LayerNorm(_Normalize):
    """Layer normalization: per example over the features, the same in training and evaluation."""

    axis = 1

    def __init__(self, n: int, dtype=np.float32, eps: float = 1e-5, name: str = "layernorm"):
        super().__init__(n, dtype, eps, name)

    def forward(self, x, train=True):
        _check_input(x, self.n, self.name)
        self._normalize(x)
        return self._scale(self.xn)

    def __repr__(self) -> str:
        return f"LayerNorm({self.n}, eps={self.eps})"


class ActivationLayer:
    """Applies φ element-wise; caches the pre-activation ``z`` and the output ``a``."""

    def __init__(self, activation: Activation, name: str = "activation"):
        self.activation = activation
        self.name = name
        self.z = None
        self.a = None

    def params(self) -> list[Parameter]:
        return []

    def forward(self, z, train=True):
        self.z = z
        self.a = self.activation.fn(z)
        return self.a

    def backward(self, dout, overwrite=False):
        """d loss/d z from ``dout``; with ``overwrite``, computed in ``dout``'s own memory (the caller
        owns it and needs it no more: :meth:`MLP.backward` for the arrays the layers hand each other)."""
        if self.z is None:
            raise EngineError(f"{self.name}: backward called before forward")
        if not isinstance(dout, np.ndarray) or dout.shape != self.z.shape:
            raise EngineError(f"{self.name}: backward expects dout of shape {self.z.shape}, got {getattr(dout, 'shape', dout)}")
        out = dout if overwrite and dout.dtype == np.result_type(dout, self.z) else None
        return self.activation.backprop(dout, self.z, self.a, out)

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation.name})"
