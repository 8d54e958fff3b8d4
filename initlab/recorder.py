"""Per-layer statistics of a model on a fixed probe batch: histograms and moments, never raw arrays.

A snapshot runs one forward pass on the probe batch in training mode (batch statistics for
BatchNorm, whose running averages are restored afterwards so that recording never changes
training) and keeps, per hidden layer, histograms of the activations and pre-activations, their
mean and std, saturated and dead fractions, and the spread across units.

The per-layer weight-gradient norm needs a backward pass, which on the whole probe costs about ten
training steps (most of what recording used to cost). Where it comes from is ``grad_from``:

- ``"step"`` (a run's default): from the backward pass training does anyway. The snapshot at step
  ``s`` is left *pending* and the next training step, which starts from the very weights the
  snapshot saw, hands over its gradients (:meth:`Recorder.take_step_grads`) before clipping and
  before its update; a snapshot no step follows (the last one, or one cut short by divergence or
  an interrupt) gets a minibatch drawn as the next step would draw it (:meth:`Recorder.settle`).
  So ``grad_norm`` is the norm of the gradient a training step sees, at no extra cost.
- ``"probe"``: a forward and backward pass on the first ``grad_samples`` probe examples
  (``None``: the whole probe, in the same pass as the histograms), 0.2's way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from initlab.engine.clipping import grad_norm
from initlab.layer_stats import histograms, limits, summaries
from initlab.numbers import finite_or_none

# Arrays stored per snapshot, each of shape (n_layers,) or (n_layers, bins[+1]).
FIELDS = (
    "act_counts", "act_edges", "act_mean", "act_std", "saturated_frac", "dead_frac",
    "preact_counts", "preact_edges", "preact_mean", "preact_std", "grad_norm", "unit_std",
)


@dataclass
class Snapshot:
    step: int
    data: dict = field(default_factory=dict)  # FIELDS → arrays over layers

    def layer(self, i: int) -> dict:
        """Scalar statistics of hidden layer ``i`` (0-based) as plain floats (None where n/a)."""
        keys = ("act_mean", "act_std", "saturated_frac", "dead_frac", "preact_mean", "preact_std", "grad_norm", "unit_std")
        out = {k: finite_or_none(self.data[k][i]) for k in keys}
        return {
            "mean": out["act_mean"], "std": out["act_std"], "saturated_frac": out["saturated_frac"],
            "dead_frac": out["dead_frac"], "preact_mean": out["preact_mean"], "preact_std": out["preact_std"],
            "grad_norm": out["grad_norm"], "unit_std": out["unit_std"],
        }


# Default size of the sub-probe for gradient norms (``record.grad_samples``): the textbook's batch,
# so one training step's worth of work, and the norm is that of the gradient a batch-100 step sees
# (as history.csv's grad_norm). On MNIST at init it is within ~15% of the 1,000-example norm
# (+5-10% bias: a noisier mean has a larger norm); late in training, when the mean gradient is
# small next to the per-example spread, it can be 1.5-2.5x that. tests/test_recorder.py shows the
# agreement within sampling error; ``record.grad_samples: null`` gives the whole-probe value.
GRAD_SAMPLES = 100


def _act_stats(acts, act, bins, range_, scratch) -> dict:
    """The activations' fields of a snapshot (``range_``: the histograms' range, None: fitted)."""
    lims = limits(acts)  # one min and max per array, shared below
    d = {}
    d["act_counts"], d["act_edges"] = histograms(acts, bins, range_, lims, scratch)
    # unit_std: mean over examples of the spread across a layer's units (0: every unit is the same unit)
    d["act_mean"], d["act_std"], d["unit_std"] = summaries(acts, lims=lims, scratch=scratch)
    d["saturated_frac"] = _fraction(act.saturated, acts)
    d["dead_frac"] = _fraction(act.dead, acts)
    return d


def _preact_stats(pre, bins, scratch) -> dict:
    """The pre-activations' fields of a snapshot (histograms over a fitted range)."""
    lims = limits(pre)
    d = {}
    d["preact_counts"], d["preact_edges"] = histograms(pre, bins, None, lims, scratch)
    d["preact_mean"], d["preact_std"], _ = summaries(pre, spread=False, lims=lims, scratch=scratch)
    return d


def _fraction(mask_fn, arrays):
    if mask_fn is None:
        return np.full(len(arrays), np.nan)
    return np.array([np.count_nonzero(mask_fn(a)) / a.size for a in arrays])


GRAD_FROM = ("step", "probe")  # record.grad_from


def layer_grad_norms(model) -> np.ndarray:
    """The norm of each hidden layer's weight gradient, from the gradients the last backward pass left."""
    return np.array([grad_norm([b.linear.W]) for b in model.blocks])


class Recorder:
    """Takes snapshots of a model on a fixed probe batch and keeps them in order.

    ``grad_from``: where the gradient norms come from (module docstring): ``"probe"`` computes them
    in :meth:`snapshot`; ``"step"`` leaves the snapshot pending until :meth:`take_step_grads` or
    :meth:`settle`. ``grad_samples``: with ``"probe"``, how many of the probe's first examples give
    them (None: all). A context manager: :meth:`close` when done (see
    :class:`initlab.recorder_process.BackgroundRecorder`, which takes snapshots in another process).
    """

    def __init__(self, probe_x, probe_y, loss, bins=30, range_=None, grad_samples=GRAD_SAMPLES, grad_from="probe"):
        if grad_from not in GRAD_FROM:
            raise ValueError(f"grad_from must be one of {', '.join(GRAD_FROM)}, got {grad_from!r}")
        self.probe_x, self.probe_y, self.loss = probe_x, probe_y, loss
        self.bins, self.range = bins, range_
        n = len(probe_x)
        self.grad_samples = n if grad_samples is None else min(int(grad_samples), n)
        self.grad_from = grad_from
        self.snapshots: list[Snapshot] = []
        self._pending: Snapshot | None = None  # waiting for the next step's gradients
        self._scratch: dict = {}  # buffers reused by every snapshot (see _scratch)

    def close(self) -> None:
        """Every snapshot taken is complete (nothing to wait for here)."""

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> bool:
        """Is a snapshot waiting for the gradient norms of the step that follows it?"""
        return self._pending is not None

    def take_step_grads(self, model) -> None:
        """The pending snapshot's gradient norms from the backward pass training just ran (from the
        snapshot's weights: call it after the backward pass, before clipping and the update)."""
        if self._pending is not None:
            self._pending.data["grad_norm"] = layer_grad_norms(model)
            self._pending = None

    def settle(self, model, x, y) -> None:
        """A pending snapshot that no training step will follow gets its gradient norms from a
        forward and backward pass on ``(x, y)``: a minibatch drawn as the next step would draw it."""
        if self._pending is not None:
            with model.running_stats_kept():
                self._pending.data["grad_norm"] = self._gradient_pass(model, x, y)
            self._pending = None

    def _gradient_pass(self, model, x, y):
        out = model.forward(x, train=True)
        self.loss.forward(out, y)
        model.backward(self.loss.backward(), input_grad=False)
        return layer_grad_norms(model)

    def snapshot(self, model, step: int) -> Snapshot:
        """Measure the model now (:meth:`measure`) and keep the snapshot (pending with ``grad_from="step"``)."""
        return self._keep(Snapshot(step, self.measure(model)))

    def _keep(self, snap: Snapshot) -> Snapshot:
        self.snapshots.append(snap)
        if self.grad_from == "step":
            self._pending = snap
        return snap

    def measure(self, model) -> dict:
        """Every field of a snapshot of ``model`` as it is now (``grad_norm`` NaN with ``grad_from="step"``)."""
        k = self.grad_samples
        with model.running_stats_kept():
            if self.grad_from == "step":  # the histograms' forward pass only: the next step brings the gradients
                model.forward(self.probe_x, train=True)
                gnorm = np.full(len(model.blocks), np.nan)
            elif k >= len(self.probe_x):  # the whole probe: one forward and backward pass
                gnorm = self._gradient_pass(model, self.probe_x, self.probe_y)
            else:  # gradients on the sub-probe first; then the histograms' forward-only pass
                gnorm = self._gradient_pass(model, self.probe_x[:k], self.probe_y[:k])
                model.forward(self.probe_x, train=True)
        acts = [b.output for b in model.blocks]
        pre = [b.preact for b in model.blocks]
        act = model.blocks[0].act.activation
        a_range = tuple(self.range) if self.range else act.range
        d = _act_stats(acts, act, self.bins, a_range, self._scratch)
        d.update(_preact_stats(pre, self.bins, self._scratch))
        d["grad_norm"] = gnorm
        return d

    def arrays(self) -> dict:
        """All snapshots stacked: ``steps`` (S,) and each field (S, L[, bins])."""
        return stack(self.snapshots)


def stack(snapshots) -> dict:
    out = {"steps": np.array([s.step for s in snapshots], dtype=np.int64)}
    for k in FIELDS:
        out[k] = np.stack([s.data[k] for s in snapshots])
    return out


def unstack(arrays) -> list[Snapshot]:
    return [Snapshot(int(step), {k: arrays[k][i] for k in FIELDS}) for i, step in enumerate(arrays["steps"])]
