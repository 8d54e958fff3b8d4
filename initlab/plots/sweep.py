"""``sweep.png``: the points of a sweep side by side, drawn only from the files in the sweep directory.

:func:`sweep_figure` returns the figure (a matplotlib Figure), :func:`plot_sweep` saves it.
This module reads the points and picks the layout; each layout is drawn by its own module:

- forward-only sweeps: the textbook's histogram figure for every point at once (rows = points,
  columns = layers), :mod:`initlab.plots.sweep_hist`;
- training sweeps: the loss curves overlaid (legend = each point's overrides), the accuracy or the
  gradient norm during training, and per-layer activation std and gradient norm at initialization,
  :mod:`initlab.plots.sweep_curves`;
- one many-valued axis × one true/false axis (the textbook's batch-norm grid): small multiples,
  one panel per value, true solid and false dashed, :mod:`initlab.plots.sweep_grid`.
"""
from __future__ import annotations

import functools
from pathlib import Path

from initlab.output.files import read_history, read_json, read_npz
from initlab.plots.common import builds_figure, figure, save_png
from initlab.plots.sweep_curves import overlay
from initlab.plots.sweep_grid import bool_grid, small_multiples
from initlab.plots.sweep_hist import histogram_grid
from initlab.recorder import unstack


class _Point:
    """What the figure needs of one point, read from its run directory."""

    def __init__(self, sweep_dir: Path, mp: dict):
        from initlab.yamlio import parse_saved_yaml

        self.index, self.status = mp["index"], mp["status"]
        self.label = mp.get("label") or ", ".join(f"{k}={v}" for k, v in mp["overrides"].items()) or str(self.index)
        self.dir = sweep_dir / mp["run_dir"]
        self.overrides = mp["overrides"]
        cfg_path = self.dir / "config.yaml"
        self.cfg = parse_saved_yaml(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
        self.metrics = _read(self.dir / "metrics.json")
        self.history = read_history(self.dir / "history.csv") if (self.dir / "history.csv").is_file() else None
        self.npz = self.dir / "activations.npz"

    @functools.cached_property
    def snaps(self) -> list:
        """The point's snapshots, read when a layout asks (the batch-norm grid draws none: reading 32
        compressed files was a sixth of drawing its sweep.png)."""
        return unstack(read_npz(self.npz)) if self.npz.is_file() else []

    @property
    def drawable(self) -> bool:
        """It ran: its config and its snapshots at init are saved (a point that failed before has none)."""
        return self.cfg is not None and self.npz.is_file()


def _read(path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


@builds_figure
def sweep_figure(sweep_dir):
    """``sweep.png`` as a matplotlib Figure, drawn from a sweep directory's manifest and run directories."""
    from initlab.output.readers import read_manifest

    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    points = [_Point(sweep_dir, mp) for mp in manifest["points"]]
    shown = [p for p in points if p.drawable]
    forward_only = all(p.cfg["train"]["steps"] == 0 for p in shown)
    grid = None if forward_only else bool_grid(manifest)
    if not grid:  # the other layouts draw each point's snapshot at init
        shown = [p for p in shown if p.snaps]
    if not shown:
        fig = figure(6, 2)
        fig.text(0.5, 0.5, f"{manifest.get('name', '')}: no point has finished yet", ha="center", va="center")
        return fig
    _suffix_labels(shown)
    title = f"{manifest.get('name', sweep_dir.name)}: {len(points)} points — {_fixed(shown)}"
    if forward_only:
        return histogram_grid(shown, title)
    return small_multiples(shown, grid, title) if grid else overlay(shown, title, manifest.get("axes"))


def plot_sweep(sweep_dir) -> list[Path]:
    """Draw ``sweep.png`` from a sweep directory's manifest and run directories; returns the paths written."""
    out = Path(sweep_dir) / "sweep.png"
    save_png(sweep_figure(sweep_dir), out)
    return [out]


def _round_part(part: str) -> str:
    """``std=0.0857696`` → ``std=0.0858``: a label is read, not parsed (the manifest keeps the exact value)."""
    key, eq, value = part.partition("=")
    try:
        number = float(value)
    except ValueError:
        return part
    return f"{key}={number:.3g}" if eq and value.strip().lower() not in ("nan", "inf", "-inf") else part


def _theory_part(p) -> str | None:
    """``σ_w²=1.5, ordered, χ₁=0.94``: what the README discusses, from the point's mean-field metrics."""
    t = (p.metrics or {}).get("theory") or {}
    if not t.get("applies") or t.get("sigma_w2") is None or t.get("chi1") is None:
        return None
    return f"σ_w²={t['sigma_w2']:.3g}, {t.get('phase') or '?'}, χ₁={t['chi1']:.2g}"


def _tidy_labels(points) -> None:
    """Round numbers in the labels; where the points differ by their weight scale and every point has a
    mean-field prediction, add σ_w², the phase and χ₁ (in place of a gain, beside a std)."""
    theory = [_theory_part(p) for p in points]
    use_theory = all(theory) and len(set(theory)) > 1
    for p, th in zip(points, theory):
        parts = [_round_part(x) for x in p.label.split(", ")]
        if use_theory:  # a gain says nothing by itself: replace it; a std is the textbook's knob: keep it
            gains = [x for x in parts if x.split("=")[0] in ("gain", "init.gain")]
            stds = [x for x in parts if x.split("=")[0] in ("std", "init.std")]
            if gains or stds:
                parts = [x for x in parts if x not in gains] + [th]
        p.label = ", ".join(parts)


def _suffix_labels(points) -> None:
    _tidy_labels(points)
    for p in points:
        if p.status == "diverged":
            steps = (p.metrics or {}).get("steps_done")
            at = (p.metrics or {}).get("diverged_at_step") or (steps + 1 if steps is not None else None)
            p.legend = f"{p.label} — non-finite" + (f" at step {at}" if at is not None else "")
        elif p.status not in ("completed",):
            p.legend = f"{p.label} ({p.status})"
        else:
            p.legend = p.label


# ---------------------------------------------------------------- the settings every point shares


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fixed(points) -> str:
    """The settings shared by every point, e.g. ``10×10 relu, init normal std=10, sgd lr=0.1, 50 steps``."""
    cfgs = [p.cfg for p in points]

    def same(*keys):
        return all(len({repr(_get(c, k)) for c in cfgs}) == 1 for k in keys)

    c = cfgs[0]
    m = c["model"]
    parts = []
    width = m["width"] if not isinstance(m["width"], list) else "·".join(map(str, m["width"]))
    if same("model.depth", "model.width"):
        parts.append(f"{m['depth']}×{width}")
    if same("model.activation"):
        parts.append(m["activation"])
    if same("model.batchnorm") and m.get("batchnorm"):
        parts.append("+BN")
    net = " ".join(parts)
    parts = [net] if net else []
    i = c["init"]
    if same("init.scheme", "init.std"):
        parts.append(f"init {i['scheme']}" + (f" std={i['std']:.3g}" if i.get("std") is not None else ""))
    elif same("init.scheme"):
        parts.append(f"init {i['scheme']}")
    if same("data.kind"):
        parts.append(f"{c['data']['kind']} data")
    if same("optimizer.name", "optimizer.lr") and c["train"]["steps"]:
        parts.append(f"optimizer={c['optimizer']['name']} lr={c['optimizer']['lr']:.3g}")
    if same("train.steps") and c["train"]["steps"]:
        parts.append(f"{c['train']['steps']} steps")
    if same("train.clip_norm") and c["train"].get("clip_norm"):
        parts.append(f"clip_norm {c['train']['clip_norm']:g}")
    if same("seed"):
        parts.append(f"seed {c['seed']}")
    return ", ".join(parts)

