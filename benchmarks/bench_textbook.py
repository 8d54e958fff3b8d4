"""The textbook's three MNIST experiments, end to end, against the reference code's times.

    INITLAB_DATA_DIR=/path/to/data python benchmarks/bench_textbook.py [--workers 2] [--only NAME] [--repeat N]

Runs `initlab sweep configs/<name>.yaml` for each experiment in a fresh process (data loading,
every point, figures and summary included), prints the wall time, the speed-up over the
textbook's own code on a 2-core machine (about 195 s, 250 s and 215 s; goal ≥ 40×) and the
results that must come out (final minibatch loss or training accuracy per point). With
``--repeat N`` the sweeps run N times, interleaved, and the summary gives each one's median.

Then where the time goes, so that the next bottleneck is visible: the sweep's wall time split
into start-up (a fresh `initlab` process importing the CLI, measured separately), and per point
(from each run's `metrics.json` timing and the sweep's `duration_s`, summed over points, i.e.
core-seconds): data and model (`build_s`), training (`train_s`), evaluation (`eval_s`; and `eval_helper_s`, done beside training),
recording (`record_s` minus evaluation and analysis), analysis (`analysis_s`: mean-field
prediction and Jacobian at init), and files and figures (the point's duration minus its run).
With W workers, a perfectly packed sweep takes about start-up + (sum over points) / W. A sweep of
fewer than 2W points runs them all at once (initlab/sweeps/local.py): its points' phases are then
wall seconds of processes that share the cores, more than the core-seconds they used.
"""
import argparse
import json
import os
import statistics
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


PHASES = ("data+model", "training", "evaluation", "evaluation (helper thread)", "recording", "analysis", "files+figures")
GOAL_X = 40  # issue 15: each sweep at least 40x faster than the book's code


def startup_s(repeat=3):
    """Wall time of a fresh process that imports the CLI (what every sweep pays once, plus workers)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import initlab.cli"], check=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def phases(result):
    """Core-seconds per phase, summed over the sweep's points (see the module docstring)."""
    out = dict.fromkeys(PHASES, 0.0)
    for point in result["points"]:
        if not point.get("run_dir"):
            continue
        t = json.loads((Path(point["run_dir"]) / "metrics.json").read_text()).get("timing") or {}
        ev, an = t.get("eval_s", 0.0), t.get("analysis_s", 0.0)
        out["data+model"] += t.get("build_s", 0.0)
        out["training"] += t.get("train_s", 0.0)
        out["evaluation"] += ev
        out["evaluation (helper thread)"] += t.get("eval_helper_s", 0.0)  # beside training, on a spare core
        out["recording"] += t.get("record_s", 0.0) - ev - an
        out["analysis"] += an
        duration = point.get("duration_s")
        if duration is not None:
            out["files+figures"] += max(duration - t.get("total_s", 0.0), 0.0)
    return out


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
    ap.add_argument("--repeat", type=int, default=1, help="runs of each sweep, interleaved; the median is reported")
    args = ap.parse_args()
    if not os.environ.get("INITLAB_DATA_DIR"):
        print("note: INITLAB_DATA_DIR is not set; MNIST is looked for in ~/.cache/initlab/mnist", file=sys.stderr)
    names = [args.only] if args.only else list(REFERENCE_S)
    with tempfile.TemporaryDirectory() as out:
        # warm the decoded-MNIST cache so that every experiment starts equal
        subprocess.run([sys.executable, "-c", "from initlab.data.mnist import load_mnist; load_mnist()"], check=True)
        walls = {name: [] for name in names}
        startup = startup_s()
        loads = []
        for r in range(max(1, args.repeat)):
            for name in names:
                wall, result = run_sweep(name, args.workers, out)
                walls[name].append(wall)
                loads.append(os.getloadavg()[0])
                if r:
                    continue
                print(f"\n{name}: {wall:.1f} s with {args.workers} workers "
                      f"(textbook ≈ {REFERENCE_S[name]:.0f} s → {REFERENCE_S[name] / wall:.1f}× faster)")
                _details(result, startup, args.workers)
    print(f"\nsummary (median of {max(1, args.repeat)} interleaved runs; load average {min(loads):.2f}–{max(loads):.2f}; "
          f"goal ≥ {GOAL_X}× the book's code)")
    for name, ws in walls.items():
        wall = statistics.median(ws)
        goal = REFERENCE_S[name] / GOAL_X
        print(f"  {name:24s} {wall:7.2f} s  (runs {', '.join(f'{w:.2f}' for w in ws)})  {REFERENCE_S[name] / wall:5.1f}×  "
              f"goal ≤ {goal:.1f} s: {'met' if wall <= goal else 'NOT met'}")


def _details(result, startup, workers):
    """The first run's results per point and its phase split."""
    for point in result["points"]:
        print("   " + describe(point))
    split = phases(result)
    shared = workers < len(result["points"]) < 2 * workers
    unit = "wall-s of processes sharing the cores" if shared else "core-s"
    print(f"   start-up {startup:.2f} s; per point, summed ({unit}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
          + f"; points {len(result['points'])}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
