"""The textbook's three MNIST experiments, end to end, against the reference code's times.

    INITLAB_DATA_DIR=/path/to/data python benchmarks/bench_textbook.py [--workers 2] [--only NAME]

Runs `initlab sweep configs/<name>.yaml` for each experiment in a fresh process (data loading,
every point, figures and summary included), prints the wall time, the speed-up over the
textbook's own code on a 2-core machine (about 195 s, 250 s and 215 s; goal ≥ 5×) and the
results that must come out (final minibatch loss or training accuracy per point).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_S = {"mnist_weight_init": 195.0, "mnist_optimizers": 250.0, "mnist_batchnorm_grid": 215.0}


def run_sweep(name, workers, out):
    cmd = [sys.executable, "-m", "initlab", "sweep", str(ROOT / "configs" / f"{name}.yaml"),
           "--workers", str(workers), "--out", out, "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        sys.exit(f"{name}: exit {proc.returncode}: {proc.stderr.strip()}")
    return wall, json.loads(proc.stdout)


def describe(point):
    final = point.get("final") or {}
    acc = final.get("train_acc")
    loss = final.get("train_loss")
    parts = [f"{point.get('label') or point['overrides']}", point["status"]]
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if acc is not None:
        parts.append(f"train acc {acc:.3f}")
    return "  ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", choices=sorted(REFERENCE_S))
    args = ap.parse_args()
    if not os.environ.get("INITLAB_DATA_DIR"):
        print("note: INITLAB_DATA_DIR is not set; MNIST is looked for in ~/.cache/initlab/mnist", file=sys.stderr)
    names = [args.only] if args.only else list(REFERENCE_S)
    with tempfile.TemporaryDirectory() as out:
        # warm the decoded-MNIST cache so that every experiment starts equal
        subprocess.run([sys.executable, "-c", "from initlab.data.mnist import load_mnist; load_mnist()"], check=True)
        rows = []
        for name in names:
            wall, result = run_sweep(name, args.workers, out)
            rows.append((name, wall))
            print(f"\n{name}: {wall:.1f} s with {args.workers} workers "
                  f"(textbook ≈ {REFERENCE_S[name]:.0f} s → {REFERENCE_S[name] / wall:.1f}× faster; goal ≥ 5×)")
            for point in result["points"]:
                print("   " + describe(point))
    print("\nsummary")
    for name, wall in rows:
        print(f"  {name:24s} {wall:7.1f} s   {REFERENCE_S[name] / wall:5.1f}×")


if __name__ == "__main__":
    main()
