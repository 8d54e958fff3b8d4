"""Start-up time of the CLI and the cost of recording histograms during training.

    python benchmarks/bench_cli.py [--repeat 5] [--steps 2000]

Prints the median wall time of `initlab --help` and `initlab list` (fresh processes; goal
≤ 0.3 s) and the training time with and without `record.every: 100` (goal: ≤ 10% more).
"""
import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd, repeat):
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def run_time(every, steps, repeat):
    import initlab

    cfg = {
        "data": {"kind": "teacher", "samples": 10000, "features": 784},
        "model": {"depth": 5, "width": 100, "activation": "relu"},
        "init": {"scheme": "he_normal"},
        "train": {"steps": steps, "batch_size": 100, "eval_every": steps},
        "record": {"every": every},
    }
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = initlab.run(cfg)
        times.append(time.perf_counter() - t)
        assert result.status == "completed"
    return statistics.median(times), len(result.snapshots)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "initlab"]
    print(f"{'command':32s} {'median s':>9s}  goal")
    for cmd in (["--help"], ["list"]):
        print(f"{'initlab ' + ' '.join(cmd):32s} {wall(exe + cmd, args.repeat):9.3f}  <= 0.3")
    base, n0 = run_time(None, args.steps, args.repeat)
    rec, n1 = run_time(100, args.steps, args.repeat)
    print(f"\ntraining 784-100x5-10 ReLU, batch 100, {args.steps} steps (median of {args.repeat}):")
    print(f"  record at init and end only ({n0} snapshots): {base:7.3f} s")
    print(f"  record every 100 steps     ({n1} snapshots): {rec:7.3f} s")
    print(f"  overhead: {100 * (rec / base - 1):+.1f}%  (goal <= +10%)")


if __name__ == "__main__":
    main()
