"""How long `initlab runs` takes to list a big output root.

    python benchmarks/bench_runs.py [--runs 1000] [--repeat 7]

Builds a synthetic root of N run directories (each with the config.yaml, metrics.json and
provenance.json of one real 5×100 run with training, so the JSON files have their real size,
about 8 KB of metrics), a few sweeps, failed and half-written runs, then times the listing
library call (scan + filter + sort) and the full command in a fresh process. Prints medians;
goal: 1,000 runs well under a second.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, n: int) -> None:
    import initlab

    real = Path(initlab.run({"data": {"kind": "teacher", "samples": 500}, "train": {"steps": 20, "eval_every": 10}},
                            out=root / "_seed").run_dir)
    files = {name: (real / name).read_bytes() for name in ("config.yaml", "metrics.json", "provenance.json")}
    for i in range(n):
        d = root / f"net{i % 20}" / f"2026-01-{1 + i // 1000:02d}_{(i // 60) % 24:02d}-{i % 60:02d}-00-{i}"
        d.mkdir(parents=True)
        for name, data in files.items():
            if i % 50 == 7 and name == "metrics.json":
                continue  # half-written
            (d / name).write_bytes(data)
    shutil.rmtree(root / "_seed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from initlab.listing import scan, select

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "outputs"
        build(root, args.runs)
        lib, cli = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            entries, _ = scan(root)
            select(entries, status="completed", sort="train_loss", limit=20)
            lib.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "initlab", "runs", str(root), "--json"], check=True,
                           stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t)
        print(f"{len(entries)} runs listed")
        print(f"scan+select (library): median {statistics.median(lib) * 1000:.0f} ms over {args.repeat}")
        print(f"initlab runs --json (fresh process): median {statistics.median(cli) * 1000:.0f} ms over {args.repeat}")


if __name__ == "__main__":
    main()
