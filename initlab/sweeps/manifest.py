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
from initlab.output.files import is_inside
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
        "schema_version": initlab.SCHEMA_VERSION,
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


JOURNAL = "manifest.jsonl"
MANIFEST_EVERY_S = 0.25  # manifest.json is rewritten at most this often (and always at the end)
WRITE_SHARE = 20  # ... and at most once per this many times its own last write took (≤ 5% of the time)
_JOURNAL_KEYS = ("status", "started", "finished", "error", "exit_reason", "duration_s", "worker")


class ManifestWriter:
    """Records point updates at a cost that does not grow with the sweep.

    ``manifest.json`` is a whole-file atomic snapshot, so rewriting it after every point made a
    sweep quadratic. Instead each finished point is appended as one line to ``manifest.jsonl``
    (constant cost, flushed at once, so a kill -9 loses no outcome), and the snapshot is rewritten
    at most every ``MANIFEST_EVERY_S`` s and at most once per ``WRITE_SHARE`` times its own cost,
    which bounds its share of the sweep's time. Each snapshot empties the journal; a resume applies
    whatever the journal still holds (:func:`apply_journal`). The journal is append-only and each
    line is a complete JSON object: a line cut by a crash is skipped.
    """

    def __init__(self, sweep_dir: Path, manifest: dict):
        self.sweep_dir, self.manifest = Path(sweep_dir), manifest
        self.last_write = float("-inf")
        self.cost = 0.0
        self.journal = None
        self.dirty = False

    def save(self, force: bool = False) -> None:
        """The manifest changed: write it now if forced or due, else at a later :meth:`flush`."""
        self.dirty = True
        self.flush(force)

    def flush(self, force: bool = False) -> None:
        """Write the pending changes if it is time to (the sweep's loop calls this between polls)."""
        import time

        now = time.monotonic()
        if force or (self.dirty and now - self.last_write >= max(MANIFEST_EVERY_S, WRITE_SHARE * self.cost)):
            t0 = time.perf_counter()
            write_manifest(self.sweep_dir, self.manifest)
            self.cost = time.perf_counter() - t0
            self.last_write = time.monotonic()
            self.dirty = False
            if self.journal is not None:  # everything in it is in the snapshot now
                self.journal.truncate(0)
                self.journal.flush()

    def record(self, index: int) -> None:
        """Append point ``index``'s current state to the journal, then save if it is time to."""
        import json

        entry = {k: self.manifest["points"][index].get(k) for k in _JOURNAL_KEYS}
        line = json.dumps({"index": index, **entry}, allow_nan=False, default=str)
        if self.journal is None:
            self.journal = open(self.sweep_dir / JOURNAL, "a", encoding="utf-8")
        self.journal.write(line + "\n")
        self.journal.flush()
        self.save()

    def close(self) -> None:
        """After a final ``save(force=True)``: the journal is empty, and removed."""
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        path = self.sweep_dir / JOURNAL
        try:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


def apply_journal(sweep_dir: Path, manifest: dict) -> None:
    """Bring ``manifest`` up to date with the journal lines written after its last snapshot."""
    import json

    path = Path(sweep_dir) / JOURNAL
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    except OSError:
        return  # the journal only adds detail: without it, reconcile still trusts each point's files
    points = manifest["points"]
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(points):
            continue
        if entry.get("status") in STATUSES and isinstance(points[index], dict):
            points[index].update({k: entry.get(k) for k in _JOURNAL_KEYS})


def _entry(p) -> dict:
    return {
        "index": p.index, "overrides": p.overrides, "label": p.label, "seed": p.config.seed,
        "status": "pending", "run_dir": p.run_dir, "started": None, "finished": None,
        "error": None, "exit_reason": None, "duration_s": None, "worker": None,
        "config_hash": p.config.hash,
    }


def _remove(path: Path) -> None:
    """Remove a point's folder, or a link or file in its place (never what a link points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _finished_metrics(run_dir: Path, config_hash: str):
    """The metrics of a finished point of this config, or None: wrong config, wrong shape, unreadable."""
    metrics = read_metrics(run_dir)
    if metrics is None or metrics.get("status") not in DONE or metrics.get("config_hash") != config_hash:
        return None
    layers = metrics.get("layers") or []
    ok = (isinstance(metrics.get("final") or {}, dict) and isinstance(layers, list)
          and all(isinstance(x, dict) for x in layers) and isinstance(metrics.get("timing") or {}, dict)
          and isinstance(metrics.get("steps_done", 0), int) and not isinstance(metrics.get("steps_done", 0), bool))
    return metrics if ok else None


def reconcile(sweep_dir: Path, manifest: dict, plan: Plan) -> list[int]:
    """Trust the disk, not the manifest: a point is done iff its metrics.json says completed/diverged
    (for its config); the rest re-run.

    The sweep folder is untrusted (it may have been edited by hand): manifest entries are matched to
    the plan's points by index and config hash, and a missing, extra or malformed entry is rebuilt
    from the plan. Run folders are always the plan's (never a path read from the manifest); one that
    is a symlink or leaves the sweep folder is never read, only unlinked and re-run.
    """
    sweep_dir = Path(sweep_dir)
    runs = sweep_dir / "runs"
    if runs.is_symlink() or (runs.exists() and not runs.is_dir()):
        raise RuntimeStateError(f"{runs}: expected the sweep's folder of runs, found a "
                                f"{'symlink' if runs.is_symlink() else 'file'}; move it away and resume again")
    runs.mkdir(exist_ok=True)
    apply_journal(sweep_dir, manifest)
    old = manifest.get("points") if isinstance(manifest.get("points"), list) else []
    by_index = {}
    for mp in old:
        if isinstance(mp, dict) and isinstance(mp.get("index"), int) and not isinstance(mp.get("index"), bool):
            by_index.setdefault(mp["index"], mp)
    points = []
    for p in plan.points:
        mp = by_index.get(p.index)
        fresh = _entry(p)
        if not (isinstance(mp, dict) and mp.get("config_hash") == p.config.hash and mp.get("status") in STATUSES):
            mp = fresh
        else:  # keep its history (times, worker, errors), but not its paths or labels
            mp = {**fresh, **{k: mp.get(k) for k in _JOURNAL_KEYS}}
        points.append(mp)
    manifest["points"] = points
    todo = []
    for mp, p in zip(points, plan.points):
        run_dir = sweep_dir / p.run_dir
        safe = not run_dir.is_symlink() and is_inside(run_dir, sweep_dir)
        metrics = _finished_metrics(run_dir, p.config.hash) if safe else None
        if metrics is not None:
            if mp.get("status") != metrics["status"]:
                mp.update(status=metrics["status"], error=None,
                          exit_reason=f"{metrics['status']} (recovered from its metrics.json on resume)",
                          finished=mp.get("finished") or now_iso(),
                          duration_s=mp.get("duration_s") or (metrics.get("timing") or {}).get("total_s"))
            continue
        if run_dir.exists() or run_dir.is_symlink():
            _remove(run_dir)  # a partial, failed or interrupted attempt (or a stray link): start it afresh
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
