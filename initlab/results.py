"""Results after the fact: list the runs and sweeps under an output root, load one for a notebook.

    import initlab
    run = initlab.load_run("outputs/xavier_sigmoid/latest")
    run.history["train_loss"], run.snapshots["act_std"][0]     # NumPy arrays
    run.to_pandas()["layers"]                                   # DataFrames (pandas installed)
    run.figures()["activations"]                                # matplotlib Figures, shown inline

:func:`scan` reads only the small JSON files of each directory (``metrics.json``,
``provenance.json``, ``manifest.json``), so a thousand runs list in a fraction of a second. An
entry that cannot be read is skipped with a note; a half-written run is listed as ``incomplete``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import numpy as np

from initlab.errors import ConfigError
from initlab.keys import flatten, format_value
from initlab.output.files import HISTORY_COLUMNS, is_inside, read_history, read_json, read_npz
from initlab.output.readers import read_manifest

LATEST = "latest"
COMPARE_MARK = "compare.json"  # what `initlab compare` writes into its own folder
STAMP = re.compile(r"^(?:sweep-)?(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})(?:-(\d+))?$")
FINAL_SHOWN = ("train_loss", "eval_loss", "eval_acc", "train_acc")
STATUS_RANK = ("completed", "diverged", "pending", "running", "interrupted", "failed")  # worst last


# ------------------------------------------------------------------------------------------ listing


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


def _read_dict(path: Path) -> Optional[dict]:
    """A JSON file that should hold an object: the object, None when absent; ValueError when unreadable."""
    try:
        obj = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name}: {getattr(e, 'strerror', None) or e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return obj


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
    metrics = _read_dict(path / "metrics.json")
    prov = None
    try:
        prov = _read_dict(path / "provenance.json")
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
    status = max(statuses, key=lambda s: STATUS_RANK.index(s) if s in STATUS_RANK else len(STATUS_RANK),
                 default="pending")
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


# ------------------------------------------------------------------------------------------ loading


def _need_pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("DataFrames need pandas, which is not installed: pip install pandas "
                          "(the NumPy arrays in .history, .snapshots and .layers work without it)") from None
    return pandas


def resolve_dir(path) -> Path:
    """A run or sweep directory as given (``latest`` included), resolved through symlinks."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such directory")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory")
    return path.resolve()


@dataclass
class Run:
    """A run directory read back. Arrays are NumPy; :meth:`to_pandas` gives DataFrames."""

    path: Path
    config: dict
    metrics: dict
    provenance: Optional[dict] = None
    _history: Optional[dict] = field(default=None, repr=False)
    _snapshots: Optional[dict] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.metrics.get("name") or self.config.get("name") or self.path.parent.name)

    @property
    def status(self) -> str:
        return str(self.metrics.get("status"))

    @property
    def final(self) -> dict:
        return dict(self.metrics.get("final") or {})

    @property
    def depth(self) -> int:
        return len(self.metrics.get("layers") or [])

    @property
    def history(self) -> dict:
        """``history.csv`` as ``{column: array}``; every column present (empty arrays for a forward-only run)."""
        if self._history is None:
            path = self.path / "history.csv"
            h = read_history(path) if path.is_file() else {}
            for c in HISTORY_COLUMNS:
                if c not in h:
                    h[c] = np.zeros(0, dtype=np.int64 if c == "step" else float)
            self._history = h
        return self._history

    @property
    def snapshots(self) -> dict:
        """``activations.npz``: ``steps`` (S,) and per-layer arrays (S, L[, bins]); ``{}`` if absent."""
        if self._snapshots is None:
            path = self.path / "activations.npz"
            self._snapshots = read_npz(path) if path.is_file() else {}
        return self._snapshots

    @property
    def jacobian(self) -> Optional[np.ndarray]:
        path = self.path / "jacobian.npz"
        return read_npz(path)["singular_values"] if path.is_file() else None

    def layer_stat(self, key: str = "act_std", when: str = "init") -> np.ndarray:
        """One per-layer statistic at init (``when="init"``) or at the last snapshot (``"end"``)."""
        snaps = self.snapshots
        if key not in snaps:
            return np.zeros(0)
        return np.asarray(snaps[key][0 if when == "init" else -1], dtype=float)

    def to_pandas(self) -> dict:
        """``{"history": DataFrame, "layers": DataFrame (one row per snapshot and layer)}``."""
        pd = _need_pandas()
        snaps = self.snapshots
        rows = []
        if snaps:
            scalar = [k for k, v in snaps.items() if k != "steps" and v.ndim == 2]
            for s, step in enumerate(snaps["steps"]):
                for layer in range(snaps[scalar[0]].shape[1] if scalar else 0):
                    rows.append({"step": int(step), "layer": layer + 1,
                                 **{k: float(snaps[k][s, layer]) for k in scalar}})
        return {"history": pd.DataFrame(self.history), "layers": pd.DataFrame(rows)}

    FIGURES = ("activations", "gradients", "loss", "jacobian")

    def figures(self, *names: str) -> dict:
        """The run's figures as matplotlib Figures (``activations``, ``gradients``, ``loss``,
        ``jacobian`` where they apply, or only ``names``), drawn from its files as the CLI draws its PNGs."""
        unknown = [n for n in names if n not in self.FIGURES]
        if unknown:
            raise ValueError(f"no figure {unknown[0]!r}; the figures are {', '.join(self.FIGURES)}")
        try:
            from initlab.plots import run as plots
        except ImportError as e:
            raise ImportError(f"figures need matplotlib: {e}") from e
        out = {}
        for key in names or self.FIGURES:
            make = getattr(plots, f"{key}_figure", None)
            if make is None:
                continue  # a figure this version does not draw
            if (key == "loss" and not len(self.history["step"])) or (key == "jacobian" and self.jacobian is None):
                continue  # forward only / no spectrum: the CLI draws neither
            fig = make(self.path, self.config, self.metrics)
            if fig is not None:
                out[key] = fig
        return out

    def plot_loss(self):
        """The loss curves as a matplotlib Figure (None for a forward-only run)."""
        return self.figures("loss").get("loss")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, steps_done={self.metrics.get('steps_done')})"


def load_run(path) -> Run:
    """Read a run directory (``outputs/<name>/latest`` too). A directory that is not a finished
    initlab run (no ``config.yaml``, or no ``metrics.json`` yet) is a :class:`ConfigError`."""
    import yaml

    path = resolve_dir(path)
    if (path / "manifest.json").is_file():
        raise ConfigError(f"{path}: a sweep directory; use load_sweep (or load_run on one of its runs/)")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: not an initlab run directory (no config.yaml)")
    try:
        metrics = _read_dict(path / "metrics.json")
    except ValueError as e:
        raise ConfigError(f"{path}: unreadable ({e})") from e
    if metrics is None:
        raise ConfigError(f"{path}: an incomplete run (no metrics.json: still running, or killed)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path / 'config.yaml'}: unreadable ({e})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path / 'config.yaml'}: not an initlab config")
    try:
        prov = _read_dict(path / "provenance.json")
    except ValueError:
        prov = None
    return Run(path, config, metrics, prov)


@dataclass
class Sweep:
    """A sweep directory read back: its manifest, summary rows and point runs."""

    path: Path
    manifest: dict
    summary: list

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.parent.name)

    @property
    def points(self) -> list:
        """The point rows of ``summary.json`` (without the seed-aggregate rows)."""
        return [r for r in self.summary if not r.get("aggregate")]

    def runs(self) -> list[Run]:
        """The points that finished, as :class:`Run` objects (in point order)."""
        out = []
        for mp in self.manifest["points"]:
            run_dir = self.path / str(mp.get("run_dir") or "") if isinstance(mp, dict) else None
            if run_dir is None or run_dir == self.path or not is_inside(run_dir, self.path):
                continue  # a hand-edited manifest naming a folder outside the sweep is not followed
            try:
                out.append(load_run(run_dir))
            except ConfigError:
                continue  # pending, failed before writing, or interrupted mid-write
        return out

    def run(self, index: int) -> Run:
        return load_run(self.path / self.manifest["points"][index]["run_dir"])

    def to_pandas(self):
        """``summary.json`` as a DataFrame: one row per point (and per aggregate), columns flattened
        with the prefixes of ``summary.csv`` (``config.``, ``final.``, ``layer<i>.act_std``)."""
        pd = _need_pandas()
        rows = []
        for r in self.summary:
            row = {"index": r.get("index"), "aggregate": r.get("aggregate", False), "status": r.get("status"),
                   "seed": r.get("seed"), "label": r.get("label")}
            row.update({f"config.{k}": v for k, v in (r.get("overrides") or {}).items() if k != "seed"})
            row.update({f"final.{k}": v for k, v in (r.get("final") or {}).items()})
            row.update({f"layer{i + 1}.act_std": v for i, v in enumerate(r.get("init_std") or [])})
            row.update(steps_done=r.get("steps_done"), duration_s=r.get("duration_s"), run_dir=r.get("run_dir"))
            rows.append(row)
        return pd.DataFrame(rows)

    def figure(self):
        """``sweep.png`` as a matplotlib Figure."""
        from initlab.plots.sweep import sweep_figure

        return sweep_figure(self.path)

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, points={len(self.manifest['points'])})"


def load_sweep(path) -> Sweep:
    """Read a sweep directory (``latest`` too). A directory without a manifest is a :class:`ConfigError`."""
    path = resolve_dir(path)
    manifest = read_manifest(path)
    try:
        summary = read_json(path / "summary.json")
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, list):  # not written yet (a sweep still running): the manifest's view
        summary = [{"index": mp.get("index"), "overrides": mp.get("overrides") or {}, "label": mp.get("label"),
                    "seed": mp.get("seed"), "status": mp.get("status"), "run_dir": mp.get("run_dir"),
                    "final": {}, "init_std": [], "aggregate": False} for mp in manifest["points"]]
    return Sweep(path, manifest, summary)


# ------------------------------------------------------------------------------------------ comparing


def differing(configs: list[dict]) -> dict:
    """The dotted keys whose values are not the same in every config → one value per config (None
    where a config lacks the key). ``name`` is left out: it names, it does not change a result.
    A key missing from a config (written by an older initlab, before the key existed) does not by
    itself make a difference: only the values present are compared."""
    flats = [flatten("", c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    out = {}
    for k in keys:
        values = [f.get(k, missing) for f in flats]
        present = [v for v in values if v is not missing]
        if k != "name" and any(v != present[0] for v in present[1:]):
            out[k] = [None if v is missing else v for v in values]
    return out


def load_compared(paths) -> list[Run]:
    """The runs ``initlab compare`` was given: run directories, sweep points, or whole sweeps
    (each expands into its finished points). Two of them being the same directory, or fewer than
    two runs in all, is a :class:`ConfigError`."""
    runs: list[Run] = []
    for p in paths:
        resolved = resolve_dir(p)
        if (resolved / "manifest.json").is_file():
            found = load_sweep(resolved).runs()
            if not found:
                raise ConfigError(f"{p}: a sweep with no finished point to compare")
            runs.extend(found)
        else:
            runs.append(load_run(resolved))
    seen = {}
    for r in runs:
        if r.path in seen:
            raise ConfigError(f"{r.path}: given twice (a run compared with itself)")
        seen[r.path] = True
    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs")
    return runs


def _label_value(v) -> str:
    if v is None or isinstance(v, bool):
        return format_value(v)  # null, true, false: as YAML and the config say them
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ",".join(f"{k}={_label_value(x)}" for k, x in v.items())
    return str(v)


def compare_labels(runs: list[Run], diff: dict) -> list[str]:
    """One legend label per run: the differing keys only (last part of the key when unambiguous),
    else the run's folder."""
    if not diff:
        return [f"{r.name}/{r.path.name}" for r in runs]
    short = {k: k.rsplit(".", 1)[-1] for k in diff}
    if len(set(short.values())) < len(short):
        short = {k: k for k in diff}
    labels = [", ".join(f"{short[k]}={_label_value(vals[i])}" for k, vals in diff.items()) for i in range(len(runs))]
    if len(set(labels)) < len(labels):  # same differing values (e.g. a seed the config does not hold)
        labels = [f"{lab} ({r.path.name})" for lab, r in zip(labels, runs)]
    return labels


def compare_series(run: Run, label: str) -> dict:
    """The arrays :func:`initlab.plots.compare.compare_figure` draws for one run."""
    h = run.history
    trained = bool(len(h["step"]))
    return {"label": label, "step": h["step"], "train_loss": h["train_loss"], "trained": trained,
            "act_std_init": run.layer_stat("act_std", "init"), "act_std_end": run.layer_stat("act_std", "end"),
            "grad_norm_init": run.layer_stat("grad_norm", "init"), "grad_norm_end": run.layer_stat("grad_norm", "end")}
