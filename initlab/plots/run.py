"""Figures of a run, drawn only from the files in its directory (so ``initlab plot`` can redraw them).

matplotlib's object API with the Agg canvas; imported lazily so that the CLI starts fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from initlab.output.files import read_history, read_json, read_npz
from initlab.plots.common import (
    HEADROOM,
    clips_zero_spike,
    draw_histogram_row,
    figure,
    predicted,
    save_png,
    shown_layers,
    smooth,
    smoothing_window,
)
from initlab.recorder import unstack


def _describe(cfg: dict) -> str:
    m, i = cfg["model"], cfg["init"]
    scheme = i["scheme"] + (f" std={i['std']:g}" if i.get("std") is not None else "")
    if i.get("gain") not in (None, 1, 1.0):
        scheme += f" gain={i['gain']}"
    width = m["width"] if not isinstance(m["width"], list) else "×".join(map(str, m["width"]))
    extra = " +BN" if m.get("batchnorm") else (" +LN" if m.get("layernorm") else "")
    return f"{m['depth']}×{width} {m['activation']}{extra}, init {scheme}"


def plot_activations(run_dir: Path, cfg: dict, metrics: dict | None, arrays: dict) -> None:
    snaps = unstack(arrays)
    rows = [snaps[0]] + ([snaps[-1]] if len(snaps) > 1 else [])
    n_layers = len(snaps[0].data["act_std"])
    layers = shown_layers(n_layers)
    ncol = len(layers)
    fig = figure(max(2.0 * ncol, 6), 2.4 * len(rows) + 0.9)
    axes = fig.subplots(len(rows), ncol, squeeze=False, sharey=True)
    clip = clips_zero_spike(cfg)
    expected = predicted(metrics, n_layers)
    ymax = 0
    for r, snap in enumerate(rows):
        ymax = max(ymax, draw_histogram_row(axes[r], snap, layers, expected if r == 0 else None, clip))
        label = "at init" if snap.step == 0 else f"after {snap.step} steps"
        axes[r][0].set_ylabel(f"{label}\ncount", fontsize=9)
    if ymax:
        axes[0][0].set_ylim(0, ymax * HEADROOM)
    title = f"{cfg['name']}: activations per layer — {_describe(cfg)}"
    if expected is not None:
        title += "  (shaded: mean-field mean ± std)"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_png(fig, run_dir / "activations.png")


def plot_loss(run_dir: Path, cfg: dict, metrics: dict | None, h: dict) -> None:
    has_acc = "eval_acc" in h and np.isfinite(h["eval_acc"]).any()
    fig = figure(11 if has_acc else 6.5, 4)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax = axes[0]
    steps, loss = h["step"], h["train_loss"]
    ax.plot(steps, loss, color="#4C72B0", alpha=0.3, lw=0.8, label="minibatch loss")
    w = smoothing_window(len(loss))
    if w > 1:
        ax.plot(steps, smooth(loss, w), color="#4C72B0", lw=1.8, label=f"minibatch loss ({w}-step mean)")
    if "eval_loss" in h and np.isfinite(h["eval_loss"]).any():
        ok = np.isfinite(h["eval_loss"])
        ax.plot(steps[ok], h["eval_loss"][ok], "o-", color="#DD8452", ms=3.5, lw=1.2, label="held-out loss")
    finite = loss[np.isfinite(loss)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    status = (metrics or {}).get("status")
    if status == "diverged":
        last = steps[-1] if len(steps) else 0
        ax.axvline(last, color="#C44E52", ls="--", lw=1)
        ax.text(last, 0.5, " diverged", color="#C44E52", transform=ax.get_xaxis_transform(), fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[1]
        for key, color, label in (("train_acc", "#55A868", "train (eval mode)"), ("eval_acc", "#DD8452", "held-out")):
            ok = np.isfinite(h[key])
            ax.plot(steps[ok], h[key][ok], "o-", color=color, ms=3.5, lw=1.2, label=label)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{cfg['name']}: {_describe(cfg)}, {cfg['optimizer']['name']} lr={cfg['optimizer']['lr']:g}", fontsize=10)
    fig.tight_layout()
    save_png(fig, run_dir / "loss.png")


def plot_gradients(run_dir: Path, cfg: dict, metrics: dict | None, arrays: dict, h: dict | None) -> None:
    has_curve = h is not None and np.isfinite(h.get("grad_norm", np.array([]))).any()
    fig = figure(11 if has_curve else 6.5, 4)
    axes = fig.subplots(1, 2 if has_curve else 1, squeeze=False)[0]
    ax = axes[0]
    g = arrays["grad_norm"]
    layers = np.arange(1, g.shape[1] + 1)
    shown = [(0, "#4C72B0")] + ([(len(g) - 1, "#DD8452")] if len(g) > 1 else [])  # init, and the last snapshot
    for k, color in shown:
        label = "at init" if arrays["steps"][k] == 0 else f"after {arrays['steps'][k]} steps"
        ax.plot(layers, np.where(g[k] > 0, g[k], np.nan), "o-", color=color, label=label)
    if np.nanmax(np.where(g > 0, g, np.nan), initial=0) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("‖∂loss/∂W‖ on the probe batch")
    ax.set_title("weight-gradient norm per layer")
    if len(layers) <= 12:
        ax.set_xticks(layers)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
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
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("global gradient norm (before clipping)")
        ax.set_title("gradient norm during training")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{cfg['name']}: gradients — {_describe(cfg)}", fontsize=10)
    fig.tight_layout()
    save_png(fig, run_dir / "gradients.png")


def plot_jacobian(run_dir: Path, cfg: dict, metrics: dict | None = None) -> None:
    """Histogram of log10 singular values of the input–output Jacobian at init (dynamical isometry)."""
    sv = read_npz(run_dir / "jacobian.npz")["singular_values"].ravel()
    fig = figure(6.5, 4)
    ax = fig.subplots()
    tiny = np.finfo(np.float64).tiny
    logs = np.log10(np.maximum(sv, tiny))
    lo, hi = min(logs.min(), -0.5), max(logs.max(), 0.5)
    ax.hist(logs, bins=np.linspace(lo, hi, 41), color="#4C72B0", alpha=0.85)
    ax.axvline(0.0, color="#C44E52", ls="--", lw=1, label="singular value 1 (isometry)")
    summary = (metrics or {}).get("jacobian") or {}
    lines = [f"{len(sv)} singular values from {summary.get('n_inputs', '?')} inputs"]
    if summary.get("mean_sq") is not None:
        lines.append(f"mean s² {summary['mean_sq']:.3g}")
    if summary.get("log10_spread_90") is not None:
        lines.append(f"p95/p5 spread: {summary['log10_spread_90']:.2g} decades")
    if summary.get("frac_within_10pct") is not None:
        lines.append(f"within 10% of 1: {100 * summary['frac_within_10pct']:.0f}%")
    ax.text(0.02, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=8,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#bbbbbb", alpha=0.9))
    ax.set_xlabel("log10 singular value of d(last hidden layer)/d(input)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"{cfg['name']}: Jacobian spectrum at init — {_describe(cfg)}", fontsize=10)
    fig.tight_layout()
    save_png(fig, run_dir / "jacobian.png")


def plot_run(run_dir, metrics: dict | None = None, cfg=None) -> list[Path]:
    """Draw every figure a run directory has data for; returns the paths written."""
    import yaml

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    elif not isinstance(cfg, dict):
        cfg = cfg.to_dict()
    if metrics is None and (run_dir / "metrics.json").exists():
        metrics = read_json(run_dir / "metrics.json")
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else None
    written = []
    if (run_dir / "activations.npz").exists():
        arrays = read_npz(run_dir / "activations.npz")
        plot_activations(run_dir, cfg, metrics, arrays)
        plot_gradients(run_dir, cfg, metrics, arrays, history)
        written += [run_dir / "activations.png", run_dir / "gradients.png"]
    if (run_dir / "jacobian.npz").exists():
        plot_jacobian(run_dir, cfg, metrics)
        written.append(run_dir / "jacobian.png")
    if history is not None and len(history.get("step", [])):
        plot_loss(run_dir, cfg, metrics, history)
        written.append(run_dir / "loss.png")
    return written
