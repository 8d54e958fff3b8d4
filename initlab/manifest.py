"""``manifest.json``: the state of every point of a sweep, and the lock on its directory.

The sweep's parent process is its only writer. On resume the disk is trusted over the manifest:
a point is done iff its own ``metrics.json`` says so.
"""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from initlab.errors import ConfigError

if TYPE_CHECKING:
    from initlab.grid import Plan

DONE = ("completed", "diverged")
STATUSES = ("pending", "running", "completed", "diverged", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_manifest(sweep_dir) -> dict:
    """``manifest.json`` of a sweep directory, or a :class:`ConfigError` saying it is not one."""
    from initlab.output import read_json

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such sweep directory")
    path = sweep_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no manifest.json)")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list) or "config_hash" not in manifest:
        raise ConfigError(f"{path}: not an initlab sweep manifest")
    return manifest


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
    from initlab.output import write_json

    manifest["updated"] = now_iso()
    write_json(Path(sweep_dir) / "manifest.json", manifest)


def read_metrics(run_dir: Path) -> Optional[dict]:
    from initlab.output import read_json

    try:
        m = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


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
        except OSError:
            self.f.close()
            self.f = None
            raise ConfigError(f"{sweep_dir}: another initlab sweep is running in this directory") from None

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
