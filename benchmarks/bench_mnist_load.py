"""Time `load_mnist()`: cold (empty cache), warm (cache hit, new process) and memoized.

Usage: INITLAB_DATA_DIR=/path/with/mnist python benchmarks/bench_mnist_load.py [--repeat N]
Each load runs in a fresh Python process against a temporary cache folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import time
from initlab.data.mnist import load_mnist
t = time.perf_counter(); load_mnist(); first = time.perf_counter() - t
t = time.perf_counter(); load_mnist(); again = time.perf_counter() - t
print(first, again)
"""


def timed_load(env: dict) -> tuple[float, float]:
    """(first load, memoized second load) in seconds, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                         capture_output=True, text=True).stdout
    first, again = map(float, out.split())
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cold, warm, memo = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, INITLAB_CACHE_DIR=cache)
            cold.append(timed_load(env)[0])
            first, again = timed_load(env)
            warm.append(first)
            memo.append(again)
    for label, times in (("cold (hash + gunzip + write cache)", cold),
                         ("warm (cache hit, new process)", warm),
                         ("memoized (same process)", memo)):
        print(f"{label:36s} median {statistics.median(times) * 1000:8.1f} ms  "
              f"min {min(times) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
