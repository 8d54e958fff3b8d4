"""What every figure shares: a blank Agg figure, atomic PNG saving, which layers to show, smoothing,
and the textbook's row of per-layer histograms."""
from __future__ import annotations

import functools
import io
import textwrap
from pathlib import Path

import numpy as np

from initlab.engine.activations import ACTIVATIONS
from initlab.output.files import atomic_write

MAX_PANELS = 10


# Room above the tallest bar for the statistics box, so it never hides a bar.
HEADROOM = 1.6


# Every axes' title sits at the height the style sets (1.0: just above the axes). matplotlib's
# automatic placement (axes.titley None) measures every tick label of the figure to see whether
# one sits above an axes; none of initlab's figures puts any there, so the result is the same
# pixels, and the measuring was a seventh of drawing the weight-init sweep.png (0.33 → 0.28 s).
TITLE_RC = {"axes.titley": 1.0}


def builds_figure(make):
    """For a function that returns a Figure: its axes are created with :data:`TITLE_RC`."""

    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(TITLE_RC):
            return make(*args, **kwargs)

    return wrapper


def figure(width, height):
    """A blank matplotlib Figure on the Agg canvas (no pyplot state), ``width`` × ``height`` inches at 100 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` (existing line breaks kept)."""
    per_line = max(20, int(width_in * 72 / (0.56 * fontsize)))  # an average glyph is ~0.56 em wide
    return "\n".join(textwrap.fill(line, per_line) if line else line for line in text.split("\n"))


def grad_norm_source(cfg: dict) -> str:
    """What the recorded ``grad_norm`` was measured on (``cfg``: a run's config as a mapping; see record.grad_from).
    A saved config lists every key, so one without ``grad_from`` was written before it existed: the probe's."""
    record, train = cfg.get("record", {}), cfg.get("train", {})
    if record.get("grad_from", "probe") == "step":
        return f"a training minibatch of {train.get('batch_size', 100)}"
    k = record.get("grad_samples")
    return "the probe batch" if k is None or k >= record.get("samples", 1000) else f"the first {k} probe inputs"


def suptitle(fig, text: str, fontsize: float = 10):
    """The figure's title, wrapped to its width instead of running off both sides."""
    return fig.suptitle(wrap(text, fig.get_figwidth() * 0.96, fontsize), fontsize=fontsize)


def round_sig(x, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits for titles (0.0857696 → 0.0858)."""
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def panel_grid(n_panels: int, most_per_row: int = 5) -> tuple[int, int]:
    """(rows, columns) for ``n_panels`` per-layer panels: deep nets wrap into rows of at most 5."""
    cols = n_panels if n_panels <= most_per_row else -(-n_panels // -(-n_panels // most_per_row))
    return -(-n_panels // cols), cols


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


OVERLAY = "#DD8452"


def own_ranges(snap, layers) -> bool:
    """Whether the layers' histograms were binned over different ranges (see the recorder)."""
    edges = [snap.data["act_edges"][li] for li in layers]
    fin = [e for e in edges if np.all(np.isfinite(e))]
    return len(fin) > 1 and any(not np.allclose(e[[0, -1]], fin[0][[0, -1]], rtol=1e-9, atol=0) for e in fin)


def draw_histogram_row(axes, snap, layers, predicted=None, clip_zero_spike=False, titles=True):
    """One row of the textbook's figure: a histogram per layer, titled ``k-layer``.

    The mean-field prediction, when given, is a thin bracket at predicted mean ± std near the foot of
    each panel (gid ``"meanfield"``): a line, not a shaded region, so it tints no empty bins. When the
    recorder binned each layer over its own range, each panel's x label says so.
    """
    from matplotlib.ticker import MaxNLocator

    ymax = 0
    own = own_ranges(snap, layers)
    for ax, li in zip(axes, layers):
        counts = snap.data["act_counts"][li]
        edges = snap.data["act_edges"][li]
        st = snap.layer(li)
        spike = False
        if np.all(np.isfinite(edges)):
            ax.stairs(counts, edges, fill=True, color="#4C72B0", alpha=0.85)
            ax.set_xlim(edges[0], edges[-1])
            shown = counts[1:] if (clip_zero_spike and st["dead_frac"] and len(counts) > 1) else counts
            ymax = max(ymax, int(shown.max()) if len(shown) else 0)
            spike = bool(clip_zero_spike and st["dead_frac"] and counts[0] > (shown.max() if len(shown) else 0))
            if spike:  # below the statistics box (top right), so neither hides the other
                ax.annotate(f"◀ first bar: {counts[0]} (clipped)", xy=(edges[1], 0.4), xycoords=("data", "axes fraction"),
                            xytext=(2, 0), textcoords="offset points", fontsize=6.5, color="#8B0000", va="center")
            if own:
                ax.set_xlabel("own x-range", fontsize=7, color="#8B0000", labelpad=1)
        else:
            ax.text(0.5, 0.5, "non-finite", ha="center", va="center", transform=ax.transAxes)
        if titles:
            ax.set_title(f"{li + 1}-layer", fontsize=10)
        text = stat_text(st)
        if predicted is not None and predicted[li] is not None:
            text += f"\nmean-field std {predicted[li][1]:.3g}"
        ax.text(0.97, 0.95, text, ha="right", va="top", transform=ax.transAxes, fontsize=7,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", alpha=0.85))
        if predicted is not None and predicted[li] is not None:
            m, s = predicted[li]
            foot = ax.get_xaxis_transform()  # x in data, y in axes fraction
            ax.plot([m - s, m + s], [0.035, 0.035], transform=foot, color=OVERLAY, lw=1.3, solid_capstyle="butt",
                    marker="|", ms=6, mew=1.3, gid="meanfield", zorder=4)
            ax.plot([m], [0.035], transform=foot, color=OVERLAY, marker="o", ms=3, gid="meanfield", zorder=4)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))  # few ticks: neighbouring panels' labels never touch
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)
        ax.xaxis.get_offset_text().set_fontsize(7)
    return ymax


OVERLAY_NOTE = "orange bracket: mean-field prediction, mean ± std"
OWN_RANGE_NOTE = "each panel has its own x-range: the spread differs by more than 10× between layers"


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


def tidy_log_axis(ax, values) -> None:
    """A log y axis spanning at least one decade (a 1.5× change must not look like a cliff); minor
    ticks unlabelled when two or more powers of ten are labelled anyway."""
    from matplotlib.ticker import NullFormatter

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    ax.set_yscale("log")
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    if hi / lo < 10:
        centre = np.sqrt(lo * hi)
        lo, hi = centre / np.sqrt(10) / 1.15, centre * np.sqrt(10) * 1.15
        ax.set_ylim(lo, hi)
    if np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) >= 1:
        ax.yaxis.set_minor_formatter(NullFormatter())


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
