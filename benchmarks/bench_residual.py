"""Residual-step benchmark: one training step of a residual net vs a plain net of the same shape.

Same shape: 784 → WIDTH × DEPTH → 10, ReLU, He init, float32, batch 100, SGD, one BLAS thread.
The plain net is Linear → ReLU per block; the residual net has the same Linears in pre-activation
blocks h + α·(W·ReLU(h) + b) after a plain stem. Variants: a fixed α (1/√L: one extra scale and
add per block, forward and backward) and ReZero (a learnable α: also d loss/dα). The steps are
interleaved round by round (plain, residual, rezero, plain, ...) so machine load hits all alike,
and the ratio of the medians is printed; the goal (issue 17) is ≤ 1.1.

    python benchmarks/bench_residual.py [--width 100] [--depth 20] [--steps 20] [--rounds 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

try:
    from initlab.engine.losses import SoftmaxCrossEntropy
    from initlab.engine.model import InitSpec, build_mlp
    from initlab.engine.optimizers import SGD
except ImportError as e:  # pragma: no cover - a usage hint, not a code path
    sys.exit(f"Error: cannot import initlab ({e}); install it (pip install -e .) or set PYTHONPATH to the repo root")

GOAL = 1.1


def make(width: int, depth: int, residual: bool, branch_scale=None):
    # The same seed draws the same Linears in both nets (the residual keywords draw nothing extra).
    return build_mlp(784, 10, [width] * depth, "relu", InitSpec("he_normal"), np.random.default_rng(0),
                     residual=residual, branch_scale=branch_scale)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((100, 784)).astype(np.float32), rng.integers(0, 10, 100)) for _ in range(10)]
    nets = {"plain": make(a.width, a.depth, False), "residual 1/sqrt(depth)": make(a.width, a.depth, True, "1/sqrt(depth)"),
            "rezero": make(a.width, a.depth, True, "rezero")}
    # A tiny learning rate: the nets stay where they started, so every round times the same arithmetic.
    opts = {k: SGD(1e-5) for k in nets}
    loss = SoftmaxCrossEntropy()
    times = {k: [] for k in nets}
    with threadpool_limits(limits=1, user_api="blas"):
        for r in range(a.rounds + 1):
            for k, m in nets.items():
                params = m.params()
                t = time.perf_counter()
                for s in range(a.steps):
                    x, y = batches[s % len(batches)]
                    loss.forward(m.forward(x, train=True), y)
                    m.backward(loss.backward(), input_grad=False)
                    opts[k].step(params)
                if r:  # round 0 warms up caches and allocations
                    times[k].append((time.perf_counter() - t) / a.steps)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"784-{a.width}x{a.depth}-10 ReLU, batch 100, float32, 1 BLAS thread; {a.rounds} rounds x {a.steps} steps; "
          f"load average {load:.2f}")
    worst = 0.0
    for k, v in med.items():
        ratio = v / med["plain"]
        if k != "plain":
            worst = max(worst, ratio)
        print(f"  {k:<24} {v:8.3f} ms/step   x{ratio:.3f} of plain")
    print(f"worst ratio {worst:.3f} (goal <= {GOAL}): {'ok' if worst <= GOAL else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
