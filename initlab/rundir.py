"""Writing a run directory: config first, results next, figures from the saved files, metrics.json last.

Every file is written to a temporary name and renamed, so no reader ever sees half a file. When a
write fails, the directory is marked ``failed`` (a small ``metrics.json`` saying why) if the disk
still takes that much, and the error is raised: a run directory never claims a result it lacks.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import initlab
from initlab.config import Config, dump_yaml
from initlab.output import atomic_write, run_dir, write_history, write_json, write_npz
from initlab.recorder import stack


class RunWriter:
    def __init__(self, path: Path, cfg: Config):
        self.path = Path(path)
        self.cfg = cfg

    @classmethod
    def create(cls, out, cfg: Config) -> "RunWriter":
        """Make ``<out>/<name>/<timestamp>[-N]/`` exclusively and save the resolved config in it."""
        writer = cls(run_dir(out, cfg.name), cfg)
        try:
            atomic_write(writer.path / "config.yaml", dump_yaml(cfg))
        except Exception as e:
            writer.mark_failed(e)
            raise
        return writer

    def write(self, result, figures: bool = True) -> None:
        """Every result file; ``metrics.json`` last, so its presence means the rest is complete.

        ``figures=False`` skips the PNGs (a sweep draws them on demand: ``initlab plot RUN_DIR``).
        """
        try:
            if result.history and len(result.history.get("step", [])) or self.cfg.train.steps > 0:
                write_history(self.path / "history.csv", result.history)
            if result.snapshots:
                write_npz(self.path / "activations.npz", stack(result.snapshots))
            if getattr(result, "jacobian", None) is not None:
                write_npz(self.path / "jacobian.npz", {"singular_values": result.jacobian})
            if figures:
                self._figures(result)
            write_json(self.path / "metrics.json", result.metrics)
        except Exception as e:
            result.status = "failed"
            result.error = _message(e)
            result.metrics.update(status="failed", error=result.error)
            self.mark_failed(e, result.metrics)
            raise

    def _figures(self, result) -> None:
        """Draw the PNGs. A figure that cannot be drawn is a warning in metrics (not worth losing the
        numbers for); one that cannot be *saved* (disk full, permissions) fails the run like any file."""
        from initlab.output import OutputError

        notes = []
        try:
            from initlab.plotting import plot_run

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plot_run(self.path, result.metrics, self.cfg)
            notes.extend(dict.fromkeys(f"figures: {w.category.__name__}: {w.message}" for w in caught))
        except OutputError:
            raise
        except Exception as e:
            notes.append(f"figures: {type(e).__name__}: {e}")
        if notes:
            result.metrics.setdefault("warnings", []).extend(notes)

    def mark_failed(self, error: BaseException, metrics: dict | None = None) -> None:
        """Best effort: a ``metrics.json`` with status ``failed`` and the error (the disk may refuse it too)."""
        small = {"status": "failed", "initlab_version": initlab.__version__, "config_hash": self.cfg.hash,
                 "name": self.cfg.name, "seed": self.cfg.seed, "error": _message(error)}
        for attempt in ({**(metrics or {}), **small}, small):
            try:
                write_json(self.path / "metrics.json", attempt)
                return
            except Exception:
                continue


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, initlab.InitlabError) else f"{type(e).__name__}: {e}"
