"""Runs and sweeps read back, for a notebook:

    import initlab
    run = initlab.load_run("outputs/xavier_sigmoid/latest")
    run.history["train_loss"], run.snapshots["act_std"][0]     # NumPy arrays
    run.to_pandas()["layers"]                                   # DataFrames (pandas installed)
    run.figures()["activations"]                                # matplotlib Figures, shown inline
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from initlab.errors import ConfigError
from initlab.output.files import HISTORY_COLUMNS, is_inside, read_history, read_json, read_npz
from initlab.output.readers import read_json_object, read_manifest


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

    from initlab.yamlio import parse_saved_yaml

    path = resolve_dir(path)
    if (path / "manifest.json").is_file():
        raise ConfigError(f"{path}: a sweep directory; use load_sweep (or load_run on one of its runs/)")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: not an initlab run directory (no config.yaml)")
    try:
        metrics = read_json_object(path / "metrics.json")
    except ValueError as e:
        raise ConfigError(f"{path}: unreadable ({e})") from e
    if metrics is None:
        raise ConfigError(f"{path}: an incomplete run (no metrics.json: still running, or killed)")
    try:
        config = parse_saved_yaml((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path / 'config.yaml'}: unreadable ({e})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path / 'config.yaml'}: not an initlab config")
    try:
        prov = read_json_object(path / "provenance.json")
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
        """``summary.csv`` as a DataFrame: one row per point (and per seed aggregate), its columns
        prefixed ``config.``, ``final.``, ``layer<i>.act_std``. A sweep still running has no summary
        yet: its points' index, status, seed and ``config.`` columns, from the manifest."""
        pd = _need_pandas()
        path = self.path / "summary.csv"
        if path.is_file():
            return pd.read_csv(path)
        return pd.DataFrame([{"index": r.get("index"), "aggregate": False, "status": r.get("status"), "seed": r.get("seed"),
                              **{f"config.{k}": v for k, v in (r.get("overrides") or {}).items() if k != "seed"}}
                             for r in self.points])

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


