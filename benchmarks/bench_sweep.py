"""Sweep benchmark: a 16-point training sweep with 1 and with 2 local workers.

Prints the wall time of each, the throughput ratio (goal: ≥ 1.7× with 2 workers on 2 cores) and
the per-point overhead (goal: < 0.5 s): the 1-worker wall time minus the points' own compute
(each point run in this process with one BLAS thread, nothing written), divided by 16. The
overhead is everything a sweep adds: worker start-up, the run directories, the manifest, the
summary and sweep.png. ``--figures`` also draws every point's own PNGs and reports that too.

    python benchmarks/bench_sweep.py [--rounds R] [--steps N] [--figures]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

try:
    import initlab
    from initlab.experiment import run
    from initlab.sweep import make_plan
except ImportError as e:  # pragma: no cover - a usage hint, not a code path
    sys.exit(f"Error: cannot import initlab ({e}); install it (pip install -e .) or set PYTHONPATH to the repo root")

POINTS = 16


def config(steps: int) -> dict:
    # 5×100 nets on 1000 teacher-labelled samples, 8 weight stds × 2 activations: ~0.4 s of compute per
    # point, about the same for every point (none of these stds diverges), so the load balances.
    return {
        "name": "bench_sweep",
        "data": {"kind": "teacher", "samples": 1000, "features": 100, "classes": 10, "eval_samples": 1000},
        "model": {"depth": 5, "width": 100, "activation": "relu"},
        "init": {"scheme": "normal", "std": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "train": {"steps": steps, "batch_size": 100, "eval_every": 100},
        "sweep": {"init.std": [0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01], "model.activation": ["relu", "tanh"]},
    }


def compute_only(cfg: dict) -> float:
    """The points' own work: each run in this process, one BLAS thread, no files."""
    from threadpoolctl import threadpool_limits

    plan = make_plan(cfg)
    assert len(plan.points) == POINTS
    t = time.perf_counter()
    with threadpool_limits(1):
        for p in plan.points:
            run(p.config)
    return time.perf_counter() - t


def timed_sweep(cfg: dict, workers: int, figures: bool) -> float:
    out = tempfile.mkdtemp(prefix="bench_sweep-")
    try:
        t = time.perf_counter()
        res = initlab.sweep(cfg, out=out, workers=workers, figures=figures)
        wall = time.perf_counter() - t
        assert res.counts["completed"] + res.counts["diverged"] == POINTS, res.counts
        return wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="repetitions; the best (least disturbed) time counts")
    ap.add_argument("--steps", type=int, default=500, help="training steps per point")
    ap.add_argument("--figures", action="store_true", help="also measure with every point's own figures")
    args = ap.parse_args()
    cfg = config(args.steps)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{POINTS}-point training sweep (5×100 relu/tanh, teacher data, {args.steps} steps); "
          f"{cores} cores; load average {os.getloadavg()[0]:.2f}")
    compute = min(compute_only(cfg) for _ in range(args.rounds))
    print(f"compute only (in process, 1 BLAS thread, nothing written): {compute:.2f} s = {compute / POINTS:.3f} s/point")
    times = {1: [], 2: []}
    for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits both alike
        for workers in (1, 2):
            times[workers].append(timed_sweep(cfg, workers, False))
    walls = {w: min(t) for w, t in times.items()}
    for workers, t in times.items():
        print(f"sweep, {workers} worker{'s' if workers > 1 else ' '}: best {walls[workers]:.2f} s "
              f"(median {statistics.median(t):.2f} s over {args.rounds})")
    ratio = walls[1] / walls[2]
    overhead = (walls[1] - compute) / POINTS
    print(f"throughput 2 workers / 1 worker: {ratio:.2f}×   (goal ≥ 1.7× on 2 cores)")
    print(f"per-point overhead (process start, writing, manifest, summary, sweep.png): {overhead:.3f} s   (goal < 0.5 s)")
    if args.figures:
        wall = min(timed_sweep(cfg, 1, True) for _ in range(args.rounds))
        print(f"with each point's own figures (--figures), 1 worker: {wall:.2f} s; "
              f"per-point overhead {(wall - compute) / POINTS:.3f} s")


if __name__ == "__main__":
    main()
