"""Run and sweep directories as the exporters see them: read once, never written to.

A run is exported from its own files only (``config.yaml``, ``metrics.json``, ``history.csv``,
``activations.npz`` and the PNGs), so nothing is re-run. ``metrics.json`` is written last, so a
run without it is still running or was killed: it is refused rather than exported half.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from initlab.errors import ConfigError, InitlabError
from initlab.numbers import finite_or_none
from initlab.output.files import is_inside, read_json
from initlab.recorder import Snapshot, unstack

# A run's files that go along with an exported run (every file initlab writes into a run directory).
RUN_ARTIFACT_SUFFIXES = (".json", ".csv", ".yaml", ".npz", ".png")
SWEEP_ARTIFACTS = ("manifest.json", "summary.json", "summary.csv", "sweep.yaml", "sweep.png")


class ExportError(InitlabError):
    """An export could not be finished (exit code 1)."""


class MissingExtra(InitlabError):
    """The optional packages an exporter needs are not installed (exit code 2)."""

    def __init__(self, extra: str, what: str, cause: str = ""):
        why = f" ({cause})" if cause else ""
        super().__init__(f"{what} needs the optional '{extra}' extra{why}: pip install 'initlab[{extra}]'")
        self.extra = extra


@dataclass
class Run:
    """One run directory, read. ``key`` names the run wherever it is exported (stable across exports
    and across a move of the output folder); ``content`` changes whenever the run's results do."""

    path: Path
    label: str
    key: str
    content: str
    config: dict
    config_text: str
    metrics: dict
    history: Optional[dict]
    snapshots: list[Snapshot]

    @property
    def status(self) -> str:
        return str(self.metrics.get("status") or "unknown")

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.metrics.get("name") or self.path.parent.name)

    def artifacts(self) -> list[Path]:
        """The run's own files: figures, JSON, CSV, YAML and NPZ (not temporary files, not tensorboard/)."""
        return sorted(f for f in self.path.iterdir()
                      if f.suffix in RUN_ARTIFACT_SUFFIXES and not f.name.startswith(".") and f.is_file())

    def started(self) -> float:
        """When the run began (seconds since the epoch): its folder's timestamp, else config.yaml's mtime."""
        m = re.match(r"(?:sweep-)?(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)", self.path.name)
        stamp = m and m.group(1)
        if not stamp:  # a sweep point: runs/K-SLUG inside sweep-TIMESTAMP
            m = re.match(r"sweep-(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)", self.path.parent.parent.name)
            stamp = m and m.group(1)
        if stamp:
            try:
                return time.mktime(time.strptime(stamp, "%Y-%m-%d_%H-%M-%S"))
            except (ValueError, OverflowError):
                pass
        return (self.path / "config.yaml").stat().st_mtime

    def duration(self) -> Optional[float]:
        total = (self.metrics.get("timing") or {}).get("total_s")
        return float(total) if isinstance(total, (int, float)) and math.isfinite(total) else None


@dataclass
class Point:
    """One point of a sweep; ``run`` is None when it has nothing to export (``skipped`` says why)."""

    index: int
    label: str
    overrides: dict
    status: str
    run: Optional[Run]
    skipped: str = ""


@dataclass
class Sweep:
    path: Path
    label: str
    key: str
    manifest: dict
    config_text: str
    points: list[Point] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.parent.name)

    def counts(self) -> dict:
        out: dict = {}
        for p in self.points:
            out[p.status] = out.get(p.status, 0) + 1
        return out

    def artifacts(self) -> list[Path]:
        return [self.path / n for n in SWEEP_ARTIFACTS if (self.path / n).is_file()]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:20]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e


def read_run(path, place: str, label: str) -> Run:
    """Read a finished (or failed, diverged, interrupted) run directory.

    ``place`` is the run's location relative to its output root (``NAME/TIMESTAMP``, or
    ``NAME/sweep-TIMESTAMP/runs/K-SLUG`` for a sweep point): with ``config.yaml`` it makes the key.
    """
    from initlab.results import load_run

    path = Path(path)
    loaded = load_run(path)  # what a notebook reads: refuses a non-run or one without metrics.json yet
    config_bytes = _read_bytes(path / "config.yaml")
    try:
        history = loaded.history if (path / "history.csv").is_file() else None
        snapshots = unstack(loaded.snapshots) if loaded.snapshots else []
    except (OSError, ValueError, KeyError, IndexError) as e:  # truncated or foreign file
        raise ConfigError(f"{path}: unreadable history.csv or activations.npz ({e})") from e
    return Run(path=path, label=label, key=_digest(place.encode(), config_bytes),
               content=_digest(_read_bytes(path / "metrics.json")), config=loaded.config,
               config_text=config_bytes.decode("utf-8", "replace"), metrics=loaded.metrics,
               history=history, snapshots=snapshots)


def read_sweep(path) -> Sweep:
    """Read a sweep directory: every point that finished (in any way) with its run; the others skipped."""
    path = Path(path)
    try:
        manifest = read_json(path / "manifest.json")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path / 'manifest.json'}: unreadable ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
        raise ConfigError(f"{path / 'manifest.json'}: not an initlab sweep manifest")
    place = f"{path.parent.name}/{path.name}"
    sweep_yaml = path / "sweep.yaml"
    config_text = sweep_yaml.read_text(encoding="utf-8", errors="replace") if sweep_yaml.is_file() else ""
    sweep = Sweep(path=path, label=place, key=_digest(b"sweep", place.encode()), manifest=manifest,
                  config_text=config_text)
    for i, p in enumerate(manifest["points"]):
        if not isinstance(p, dict):
            raise ConfigError(f"{path / 'manifest.json'}: point {i} is not a mapping")
        index = int(p.get("index", i))
        rel = str(p.get("run_dir") or "")
        label = str(p.get("label") or Path(rel).name or index)
        point = Point(index=index, label=label, overrides=dict(p.get("overrides") or {}),
                      status=str(p.get("status") or "pending"), run=None)
        run_path = (path / rel) if rel else None
        # A point's folder must lie inside the sweep: a manifest naming anything else is not trusted.
        if run_path is None or not is_inside(run_path, path):
            point.skipped = "no run directory"
        elif not (run_path / "config.yaml").is_file() or not (run_path / "metrics.json").is_file():
            point.skipped = f"{point.status}, no results yet"
        else:
            point.run = read_run(run_path, f"{place}/{rel}", label)
            point.status = point.run.status  # the run's own file is the truth (as on --resume)
        sweep.points.append(point)
    return sweep


def read_target(path) -> Run | Sweep:
    """A run or a sweep directory (a ``latest`` symlink is followed), or a :class:`ConfigError`."""
    given = Path(path)
    if not given.exists():
        raise ConfigError(f"{path}: no such run or sweep directory")
    if not given.is_dir():
        raise ConfigError(f"{path}: not a directory (give a run or a sweep directory)")
    real = given.resolve()
    if (real / "manifest.json").is_file():
        return read_sweep(real)
    if (real / "config.yaml").is_file():
        return read_run(real, f"{real.parent.name}/{real.name}", f"{real.parent.name}/{real.name}")
    raise ConfigError(f"{path}: not a run directory (no config.yaml) or a sweep directory (no manifest.json)")


def read_targets(paths) -> list[Run | Sweep]:
    """Every path read before anything is exported: one bad path and nothing is written."""
    if not paths:
        raise ConfigError("give at least one run or sweep directory")
    return [read_target(p) for p in paths]


def runs_of(target: Run | Sweep) -> list[Run]:
    return [target] if isinstance(target, Run) else [p.run for p in target.points if p.run is not None]


def finite(x) -> Optional[float]:
    """``x`` as a float when it is a finite number, else None (NaN cells, nulls, flags, text)."""
    if isinstance(x, (bool, str, bytes)):
        return None
    try:
        return finite_or_none(x)
    except (TypeError, ValueError):
        return None


HISTORY_SERIES = ("train_loss", "grad_norm", "eval_loss", "eval_acc", "train_acc")
# Per-layer statistics of each snapshot: (field in activations.npz, exported name).
LAYER_SERIES = (
    ("act_std", "activation_std"),
    ("preact_std", "preactivation_std"),
    ("saturated_frac", "saturated_frac"),
    ("dead_frac", "dead_frac"),
    ("grad_norm", "weight_grad_norm"),
)


def history_points(run: Run):
    """``(column, step, value)`` for every finite cell of history.csv (an empty cell was not measured,
    or was not finite: a diverged step; either way there is no number to export)."""
    h = run.history
    if not h or "step" not in h:
        return
    steps = h["step"]
    for col in HISTORY_SERIES:
        if col not in h:
            continue
        for step, v in zip(steps, h[col]):
            v = finite(v)
            if v is not None:
                yield col, int(step), v


def layer_points(run: Run):
    """``(series, layer, step, value)`` (layer counted from 1, like the ``1-layer`` panels) for every
    finite per-layer statistic of every snapshot; a fraction that does not apply (NaN) is left out."""
    for snap in run.snapshots:
        for key, series in LAYER_SERIES:
            for i, v in enumerate(snap.data[key]):
                v = finite(v)
                if v is not None:
                    yield series, i + 1, snap.step, v
