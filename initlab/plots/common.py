"""What every figure shares: a blank Agg figure, atomic PNG saving, which layers to show, smoothing,
and the textbook's row of per-layer histograms."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from initlab.engine.activations import ACTIVATIONS
from initlab.output.files import atomic_write

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def shown_layers(n_layers: int, most: int = MAX_PANELS) -> list[int]:
    """Indices of the layers to draw: all of them, or ``most`` spread evenly (first and last kept)."""
    if n_layers <= most:
        return list(range(n_layers))
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, most)})


def stat_text(snap_layer: dict) -> str:
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
        text = stat_text(st)
        if predicted is not None and predicted[li] is not None:
            text += f"\nmean-field std {predicted[li][1]:.3g}"
        ax.text(0.97, 0.95, text, ha="right", va="top", transform=ax.transAxes, fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", alpha=0.85))
        if predicted is not None and predicted[li] is not None:
            mean_std = predicted[li]
            ax.axvspan(mean_std[0] - mean_std[1], mean_std[0] + mean_std[1], color="#DD8452", alpha=0.18, lw=0)
        ax.tick_params(labelsize=7)
    return ymax


def predicted(metrics, n_layers):
    """Per layer (mean, std) predicted by mean-field theory, from metrics.json, or None."""
    out = []
    for layer in ((metrics or {}).get("layers") or [])[:n_layers]:
        m, s = layer.get("predicted_mean"), layer.get("predicted_std")
        out.append((m, s) if m is not None and s is not None else None)
    out += [None] * (n_layers - len(out))
    return out if any(o is not None for o in out) else None


def clips_zero_spike(cfg: dict) -> bool:
    """Whether histograms clip the first bar: activations with dead units pile up there."""
    return ACTIVATIONS[cfg["model"]["activation"]].has_dead_units


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
