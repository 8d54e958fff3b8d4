"""What recording histograms during training costs, next to the training itself.

    INITLAB_DATA_DIR=/path/to/data python benchmarks/bench_recording.py [--repeat 5] [--steps 3000]

The 784-100×5-10 ReLU MLP (He init, SGD, batch 100, float32) on MNIST (a 784-feature teacher
problem when MNIST is not there), trained with no snapshots during training, a snapshot every
100 steps and every 10 steps (and with ``--full-grad`` also every 100 steps with
``record.grad_samples: null``, the gradient norms on the whole probe as before 0.2). Runs are
interleaved in one process, so that drift on a shared machine hits every schedule alike, and
evaluated once at the end only. Each schedule runs as a run on its own decides (with two or more
cores, a helper process takes the snapshots: initlab.recorder_process) and, for comparison, with
every snapshot taken in the run's own process.

Printed per schedule: the median training time (``timing.train_s``), the median time the
snapshots during training add (``timing.record_s`` minus that of the run without them, which
holds the init and final snapshots and the one evaluation), that as a fraction of training
(goals: ≤ 5% every 100 steps, ≤ 30% every 10), the time per snapshot in training steps, the
whole run's extra wall time as a fraction of training (the honest total: it includes training
slowed by a busy second core), and the machine's load average, without which none of these
numbers mean much.
"""
import argparse
import os
import statistics

import numpy as np


def config(every, steps, grad_samples, mnist):
    data = {"kind": "mnist", "samples": 60000} if mnist else {"kind": "teacher", "samples": 10000, "features": 784}
    record = {"every": every, "samples": 1000}
    if grad_samples != "default":
        record["grad_samples"] = grad_samples
    return {
        "name": "bench-recording", "data": data,
        "model": {"depth": 5, "width": 100, "activation": "relu", "dtype": "float32"},
        "init": {"scheme": "he_normal"}, "optimizer": {"name": "sgd", "lr": 0.01},
        "train": {"steps": steps, "batch_size": 100, "eval_every": steps}, "record": record,
    }


def one_run(cfg, helper):
    import initlab

    result = initlab.run(cfg, record_helper=helper)
    assert result.status == "completed", result.error
    t = result.metrics["timing"]
    return {"train": t["train_s"], "record": t["record_s"], "total": t["total_s"], "snapshots": len(result.snapshots),
            "loss": result.history["train_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--full-grad", action="store_true", help="also time record.grad_samples: null every 100 steps")
    args = ap.parse_args()
    from initlab.data.mnist import load_mnist

    try:
        load_mnist()
        mnist = True
    except Exception:  # not downloaded here: the teacher problem has the same shapes
        mnist = False
    # (every, grad_samples, helper process): None lets the run decide (a helper process on 2+ cores)
    schedules = {"none": (None, "default", None), "every 100": (100, "default", None),
                 "every 10": (10, "default", None), "every 100, in-process": (100, "default", False),
                 "every 10, in-process": (10, "default", False)}
    if args.full_grad:
        schedules["every 100, grad_samples null"] = (100, None, False)
    rows = {name: [] for name in schedules}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeat):
        for name, (every, grad, helper) in schedules.items():
            rows[name].append(one_run(config(every, args.steps, grad, mnist), helper))
            loads.append(os.getloadavg()[0])
    base = rows["none"]
    for name, runs in rows.items():  # recording never changes training, also here
        for a, b in zip(base, runs):
            np.testing.assert_array_equal(a["loss"], b["loss"])
    data = "MNIST" if mnist else "teacher data (MNIST not found)"
    print(f"784-100x5-10 ReLU, batch 100, float32, {args.steps} steps on {data}; "
          f"{args.repeat} interleaved repeats; load average {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} cores")
    base_record = statistics.median(r["record"] for r in base)
    train_base = statistics.median(r["train"] for r in base)
    step_s = train_base / args.steps
    print(f"{'schedule':28s} {'train s':>8s} {'extra s':>8s} {'extra':>7s} {'per snapshot':>14s} {'total s':>8s} "
          f"{'wall extra':>10s}")
    for name, runs in rows.items():
        train = statistics.median(r["train"] for r in runs)
        total = statistics.median(r["total"] for r in runs)
        # per repeat: this schedule's recording time minus that of the run without snapshots next to it
        extra = statistics.median(r["record"] - b["record"] for r, b in zip(runs, base))
        ratio = statistics.median((r["record"] - b["record"]) / b["train"] for r, b in zip(runs, base))
        # and what the user waits for: the whole run's wall time against that run's training time (a
        # helper process also slows training a little, sharing the memory bus)
        wall = statistics.median((r["total"] - b["total"]) / b["train"] for r, b in zip(runs, base))
        n_extra = runs[0]["snapshots"] - base[0]["snapshots"]
        per = f"{extra / n_extra / step_s:5.1f} steps" if n_extra else "-"
        print(f"{name:28s} {train:8.2f} {extra:8.2f} {100 * ratio:6.1f}% {per:>14s} {total:8.2f} {100 * wall:9.1f}%")
    print(f"(one training step ≈ {1e3 * step_s:.2f} ms; the run without snapshots spends {base_record:.2f} s "
          f"on init and final snapshots, analysis and one evaluation)")


if __name__ == "__main__":
    main()
