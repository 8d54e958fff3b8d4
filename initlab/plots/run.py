"""Figures of a run, drawn only from the files in its directory (so ``initlab plot`` can redraw them).

Each ``*_figure(run_dir)`` returns a matplotlib :class:`~matplotlib.figure.Figure` (on the Agg
canvas, no pyplot state) for a notebook or a paper; :func:`plot_run` saves the same figures as the
run directory's PNGs. matplotlib is imported lazily so that the CLI starts fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from initlab.output.files import read_history, read_json, read_npz
from initlab.plots.common import (
    HEADROOM,
    OVERLAY_NOTE,
    OWN_RANGE_NOTE,
    builds_figure,
    clips_zero_spike,
    draw_histogram_row,
    figure,
    grad_norm_source,
    own_ranges,
    panel_grid,
    predicted,
    round_sig,
    save_png,
    shown_layers,
    smooth,
    smoothing_window,
    suptitle,
    tidy_log_axis,
    wrap,
)
from initlab.recorder import unstack
from initlab.theory.jacobian import RANK_RTOL, nonzero_mask


def describe(cfg: dict) -> str:
    """The net and its init in a few words, numbers rounded: ``5×100 relu, init normal std=0.0858``."""
    m, i = cfg["model"], cfg["init"]
    scheme = i["scheme"] + (f" std={round_sig(i['std'])}" if i.get("std") is not None else "")
    if i.get("gain") not in (None, 1, 1.0):
        scheme += f" gain={round_sig(i['gain'])}"
    width = m["width"] if not isinstance(m["width"], list) else "×".join(map(str, m["width"]))
    extra = " +BN" if m.get("batchnorm") else (" +LN" if m.get("layernorm") else "")
    return f"{m['depth']}×{width} {m['activation']}{extra}, init {scheme}"


def _load(run_dir, cfg=None, metrics=None):
    from initlab.yamlio import parse_saved_yaml

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = parse_saved_yaml((run_dir / "config.yaml").read_text(encoding="utf-8"))
    elif not isinstance(cfg, dict):
        cfg = cfg.to_dict()
    if metrics is None and (run_dir / "metrics.json").exists():
        metrics = read_json(run_dir / "metrics.json")
    return run_dir, cfg, metrics


def _history(run_dir: Path):
    return read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else None


@builds_figure
def activations_figure(run_dir, cfg=None, metrics=None):
    """The textbook's figure: a histogram of each hidden layer's activations at init (and after training)."""
    run_dir, cfg, metrics = _load(run_dir, cfg, metrics)
    snaps = unstack(read_npz(run_dir / "activations.npz"))
    rows = [snaps[0]] + ([snaps[-1]] if len(snaps) > 1 else [])
    n_layers = len(snaps[0].data["act_std"])
    layers = shown_layers(n_layers)
    sub, ncol = panel_grid(len(layers))  # deep nets wrap into rows of at most 5 panels
    width = max(2.3 * ncol, 6.5)
    fig = figure(width, 2.3 * sub * len(rows) + 1.1)
    axes = fig.subplots(sub * len(rows), ncol, squeeze=False, sharey=True)
    clip = clips_zero_spike(cfg)
    expected = predicted(metrics, n_layers)
    ymax = 0
    own = False
    for r, snap in enumerate(rows):
        panels = [axes[r * sub + k // ncol][k % ncol] for k in range(len(layers))]
        for k in range(len(layers), sub * ncol):
            axes[r * sub + k // ncol][k % ncol].set_axis_off()
        ymax = max(ymax, draw_histogram_row(panels, snap, layers, expected if r == 0 else None, clip))
        own = own or own_ranges(snap, layers)
        label = "at init" if snap.step == 0 else f"after {snap.step} steps"
        for k in range(sub):
            axes[r * sub + k][0].set_ylabel(f"{label}\ncount", fontsize=9)
    if ymax:
        axes[0][0].set_ylim(0, ymax * HEADROOM)
    notes = ([OVERLAY_NOTE] if expected is not None else []) + ([OWN_RANGE_NOTE] if own else [])
    title = f"{cfg['name']}: activations per layer — {describe(cfg)}"
    suptitle(fig, title + ("\n(" + "; ".join(notes) + ")" if notes else ""), 10.5)
    fig.tight_layout()
    return fig


@builds_figure
def loss_figure(run_dir, cfg=None, metrics=None):
    """Training loss (raw and moving mean, held-out points) and accuracy; a diverged run is marked where
    its loss became non-finite (``diverged_at_step`` in metrics.json)."""
    run_dir, cfg, metrics = _load(run_dir, cfg, metrics)
    h = _history(run_dir)
    # accuracy where measured: training accuracy also without a held-out set (data.eval_samples: 0)
    accs = [k for k in ("train_acc", "eval_acc") if k in h and np.isfinite(h[k]).any()]
    has_acc = bool(accs)
    fig = figure(11 if has_acc else 6.5, 4.2)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax = axes[0]
    steps, loss = h["step"], h["train_loss"]
    few = len(steps) < 20  # a line through one or two points is invisible: draw the points
    ax.plot(steps, loss, "o-" if few else "-", color="#4C72B0", alpha=0.6 if few else 0.3, lw=0.8, ms=4,
            label="minibatch loss")
    w = smoothing_window(len(loss))
    if w > 1:
        ax.plot(steps, smooth(loss, w), color="#4C72B0", lw=1.8, label=f"minibatch loss ({w}-step mean)")
    if "eval_loss" in h and np.isfinite(h["eval_loss"]).any():
        ok = np.isfinite(h["eval_loss"])
        ax.plot(steps[ok], h["eval_loss"][ok], "o-", color="#DD8452", ms=3.5, lw=1.2, label="held-out loss")
    finite = loss[np.isfinite(loss)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    if (metrics or {}).get("status") == "diverged":
        at = (metrics or {}).get("diverged_at_step") or ((steps[-1] + 1) if len(steps) else 1)
        ax.axvline(at, color="#C44E52", ls="--", lw=1)
        y = finite[-1] if len(finite) else 1.0
        ax.plot([at], [y], marker="X", ms=11, color="#C44E52", mec="black", mew=0.8, clip_on=False, zorder=5,
                label=f"non-finite at step {at}")
        ax.text(at, 0.5, f" non-finite\n at step {at}", color="#C44E52", transform=ax.get_xaxis_transform(),
                fontsize=9, ha="right" if len(steps) and at > steps[0] else "left", va="center")
        ax.set_xlim(min(steps[0], at) - 0.5 if len(steps) else 0, at + max(0.5, 0.03 * at))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[1]
        for key, color, label in (("train_acc", "#55A868", "train (eval mode)"), ("eval_acc", "#DD8452", "held-out")):
            if key not in accs:
                continue
            ok = np.isfinite(h[key])
            ax.plot(steps[ok], h[key][ok], "o-", color=color, ms=3.5, lw=1.2, label=label)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    o = cfg["optimizer"]
    suptitle(fig, f"{cfg['name']}: {describe(cfg)}, optimizer={o['name']} lr={round_sig(o['lr'])}", 10)
    fig.tight_layout()
    return fig


@builds_figure
def gradients_figure(run_dir, cfg=None, metrics=None):
    """Weight-gradient norm per hidden layer at init (and at the last snapshot), and during training."""
    run_dir, cfg, metrics = _load(run_dir, cfg, metrics)
    arrays = read_npz(run_dir / "activations.npz")
    h = _history(run_dir)
    has_curve = h is not None and np.isfinite(h.get("grad_norm", np.array([]))).any()
    fig = figure(11 if has_curve else 6.5, 4.2)
    axes = fig.subplots(1, 2 if has_curve else 1, squeeze=False)[0]
    ax = axes[0]
    g = np.asarray(arrays["grad_norm"], dtype=float)
    layers = np.arange(1, g.shape[1] + 1)
    shown = [(0, "#4C72B0")] + ([(len(g) - 1, "#DD8452")] if len(g) > 1 else [])  # init, and the last snapshot
    positive = np.where(np.isfinite(g) & (g > 0), g, np.nan)
    for k, color in shown:
        label = "at init" if arrays["steps"][k] == 0 else f"after {arrays['steps'][k]} steps"
        if np.isfinite(positive[k]).any():
            ax.plot(layers, positive[k], "o-", color=color, label=label)
        else:  # nothing to draw on a log axis: say so instead of an empty legend entry
            ax.plot([], [], " ", label=f"{label}: every norm is 0 (or not finite)")
    if np.isfinite(positive).any():
        tidy_log_axis(ax, positive)
    else:
        ax.set_yticks([])
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(f"‖∂loss/∂W‖ on {grad_norm_source(cfg)}", fontsize=8)
    ax.set_title("weight-gradient norm per layer")
    ax.set_xticks(layers if len(layers) <= 12 else [i + 1 for i in shown_layers(len(layers))])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="major")
    if has_curve:
        ax = axes[1]
        ok = np.isfinite(h["grad_norm"])
        ax.plot(h["step"][ok], h["grad_norm"][ok], color="#4C72B0", alpha=0.35, lw=0.8, label="per step")
        w = smoothing_window(int(ok.sum()))
        if w > 1:
            ax.plot(h["step"], smooth(h["grad_norm"], w), color="#4C72B0", lw=1.8, label=f"{w}-step mean")
        clip = cfg["train"].get("clip_norm")
        if clip:
            ax.axhline(clip, color="#C44E52", ls="--", lw=1, label=f"clip_norm {clip:g}")
        if (h["grad_norm"][ok] > 0).all():
            tidy_log_axis(ax, np.append(h["grad_norm"][ok], [clip] if clip else []))
        ax.set_xlabel("step")
        ax.set_ylabel("global gradient norm (before clipping)")
        ax.set_title("gradient norm during training")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="major")
    suptitle(fig, f"{cfg['name']}: gradients — {describe(cfg)}", 10)
    fig.tight_layout()
    return fig


def jacobian_text(sv: np.ndarray, summary: dict | None = None, brief: bool = False) -> list[str]:
    """The spectrum's numbers for a panel: count, rank, zeros (stated, not drawn), non-zero spread.
    ``brief``: the three that fit a sweep's small panel (near 1, zeros, spread)."""
    sv = np.asarray(sv, dtype=float)
    rows = sv.reshape(-1, sv.shape[-1]) if sv.ndim else sv.reshape(1, 1)
    ok = nonzero_mask(rows)
    ranks = ok.sum(axis=1)
    nz = rows[ok]
    zero = rows.size - nz.size
    near = f"within 10% of 1: {100 * np.mean(np.abs(rows - 1) <= 0.1):.0f}%"
    spread = f"{np.log10(np.divide(*np.percentile(nz, [95, 5]))):.2g} decades" if len(nz) > 1 else None
    if brief:
        return [near] + ([f"{zero} of {rows.size} zero: not drawn"] if zero else []) + (
            [f"p95/p5: {spread}"] if spread else [])
    lines = [f"{rows.size} singular values from {len(rows)} input{'s' if len(rows) > 1 else ''}"]
    rank = f"{ranks.min()}" if ranks.min() == ranks.max() else f"{ranks.min()}–{ranks.max()}"
    lines.append(f"numerical rank {rank} of {rows.shape[1]}")
    if zero:
        lines.append(f"{zero} zero (≤ {RANK_RTOL:.0e}·max, e.g. dead units): not drawn")
    if summary and summary.get("mean_sq") is not None:
        lines.append(f"mean s² {summary['mean_sq']:.3g}")
    if spread:
        lines.append(f"non-zero p95/p5: {spread}")
    lines.append(near)
    return lines


@builds_figure
def jacobian_figure(run_dir, cfg=None, metrics=None):
    """Histogram of log10 of the non-zero singular values of the input–output Jacobian at init."""
    run_dir, cfg, metrics = _load(run_dir, cfg, metrics)
    sv = np.asarray(read_npz(run_dir / "jacobian.npz")["singular_values"], dtype=float)
    rows = sv.reshape(-1, sv.shape[-1])
    nz = rows[nonzero_mask(rows)]
    fig = figure(7, 4.3)
    ax = fig.subplots()
    logs = np.log10(nz)
    lo = min(float(logs.min()) if len(logs) else -0.5, -0.5)
    hi = max(float(logs.max()) if len(logs) else 0.5, 0.5)
    pad = 0.03 * (hi - lo)
    ax.hist(logs, bins=np.linspace(lo - pad, hi + pad, 41), color="#4C72B0", alpha=0.85)
    ax.axvline(0.0, color="#C44E52", ls="--", lw=1, label="singular value 1 (isometry)")
    ax.text(0.02, 0.97, "\n".join(jacobian_text(sv, (metrics or {}).get("jacobian"))), transform=ax.transAxes,
            va="top", fontsize=8, bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#bbbbbb", alpha=0.9))
    ax.set_xlabel("log10 non-zero singular value of d(last hidden layer)/d(input), float64")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(wrap(f"{cfg['name']}: Jacobian spectrum at init — {describe(cfg)}", 6.5, 10), fontsize=10)
    fig.tight_layout()
    return fig


def plot_run(run_dir, metrics: dict | None = None, cfg=None) -> list[Path]:
    """Draw every figure a run directory has data for and save it as PNG; returns the paths written."""
    run_dir, cfg, metrics = _load(run_dir, cfg, metrics)
    history = _history(run_dir)
    jobs = []
    if (run_dir / "activations.npz").exists():
        jobs += [(activations_figure, "activations.png"), (gradients_figure, "gradients.png")]
    if (run_dir / "jacobian.npz").exists():
        jobs.append((jacobian_figure, "jacobian.png"))
    if history is not None and len(history.get("step", [])):
        jobs.append((loss_figure, "loss.png"))
    written = []
    for make, name in jobs:
        save_png(make(run_dir, cfg, metrics), run_dir / name)
        written.append(run_dir / name)
    return written
