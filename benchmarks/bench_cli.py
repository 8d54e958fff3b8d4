"""Start-up time of the CLI and the cost of recording histograms during training.

    python benchmarks/bench_cli.py [--repeat 5] [--steps 2000]

Prints the median wall time of `initlab --help` and `initlab list` (fresh processes; goal
≤ 0.3 s) and the time that `record.every: 100` adds to training, measured inside each run
(`timing.train_s`, `timing.record_s`) over interleaved pairs (goal: ≤ 10%).
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


def one_run(every, steps):
    import initlab

    cfg = {
        "data": {"kind": "teacher", "samples": 10000, "features": 784},
        "model": {"depth": 5, "width": 100, "activation": "relu"},
        "init": {"scheme": "he_normal"},
        "train": {"steps": steps, "batch_size": 100, "eval_every": steps},
        "record": {"every": every},
    }
    result = initlab.run(cfg)
    assert result.status == "completed"
    t = result.metrics["timing"]
    return t["train_s"], t["record_s"], len(result.snapshots)


def recording_overhead(steps, repeat):
    """Interleaved pairs (without, with), so that drift on a shared machine hits both alike."""
    rows = []
    for _ in range(repeat):
        rows.append((one_run(None, steps), one_run(100, steps)))
    train = statistics.median(w[0] for _, w in rows)
    extra = statistics.median(w[1] - b[1] for b, w in rows)  # recording time the schedule adds
    return train, extra, rows[0][0][2], rows[0][1][2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "initlab"]
    print(f"{'command':32s} {'median s':>9s}  goal")
    for cmd in (["--help"], ["list"]):
        print(f"{'initlab ' + ' '.join(cmd):32s} {wall(exe + cmd, args.repeat):9.3f}  <= 0.3")
    train, extra, n0, n1 = recording_overhead(args.steps, args.repeat)
    print(f"\ntraining 784-100x5-10 ReLU, batch 100, {args.steps} steps, {args.repeat} interleaved pairs (medians):")
    print(f"  training time (forward, backward, update):        {train:7.3f} s")
    print(f"  recording added by record.every=100 ({n1 - n0} more snapshots): {extra:7.3f} s")
    print(f"  overhead: {100 * extra / train:+.1f}% of training time  (goal <= +10%)")


if __name__ == "__main__":
    main()
