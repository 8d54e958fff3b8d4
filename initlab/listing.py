"""The runs and sweeps under an output root, listed (``initlab runs``).

:func:`scan` reads only the small JSON files of each directory (``metrics.json``,
``provenance.json``, ``manifest.json``), so a thousand runs list in a fraction of a second. An
entry that cannot be read is skipped with a note; a half-written run is listed as ``incomplete``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from initlab.errors import ConfigError
from initlab.output.files import LATEST
from initlab.output.readers import read_json_object, read_manifest, worst_status

COMPARE_MARK = "compare.json"  # what `initlab compare` writes into its own folder
STAMP = re.compile(r"^(?:sweep-)?(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})(?:-(\d+))?$")
FINAL_SHOWN = ("train_loss", "eval_loss", "eval_acc", "train_acc")


@dataclass
class Entry:
    """One row of ``initlab runs``: a run or a sweep directory."""

    name: str
    stamp: str
    kind: str  # "run" or "sweep"
    status: str
    steps: Optional[int]
    overrides: list
    final: dict
    path: Path
    latest: bool = False
    seq: int = 0  # the -N suffix of a folder made in the same second

    def to_dict(self) -> dict:
        return {"name": self.name, "stamp": self.stamp, "kind": self.kind, "status": self.status,
                "steps": self.steps, "overrides": self.overrides, "final": self.final,
                "path": str(self.path.resolve()), "latest": self.latest}

    @property
    def when(self) -> datetime:
        return datetime.strptime(self.stamp, "%Y-%m-%d_%H-%M-%S")


def _final(final) -> dict:
    final = final if isinstance(final, dict) else {}
    out = {}
    for k in FINAL_SHOWN:
        v = final.get(k)
        out[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    return out


def _run_entry(name: str, path: Path, stamp: str, seq: int) -> Entry:
    if not (path / "config.yaml").is_file():
        raise ValueError("not a run directory (no config.yaml)")
    metrics = read_json_object(path / "metrics.json")
    prov = None
    try:
        prov = read_json_object(path / "provenance.json")
    except ValueError:
        pass  # provenance is a nicety; the run itself is still listable
    overrides = [str(o) for o in (prov or {}).get("overrides") or []]
    if prov and prov.get("seed") is not None:
        overrides.append(f"seed={prov['seed']}")
    if metrics is None:  # half-written: killed before metrics.json, or still running
        return Entry(name, stamp, "run", "incomplete", None, overrides, _final(None), path, seq=seq)
    steps = metrics.get("steps_done")
    return Entry(name, stamp, "run", str(metrics.get("status") or "unknown"),
                 steps if isinstance(steps, int) else None, overrides, _final(metrics.get("final")), path, seq=seq)


def _sweep_entry(name: str, path: Path, stamp: str, seq: int) -> Entry:
    try:
        manifest = read_manifest(path)
    except ConfigError as e:
        if not (path / "manifest.json").exists() and (path / "sweep.yaml").exists():
            return Entry(name, stamp, "sweep", "incomplete", None, [], _final(None), path, seq=seq)
        raise ValueError(str(e)) from e
    statuses = [mp.get("status") for mp in manifest["points"] if isinstance(mp, dict)]
    status = worst_status(statuses) if statuses else "pending"
    overrides = []
    for axis in manifest.get("axes") or []:
        if isinstance(axis, dict):
            values = ",".join(_short(v) for v in axis.get("values") or [])
            overrides.append(f"{axis.get('key')}={values}")
    return Entry(name, stamp, "sweep", status, len(statuses), overrides, _final(None), path, seq=seq)


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def scan(root="outputs") -> tuple[list[Entry], list[dict]]:
    """Every run and sweep directory under ``root`` (``root/<name>/<stamp>/``), newest first, and
    the entries skipped (``{"path", "reason"}``). A missing root is a :class:`ConfigError`."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such output directory")
    entries, skipped = [], []
    try:
        names = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise ConfigError(f"{root}: {e.strerror or e}") from e
    for name_dir in names:
        try:
            children = sorted(name_dir.iterdir())
        except OSError as e:
            skipped.append({"path": str(name_dir.resolve()), "reason": e.strerror or str(e)})
            continue
        latest = None
        if (name_dir / LATEST).is_symlink():
            try:
                latest = (name_dir / LATEST).resolve(strict=True)
            except OSError:
                latest = None  # a dangling link (its target deleted): nothing is latest
        for path in children:
            m = STAMP.match(path.name)
            if m is None or path.is_symlink() or not path.is_dir() or (path / COMPARE_MARK).exists():
                continue  # latest, temporary names, files, other folders, `initlab compare` results: not runs
            kind = "sweep" if path.name.startswith("sweep-") else "run"
            try:
                make = _sweep_entry if kind == "sweep" else _run_entry
                entry = make(name_dir.name, path, m.group(1), int(m.group(2) or 0))
            except (OSError, ValueError) as e:
                skipped.append({"path": str(path.resolve()), "reason": str(e)})
                continue
            entry.latest = latest is not None and path.resolve() == latest
            entries.append(entry)
    entries.sort(key=lambda e: (e.stamp, e.seq, e.name), reverse=True)
    return entries, skipped


def parse_since(text: str, now: Optional[datetime] = None) -> datetime:
    """``--since``: an age (``30m``, ``2h``, ``3d``, ``1w``), a date (``2026-01-31``) or a stamp/ISO time."""
    now = now or datetime.now()
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: float(m.group(1))})
    for fmt in ("%Y-%m-%d_%H-%M-%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected an age such as 2h or 3d, a date YYYY-MM-DD "
                          "or a time YYYY-MM-DD_HH-MM-SS") from None
    return t.astimezone().replace(tzinfo=None) if t.tzinfo else t


SORT_KEYS = ("stamp", "name", "status", "steps", *FINAL_SHOWN)


def select(entries: list[Entry], name: Optional[str] = None, status: Optional[str] = None,
           since: Optional[datetime] = None, kind: Optional[str] = None, sort: str = "stamp",
           reverse: bool = False, limit: Optional[int] = None) -> list[Entry]:
    """Filter (``name``: a glob such as ``xavier*``; ``status``: comma-separated), sort and cut.

    ``sort="stamp"`` is newest first; the others ascending, missing values last; ``reverse`` flips.
    """
    from fnmatch import fnmatchcase

    out = entries
    if name:
        out = [e for e in out if fnmatchcase(e.name, name)]
    if status:
        wanted = {s.strip() for s in status.split(",") if s.strip()}
        out = [e for e in out if e.status in wanted]
    if kind:
        out = [e for e in out if e.kind == kind]
    if since is not None:
        out = [e for e in out if e.when >= since]
    if sort not in SORT_KEYS:
        raise ConfigError(f"--sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
    if sort == "stamp":
        out = sorted(out, key=lambda e: (e.stamp, e.seq, e.name), reverse=not reverse)
    else:
        def key(e):
            v = e.final.get(sort) if sort in FINAL_SHOWN else getattr(e, sort)
            return (v is None, v if v is not None else 0)

        present = sorted([e for e in out if key(e)[0] is False], key=key, reverse=reverse)
        out = present + [e for e in out if key(e)[0] is True]
    return out[:limit] if limit is not None else out


