"""The one writer of run directories: config first, results next, figures from the saved files,
``metrics.json`` last.

Every file is written to a temporary name and renamed, so no reader ever sees half a file. When a
write fails, the directory is marked ``failed`` (a small ``metrics.json`` saying why) if the disk
still takes that much, and the error is raised: a run directory never claims a result it lacks.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import initlab
from initlab.config import Config, dump_yaml
from initlab.errors import describe
from initlab.output.files import LATEST, OutputError, atomic_write, run_dir, write_history, write_json, write_npz
from initlab.recorder import stack

# metrics.json begins with SPEC's keys, in SPEC's order; the others follow in the order they were made.
METRICS_ORDER = ("status", "initlab_version", "config_hash", "name", "seed", "steps_done", "final", "layers", "timing")


def metrics_document(metrics: dict) -> dict:
    """``metrics`` in the order the file presents them."""
    return {**{k: metrics[k] for k in METRICS_ORDER if k in metrics},
            **{k: v for k, v in metrics.items() if k not in METRICS_ORDER}}


def link_latest(path) -> None:
    """Point ``<parent>/latest`` at ``path`` (a finished run or sweep directory) atomically.

    The link is made under a temporary name and renamed over ``latest``, so a reader sees the old
    target or the new one, never no link; concurrent runs of one name leave it at whichever
    finished last, always a complete one. The target is relative, so the tree can be moved.
    Best effort: a file system without symlinks costs the shortcut, not the run.
    """
    path = Path(path).resolve()  # given as .../latest itself (a resumed sweep): link to what it names
    link = path.parent / LATEST
    tmp = path.parent / f".{LATEST}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(path.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


class RunWriter:
    def __init__(self, path: Path, cfg: Config):
        self.path = Path(path)
        self.cfg = cfg
        self.own_folder = False  # made by create(): <out>/<name>/latest is ours to update

    @classmethod
    def create(cls, out, cfg: Config, provenance: dict | None = None) -> "RunWriter":
        """Make ``<out>/<name>/<timestamp>[-N]/`` exclusively; save the resolved config (and provenance) in it."""
        writer = cls(run_dir(out, cfg.name), cfg)
        writer.own_folder = True
        writer._save_config()
        if provenance is not None:
            writer.save_provenance(provenance)
        return writer

    def save_provenance(self, provenance: dict) -> None:
        """``provenance.json``: how this run was made (see :mod:`initlab.provenance`)."""
        try:
            write_json(self.path / "provenance.json", {**provenance, "schema_version": initlab.SCHEMA_VERSION})
        except Exception as e:
            self.mark_failed(e)
            raise

    @classmethod
    def open(cls, path, cfg: Config) -> "RunWriter":
        """Write into ``path`` (made if missing): a sweep's parent names its points' folders."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{path}: {e.strerror or e}") from e
        return cls(path, cfg)._save_config()

    def _save_config(self) -> "RunWriter":
        try:
            atomic_write(self.path / "config.yaml", dump_yaml(self.cfg))
        except Exception as e:
            self.mark_failed(e)
            raise
        return self

    def write(self, result, figures: bool = True) -> None:
        """Every result file; ``metrics.json`` last, so its presence means the rest is complete.

        Figures are drawn from the files just written; a figure that cannot be drawn becomes a
        warning in ``metrics.json``. ``result.metrics`` is then exactly what the file holds.
        ``figures=False`` skips the PNGs (a sweep draws them on demand: ``initlab plot RUN_DIR``).
        """
        try:
            if result.history and len(result.history.get("step", [])) or self.cfg.train.steps > 0:
                write_history(self.path / "history.csv", result.history)
            if result.snapshots:
                write_npz(self.path / "activations.npz", stack(result.snapshots))
            if result.jacobian is not None:
                write_npz(self.path / "jacobian.npz", {"singular_values": result.jacobian})
            metrics = dict(result.metrics)
            if figures:
                notes = self._figures(metrics)
                if notes:
                    metrics["warnings"] = [*metrics.get("warnings", []), *notes]
            result.metrics = metrics_document(metrics)
            write_json(self.path / "metrics.json", result.metrics)
            if self.own_folder:
                link_latest(self.path)
        except Exception as e:
            result.status = "failed"
            result.error = describe(e)
            result.metrics.update(status="failed", error=result.error)
            self.mark_failed(e, result.metrics)
            raise

    def _figures(self, metrics: dict) -> list[str]:
        """Draw the PNGs; return the problems as notes. A figure that cannot be drawn is not worth
        losing the numbers for; one that cannot be *saved* (disk full, permissions) fails the run."""
        notes = []
        try:
            from initlab.plots.run import plot_run

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plot_run(self.path, metrics, self.cfg)
            notes.extend(dict.fromkeys(f"figures: {w.category.__name__}: {w.message}" for w in caught))
        except OutputError:
            raise
        except Exception as e:
            notes.append(f"figures: {type(e).__name__}: {e}")
        return notes

    def mark_failed(self, error: BaseException, metrics: dict | None = None) -> None:
        """Best effort: a ``metrics.json`` with status ``failed`` and the error (the disk may refuse it too)."""
        small = {"status": "failed", "initlab_version": initlab.__version__, "config_hash": self.cfg.hash,
                 "name": self.cfg.name, "seed": self.cfg.seed, "error": describe(error),
                 "schema_version": initlab.SCHEMA_VERSION}
        for attempt in ({**(metrics or {}), **small}, small):
            try:
                write_json(self.path / "metrics.json", attempt)
                return
            except Exception:
                continue
