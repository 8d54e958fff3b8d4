"""Export benchmark: a 32-point sweep into a local MLflow store, and what ``--tensorboard`` adds to a run.

1. MLflow (goal < 20 s): ``initlab export mlflow SWEEP --tracking-uri URI`` as a user types it (a
   fresh process: Python, NumPy and MLflow start-up included) for the 32-point sweep of
   ``configs/mnist_batchnorm_grid.yaml`` (16 weight stds × BatchNorm off/on, 200 steps; the same
   grid on teacher-labelled data when MNIST is not under INITLAB_DATA_DIR). Three cases per round:
   a new SQLite store (MLflow 3's default kind; MLflow creating its tables is part of the cost),
   the same store again (every point skipped), and a new file store. Medians over the rounds.
2. TensorBoard (goal ≤ 5 %): ``initlab run configs/mnist_weight_init.yaml --set record.every=100``
   (2,000 MNIST steps, a snapshot every 100) with and without ``--tensorboard``, interleaved, so
   that a burst of load elsewhere on the machine hits both alike; medians. Needs MNIST.

    python benchmarks/bench_export.py [--rounds R] [--skip-tensorboard]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def has_mnist() -> bool:
    root = os.environ.get("INITLAB_DATA_DIR")
    return bool(root) and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def initlab(*args, env=None, cwd=None) -> tuple[float, float]:
    """Run the command line in a fresh process: its wall time and its CPU time (user + system) in
    seconds. On a shared machine the CPU time is the steadier of the two: a process that waits for
    a core keeps its wall clock running but not its CPU clock. A failure stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "initlab", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"Error: initlab {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_sweep(out: Path) -> Path:
    grid = ROOT / "configs" / "mnist_batchnorm_grid.yaml"
    extra = [] if has_mnist() else ["--set", "data.kind=teacher", "--set", "data.features=784"]
    initlab("sweep", grid, "--out", out, "--quiet", *extra)
    [sweep] = (out / "mnist_batchnorm_grid").glob("sweep-*")
    return sweep


def bench_mlflow(rounds: int, work: Path) -> dict:
    sweep = make_sweep(work / "outputs")
    print(f"sweep: {sweep} ({len(list((sweep / 'runs').iterdir()))} points, "
          f"{'MNIST' if has_mnist() else 'teacher data'})")
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}  # MLflow 3 keeps file stores behind this switch
    times = {"sqlite, new store": [], "sqlite, again (skipped)": [], "file store, new": []}
    for r in range(rounds):
        store = work / f"store-{r}"
        store.mkdir()
        sqlite = f"sqlite:///{store / 'mlflow.db'}"
        times["sqlite, new store"].append(
            initlab("export", "mlflow", sweep, "--tracking-uri", sqlite, env=env, cwd=store))
        times["sqlite, again (skipped)"].append(
            initlab("export", "mlflow", sweep, "--tracking-uri", sqlite, env=env, cwd=store))
        times["file store, new"].append(
            initlab("export", "mlflow", sweep, "--tracking-uri", (store / "mlruns").as_uri(), env=env, cwd=store))
    return times


# What --tensorboard adds inside the run's process (NumPy and initlab already loaded there): importing
# TensorBoard's protos and writing the file. Timed on its own, because it is smaller than the
# run-to-run noise of a shared machine.
FLAG_WORK = """
import sys, time, numpy, initlab.output.files, initlab.recorder, initlab.yamlio
from initlab.cli.export import export_tensorboard
t = time.process_time()
export_tensorboard([sys.argv[1]])
print(time.process_time() - t)
"""


def bench_tensorboard(rounds: int, work: Path) -> dict:
    config = ROOT / "configs" / "mnist_weight_init.yaml"
    times = {"run": [], "run --tensorboard": []}
    added = []
    for r in range(rounds):
        for label, flag in (("run", []), ("run --tensorboard", ["--tensorboard"])):
            out = work / f"tb-{r}-{len(flag)}"
            times[label].append(initlab("run", config, "--set", "record.every=100", "--out", out, "--quiet", *flag))
            if not flag:
                [run_dir] = (out / "mnist_weight_init").glob("20*")
                added.append(float(subprocess.run([sys.executable, "-c", FLAG_WORK, str(run_dir)], check=True,
                                                  capture_output=True, text=True).stdout))
            shutil.rmtree(out)
    times["added"] = added
    return times


def report(times: dict) -> None:
    for label, ts in times.items():
        walls, cpus = [w for w, _ in ts], [c for _, c in ts]
        print(f"  {label:26s} wall median {statistics.median(walls):6.2f} s ({', '.join(f'{t:.1f}' for t in walls)});"
              f"  CPU median {statistics.median(cpus):6.2f} s ({', '.join(f'{t:.1f}' for t in cpus)})")


def medians(ts) -> tuple[float, float]:
    return statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-tensorboard", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        print("MLflow: export a 32-point sweep (goal < 20 s)")
        times = bench_mlflow(args.rounds, work)
        report(times)
        for label in times:
            wall, cpu = medians(times[label])
            print(f"  -> {label}: wall {wall:.1f} s, CPU {cpu:.1f} s (goal < 20 s)")
        if args.skip_tensorboard:
            pass
        elif not has_mnist():
            print("TensorBoard: skipped (MNIST not found under INITLAB_DATA_DIR/mnist)")
        else:
            print("TensorBoard: 2,000-step MNIST run, a snapshot every 100 steps (goal ≤ 5 %)")
            tb = bench_tensorboard(args.rounds, work)
            added = tb.pop("added")
            report(tb)
            for i, kind in enumerate(("wall", "CPU")):
                base, flagged = medians(tb["run"])[i], medians(tb["run --tensorboard"])[i]
                print(f"  -> --tensorboard adds {flagged - base:+.2f} s {kind} = {100 * (flagged / base - 1):+.1f} %"
                      " (run-to-run noise included)")
            cost, base = statistics.median(added), medians(tb["run"])[1]
            print(f"  -> the export step alone: CPU median {cost:.2f} s ({', '.join(f'{a:.2f}' for a in added)})"
                  f" = {100 * cost / base:.1f} % of the run's CPU time")
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
