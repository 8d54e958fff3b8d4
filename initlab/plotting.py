"""Figures of a run, drawn only from the files in its directory (so ``initlab plot`` can redraw them).

matplotlib's object API with the Agg canvas; imported lazily so that the CLI starts fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from initlab.output import read_history, read_json, read_npz
from initlab.recorder import unstack

MAX_PANELS = 10
# Room above the tallest bar for the statistics box, so it never hides a bar.
HEADROOM = 1.6


def figure(width, height):
    """A blank matplotlib Figure on the Agg canvas (no pyplot state), ``width`` × ``height`` inches at 100 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    from initlab.output import atomic_write
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def shown_layers(n_layers: int, most: int = MAX_PANELS) -> list[int]:
    """Indices of the layers to draw: all of them, or ``most`` spread evenly (first and last kept)."""
    if n_layers <= most:
        return list(range(n_layers))
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, most)})


def _describe(cfg: dict) -> str:
    m, i = cfg["model"], cfg["init"]
    scheme = i["scheme"] + (f" std={i['std']:g}" if i.get("std") is not None else "")
    if i.get("gain") not in (None, 1, 1.0):
        scheme += f" gain={i['gain']}"
    width = m["width"] if not isinstance(m["width"], list) else "×".join(map(str, m["width"]))
    extra = " +BN" if m.get("batchnorm") else (" +LN" if m.get("layernorm") else "")
    return f"{m['depth']}×{width} {m['activation']}{extra}, init {scheme}"


def _stat_text(snap_layer: dict) -> str:
    lines = [f"std {snap_layer['std']:.3g}" if snap_layer["std"] is not None else "std n/a"]
    if snap_layer["saturated_frac"] is not None:
        lines.append(f"saturated {100 * snap_layer['saturated_frac']:.0f}%")
    if snap_layer["dead_frac"] is not None:
        lines.append(f"zero {100 * snap_layer['dead_frac']:.0f}%")
    if snap_layer.get("unit_std") == 0.0:
        lines.append("all units identical")
    return "\n".join(lines)


def draw_histogram_row(axes, snap, layers, predicted=None, clip_zero_spike=False):
    """One row of the textbook's figure: a histogram per layer, titled ``k-layer``."""
    ymax = 0
    for ax, li in zip(axes, layers):
        counts = snap.data["act_counts"][li]
        edges = snap.data["act_edges"][li]
        st = snap.layer(li)
        if np.all(np.isfinite(edges)):
            ax.stairs(counts, edges, fill=True, color="#4C72B0", alpha=0.85)
            ax.set_xlim(edges[0], edges[-1])
            shown = counts[1:] if (clip_zero_spike and st["dead_frac"] and len(counts) > 1) else counts
            ymax = max(ymax, int(shown.max()) if len(shown) else 0)
            if clip_zero_spike and st["dead_frac"] and counts[0] > (shown.max() if len(shown) else 0):
                ax.annotate(f"◀ first bar: {counts[0]}\n   (clipped)", xy=(edges[1], 0.5), xycoords=("data", "axes fraction"),
                            xytext=(2, 0), textcoords="offset points", fontsize=7, color="#8B0000", va="center")
        else:
            ax.text(0.5, 0.5, "non-finite", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{li + 1}-layer", fontsize=10)
        text = _stat_text(st)
        if predicted is not None and predicted[li] is not None:
            text += f"\nmean-field std {predicted[li][1]:.3g}"
        ax.text(0.97, 0.95, text, ha="right", va="top", transform=ax.transAxes, fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", alpha=0.85))
        if predicted is not None and predicted[li] is not None:
            mean_std = predicted[li]
            ax.axvspan(mean_std[0] - mean_std[1], mean_std[0] + mean_std[1], color="#DD8452", alpha=0.18, lw=0)
        ax.tick_params(labelsize=7)
    return ymax


def plot_activations(run_dir: Path, cfg: dict, metrics: dict | None, arrays: dict) -> None:
    snaps = unstack(arrays)
    rows = [snaps[0]] + ([snaps[-1]] if len(snaps) > 1 else [])
    n_layers = len(snaps[0].data["act_std"])
    layers = shown_layers(n_layers)
    ncol = len(layers)
    fig = figure(max(2.0 * ncol, 6), 2.4 * len(rows) + 0.9)
    axes = fig.subplots(len(rows), ncol, squeeze=False, sharey=True)
    clip = cfg["model"]["activation"] in ("relu", "leaky_relu")
    predicted = _predicted(metrics, n_layers)
    ymax = 0
    for r, snap in enumerate(rows):
        ymax = max(ymax, draw_histogram_row(axes[r], snap, layers, predicted if r == 0 else None, clip))
        label = "at init" if snap.step == 0 else f"after {snap.step} steps"
        axes[r][0].set_ylabel(f"{label}\ncount", fontsize=9)
    if ymax:
        axes[0][0].set_ylim(0, ymax * HEADROOM)
    title = f"{cfg['name']}: activations per layer — {_describe(cfg)}"
    if predicted is not None:
        title += "  (shaded: mean-field mean ± std)"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_png(fig, run_dir / "activations.png")


def _predicted(metrics, n_layers):
    if not metrics or not metrics.get("layers"):
        return None
    out = []
    for layer in metrics["layers"][:n_layers]:
        m, s = layer.get("predicted_mean"), layer.get("predicted_std")
        out.append((m, s) if m is not None and s is not None else None)
    return out if any(o is not None for o in out) else None


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores NaN (the first values average what exists)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    ok = np.isfinite(y)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    lo = np.maximum(np.arange(1, len(y) + 1) - window, 0)
    hi = np.arange(1, len(y) + 1)
    cnt = k[hi] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[hi] - c[lo]) / np.maximum(cnt, 1), np.nan)


def smoothing_window(n: int) -> int:
    return max(1, min(50, n // 20))


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
