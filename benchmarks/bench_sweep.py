"""Sweep benchmark: a 16-point training sweep with 1 and with 2 local workers.

Throughput: the wall time of the sweep with 1 and with 2 workers (rounds interleaved, best of
each, so a burst of load elsewhere on the machine hits both alike); goal ≥ 1.7× on 2 cores.

Per-point overhead: everything a sweep adds to the points' own compute — worker start-up, the
run directories, the manifest, the summary and sweep.png — measured on the same 16 points cut
to 1 training step, with 1 worker: (wall time − the points' compute in this process) / 16;
goal < 0.5 s. ``--figures`` also draws every point's own PNGs and reports that too.

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
    from initlab.sweeps.plan import make_plan
except ImportError as e:  # pragma: no cover - a usage hint, not a code path
    sys.exit(f"Error: cannot import initlab ({e}); install it (pip install -e .) or set PYTHONPATH to the repo root")

POINTS = 16


def config(steps: int) -> dict:
    # 5×100 nets on 1000 teacher-labelled samples, 8 weight stds × 2 activations: ~0.7 s of compute per
    # point (1000 steps), about the same for every point (none of these stds diverges).
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
    ap.add_argument("--steps", type=int, default=1000, help="training steps per point")
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
    print(f"throughput 2 workers / 1 worker: {walls[1] / walls[2]:.2f}×   (goal ≥ 1.7× on 2 cores)")

    short = config(1)
    base = min(compute_only(short) for _ in range(args.rounds))
    wall = min(timed_sweep(short, 1, False) for _ in range(args.rounds))
    print(f"per-point overhead (worker start, run dir, manifest, summary, sweep.png; 1-step points, 1 worker): "
          f"{(wall - base) / POINTS:.3f} s   (goal < 0.5 s; sweep {wall:.2f} s, compute {base:.2f} s)")
    if args.figures:
        wall = min(timed_sweep(short, 1, True) for _ in range(args.rounds))
        print(f"  with each point's own figures (--figures): {(wall - base) / POINTS:.3f} s per point")


if __name__ == "__main__":
    main()
