"""Manifest benchmark: what recording one point costs, from 100 to 10,000 points.

A sweep's parent records every start and finish. It used to rewrite the whole ``manifest.json``
after every finished point, so the cost per point grew with the sweep (1,000 trivial points:
24 s; 3,000: 176 s). :class:`initlab.sweeps.manifest.ManifestWriter` appends each finish to a
journal and rewrites the snapshot at a bounded rate. This measures the time spent inside the
recording calls per point, for sweeps of N points that finish ``--gap`` ms apart (a trivial
point on 2 workers takes ~45 ms; 1 ms is a harsh case), with the real manifest entries of a
plan (built with ``make_plan``) and the old way for comparison where it stays affordable.
Goal: the per-point cost flat (within 2×) from 100 to 10,000 points.

    python benchmarks/bench_manifest.py [--gap MS] [--sizes 100,1000,10000] [--old-up-to 1000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    from initlab.sweeps.manifest import ManifestWriter, new_manifest, now_iso, write_manifest
    from initlab.sweeps.plan import make_plan
except ImportError as e:  # pragma: no cover - a usage hint, not a code path
    sys.exit(f"Error: cannot import initlab ({e}); install it (pip install -e .) or set PYTHONPATH to the repo root")

TINY = {"name": "bench_manifest", "data": {"kind": "gaussian", "samples": 10, "features": 4},
        "model": {"depth": 1, "width": 4}}


def manifest_of(n: int) -> dict:
    """A manifest of n points: a real plan's entries (what a sweep writes), repeated with their
    own index, seed and folder (building and validating a 10,000-point plan is not what is timed)."""
    import copy

    manifest = new_manifest(make_plan(TINY, seeds=2))
    first = manifest["points"][0]
    width = len(str(n - 1))
    manifest["points"] = [dict(copy.deepcopy(first), index=i, seed=i, overrides={"seed": i}, label=f"seed={i}",
                               run_dir=f"runs/{i:0{width}d}-seed{i}") for i in range(n)]
    return manifest


def simulate(n: int, gap_s: float, old: bool) -> float:
    """Seconds spent recording per point: each point starts, then finishes ``gap_s`` later."""
    manifest = manifest_of(n)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        writer = ManifestWriter(d, manifest)
        writer.save(force=True)
        spent = 0.0
        for i, mp in enumerate(manifest["points"]):
            t0 = time.perf_counter()
            mp.update(status="running", started=now_iso())
            writer.save()
            spent += time.perf_counter() - t0
            time.sleep(gap_s)
            t0 = time.perf_counter()
            mp.update(status="completed", finished=now_iso(), duration_s=gap_s, exit_reason=None)
            if old:  # the former way: the whole file, atomically, after every finished point
                write_manifest(d, manifest)
            else:
                writer.record(i)
            if not old:
                writer.flush()
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.save(force=True)
        writer.close()
        spent += time.perf_counter() - t0
    return spent / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gap", type=float, default=1.0, help="ms between a point's start and its finish")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--old-up-to", type=int, default=1000, help="also time the old way up to this many points")
    ap.add_argument("--rounds", type=int, default=3, help="rounds for sizes ≤ 1000 (the median is shown)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"per-point manifest cost, points finishing {args.gap:g} ms apart (median of rounds)")
    base = None
    for n in sizes:
        rounds = args.rounds if n <= 1000 else 1
        new = statistics.median(simulate(n, args.gap / 1000, old=False) for _ in range(rounds))
        base = base or new
        line = f"  {n:>6} points: {new * 1e6:8.1f} µs/point (×{new / base:.2f} of {sizes[0]})"
        if n <= args.old_up_to:
            old = statistics.median(simulate(n, args.gap / 1000, old=True) for _ in range(rounds))
            line += f"   old way: {old * 1e6:9.1f} µs/point"
        print(line, flush=True)


if __name__ == "__main__":
    main()
