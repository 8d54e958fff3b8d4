"""One point of a sweep, run where a worker runs it (a local worker process or a Dask worker), and
the outcome a point's own files record when its worker could not report it."""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from initlab.errors import describe
from initlab.output.readers import read_metrics


def run_point(task: dict, spare_cores=0) -> dict:
    """Run one point and write its run directory (``metrics.json`` last). Picklable: Dask workers call it too.

    ``spare_cores``: a function saying how many cores are idle (local workers: a sweep with fewer
    points left than workers), for evaluating in a helper thread; 0 (Dask): never.
    """
    t0 = time.perf_counter()
    index = task["index"]
    outcome = {"index": index, "status": "failed", "error": None, "exit_reason": None, "steps_done": 0,
               "worker": f"{hostname()} pid {os.getpid()}"}
    try:
        from initlab.config import validate
        from initlab.experiment import run

        cfg = validate(task["config"])
        figures = bool(task.get("figures"))
        limit = nullcontext()
        if task.get("limit_threads"):
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(1)
        with limit:  # every core runs a point: no helper process for the snapshots
            result = run(cfg, run_dir=task["run_dir"], figures=figures, record_helper=False,
                         spare_cores=spare_cores)
        steps = result.metrics.get("steps_done", 0)
        outcome.update(status=result.status, error=result.error, steps_done=steps)
        if result.status == "diverged":
            outcome["exit_reason"] = f"the loss became non-finite at step {steps + 1}"
        elif result.status == "interrupted":
            outcome["exit_reason"] = f"interrupted after {steps} steps (partial results saved)"
        elif result.status == "failed":
            outcome["exit_reason"] = result.error
    except Exception as e:
        outcome["error"] = outcome["exit_reason"] = describe(e)
    outcome["duration_s"] = time.perf_counter() - t0
    return outcome


def hostname() -> str:
    import socket

    return socket.gethostname()


def saved_outcome(index: int, run_dir) -> Optional[dict]:
    """The outcome a point's own ``metrics.json`` records, or None when it has none (or an unreadable one)."""
    if not run_dir:
        return None
    try:
        metrics = read_metrics(Path(run_dir))
    except Exception:  # a half-written or damaged file is no evidence: the caller decides
        return None
    if not isinstance(metrics, dict) or metrics.get("status") not in ("completed", "diverged", "failed", "interrupted"):
        return None
    status = metrics["status"]
    steps = metrics.get("steps_done", 0)
    if status == "interrupted":
        why = f"interrupted after {steps} steps (partial results saved)"
    elif status == "failed":
        why = metrics.get("error")
    else:
        why = f"{status} (read from its metrics.json: its worker ended before reporting it)"
    return {"index": index, "status": status, "error": metrics.get("error") if status == "failed" else None,
            "exit_reason": why, "steps_done": steps}

