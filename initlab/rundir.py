"""Writing a run directory: config first, results next, figures from the saved files, metrics.json last."""
from __future__ import annotations

from pathlib import Path

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
        path = run_dir(out, cfg.name)
        atomic_write(path / "config.yaml", dump_yaml(cfg))
        return cls(path, cfg)

    def write(self, result, figures: bool = True) -> None:
        """Every result file; ``metrics.json`` last, so its presence means the rest is complete.

        ``figures=False`` skips the PNGs (a sweep draws them on demand: ``initlab plot RUN_DIR``).
        """
        if result.history and len(result.history.get("step", [])) or self.cfg.train.steps > 0:
            write_history(self.path / "history.csv", result.history)
        if result.snapshots:
            write_npz(self.path / "activations.npz", stack(result.snapshots))
        try:
            if figures:
                from initlab.plotting import plot_run

                plot_run(self.path, result.metrics, self.cfg)
        except Exception as e:  # a figure is not worth losing the numbers for
            result.metrics.setdefault("warnings", []).append(f"figures: {type(e).__name__}: {e}")
        write_json(self.path / "metrics.json", result.metrics)
