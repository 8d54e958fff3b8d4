"""``manifest.json``: the state of every point of a sweep, and the lock on its directory.

The sweep's parent process is its only writer. On resume the disk is trusted over the manifest:
a point is done iff its own ``metrics.json`` says so.
"""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from initlab.errors import RuntimeStateError
from initlab.output.readers import read_metrics

if TYPE_CHECKING:
    from initlab.sweeps.plan import Plan

DONE = ("completed", "diverged")
STATUSES = ("pending", "running", "completed", "diverged", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def new_manifest(plan: Plan) -> dict:
    import initlab

    return {
        "config_hash": plan.hash,
        "created": now_iso(),
        "name": plan.name,
        "initlab_version": initlab.__version__,
        "state": "pending",
        "axes": [{"key": a.key, "values": a.values} for a in plan.axes],
        "invocations": [],
        "points": [
            {
                "index": p.index, "overrides": p.overrides, "label": p.label, "seed": p.config.seed,
                "status": "pending", "run_dir": p.run_dir, "started": None, "finished": None,
                "error": None, "exit_reason": None, "duration_s": None, "worker": None,
                "config_hash": p.config.hash,
            }
            for p in plan.points
        ],
    }


def write_manifest(sweep_dir: Path, manifest: dict) -> None:
    from initlab.output.files import write_json

    manifest["updated"] = now_iso()
    write_json(Path(sweep_dir) / "manifest.json", manifest)


def reconcile(sweep_dir: Path, manifest: dict, plan: Plan) -> list[int]:
    """Trust the disk: a point is done iff its metrics.json says completed/diverged (for its config); the rest re-run."""
    todo = []
    for mp, p in zip(manifest["points"], plan.points):
        run_dir = sweep_dir / p.run_dir
        metrics = read_metrics(run_dir)
        ok = metrics is not None and metrics.get("status") in DONE and metrics.get("config_hash") == p.config.hash
        if ok:
            if mp.get("status") != metrics["status"]:
                mp.update(status=metrics["status"], error=None,
                          exit_reason=f"{metrics['status']} (recovered from its metrics.json on resume)",
                          finished=mp.get("finished") or now_iso(),
                          duration_s=mp.get("duration_s") or (metrics.get("timing") or {}).get("total_s"))
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a partial, failed or interrupted attempt: start it afresh
        mp.update(status="pending", started=None, finished=None, error=None, exit_reason=None,
                  duration_s=None, worker=None)
        todo.append(p.index)
    return todo


class SweepLock:
    """An exclusive lock on the sweep directory for the lifetime of the sweep (released by the kernel on kill -9)."""

    def __init__(self, sweep_dir: Path):
        self.f = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        self.f = open(sweep_dir / ".lock", "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.f.close()
            self.f = None
            raise RuntimeStateError(f"{sweep_dir}: another initlab sweep is running in this directory") from e

    def release(self):
        if self.f is not None:
            self.f.close()
            self.f = None


def count_statuses(manifest: dict) -> dict:
    """How many points are in each status."""
    counts = dict.fromkeys(STATUSES, 0)
    for mp in manifest["points"]:
        counts[mp["status"]] = counts.get(mp["status"], 0) + 1
    return counts
