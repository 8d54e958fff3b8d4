"""The order a sweep hands out its points: the costliest first.

A sweep ends when its last point does. Handed out in the grid's order, the textbook's optimizer
sweep starts SGD and Momentum and leaves Adam, whose update makes 13 passes over the weights to
SGD's 2, for the end, where it runs on while the other core idles. Started first, the long points
finish alongside the short ones (longest processing time first, a classic for parallel machines).
Only the order of dispatch changes: a point's numbers do not depend on when or where it runs,
and its index, run directory and manifest entry stay the grid's.

The estimate counts multiply-adds from the config alone and needs only to rank the points of one
grid: the matrix products of training, evaluation and snapshots, plus the element-wise passes of
the optimizer and of normalization layers, each pass priced like ``ELEMENT_PASS`` multiply-adds.
"""
from __future__ import annotations

from initlab.engine.optimizers import UPDATE_PASSES
from initlab.memory import TRAIN_ACC_SAMPLES, data_sizes, parameter_count

# A pass over one float (read, compute, write; memory-bound at ~90 GB/s) costs about what 18
# multiply-adds do in OpenBLAS's products (~130 GFLOP/s) on the machines initlab was measured on.
ELEMENT_PASS = 18
NORM_PASSES = 12  # a BatchNorm/LayerNorm unit's forward and backward per example, about


def work_estimate(cfg) -> float:
    """Roughly the multiply-adds a run of ``cfg`` performs (for ranking points, not for display)."""
    d, m, t, r = cfg.data, cfg.model, cfg.train, cfg.record
    n_train, n_eval, n_out = data_sizes(d)
    widths = [d.features, *m.widths, n_out]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))  # one example's forward pass
    params = parameter_count(widths)
    norm = NORM_PASSES * ELEMENT_PASS * sum(m.widths) if (m.batchnorm or m.layernorm) else 0
    step = t.batch_size * (3 * macs + norm) + UPDATE_PASSES.get(cfg.optimizer.name, 2) * ELEMENT_PASS * params
    evaluations = (t.steps // t.eval_every + 1) * (n_eval + min(n_train, TRAIN_ACC_SAMPLES)) if t.steps else 0
    snapshots = (t.steps // r.every + 1 if r.every else 1) * 3 * min(r.samples, n_train)
    return t.steps * step + (evaluations + snapshots) * (macs + norm)


def costliest_first(plan, indices) -> list[int]:
    """``indices`` of ``plan``'s points, the largest :func:`work_estimate` first (ties keep grid order)."""
    cost = {i: work_estimate(plan.points[i].config) for i in indices}
    return sorted(indices, key=lambda i: -cost[i])
