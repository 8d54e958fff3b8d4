"""``sweep.png`` for training sweeps: the points' curves overlaid.

The loss curves (legend = each point's overrides), the accuracy or the gradient norm during training,
and per-layer activation std and gradient norm at initialization.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

from initlab.plots.common import (
    figure,
    grad_norm_source,
    shown_layers,
    smooth,
    smoothing_window,
    suptitle,
    tidy_log_axis,
)

COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def _two_axis_palette(points, axes) -> Optional[dict]:
    """Colours for a grid of exactly two axes (seeds aside): a hue per value of the first axis and a
    shade, dark to light, per value of the second, so that 12 points read as 3 × 4 and not as 12
    unrelated colours. None when the grid is not two axes or a point matches no value."""
    import json

    from matplotlib.colors import to_rgb

    from initlab.errors import ConfigError
    from initlab.keys import axis_leaves

    axes = [a for a in axes or [] if isinstance(a, dict) and a.get("key") != "seed" and len(a.get("values") or []) > 1]
    if len(axes) != 2 or len(axes[0]["values"]) > len(COLORS):
        return None

    def canon(items):
        return {k: json.dumps(v, sort_keys=True) for k, v in items.items()}

    try:
        options = [[canon(axis_leaves(a["key"], v)) for v in a["values"]] for a in axes]
    except ConfigError:  # a hand-edited manifest: the ordinary palette
        return None
    out = {}
    for p in points:
        mine = canon(p.overrides)
        where = []
        for opts in options:
            hits = [j for j, o in enumerate(opts) if o.items() <= mine.items()]
            if len(hits) != 1:
                return None
            where.append(hits[0])
        base = np.array(to_rgb(COLORS[where[0]]))
        n = len(options[1])
        t = where[1] / (n - 1)  # 0: the first value, darkest; 1: the last, lightest
        out[p.index] = tuple(base * (1 - 0.35 * (1 - t)) if t < 0.5 else base + (1 - base) * 0.6 * (t - 0.5) * 2)
    return out


def _groups(points, axes=None):
    """Colour per point; repetitions over ``seed`` share their point's colour (and one legend entry)."""
    keys, colors, first = {}, {}, set()
    for p in points:
        base = ", ".join(part for part in p.label.split(", ") if not part.startswith("seed=")) or p.label
        if base not in keys:
            keys[base] = len(keys)
            first.add(p.index)
        p.group = base
    two = _two_axis_palette(points, axes) if len(keys) > 4 else None
    if two is not None:
        return two, first
    if len(keys) <= len(COLORS):
        palette = COLORS
    else:  # many points: an ordered colour map (the grid's order), not a repeating palette
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        palette = [cmap(0.92 * i / (len(keys) - 1)) for i in range(len(keys))]
    for p in points:
        colors[p.index] = palette[keys[p.group]]
    return colors, first


def overlay(points, title, axes=None):
    """Training sweeps: loss curves overlaid, accuracy (or gradient norm), and per-layer statistics at init.
    ``axes``: the manifest's axes; a grid of two gets a hue per value of one and a shade per value of the other."""
    fig = figure(13, 8.2)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.35, 1], width_ratios=[1.45, 1])
    ax_loss = fig.add_subplot(gs[0, 0])
    ax_side = fig.add_subplot(gs[0, 1])
    ax_std = fig.add_subplot(gs[1, 0])
    ax_grad = fig.add_subplot(gs[1, 1])
    colors, first = _groups(points, axes)
    classification = any(p.history is not None and np.isfinite(p.history.get("train_acc", np.array([]))).any()
                         for p in points)
    _loss_panel(ax_loss, points, colors, first)
    banded = set()
    if len(first) < len(points) and not classification:
        banded = _draw_bands(ax_side, points, colors, "grad_norm")
    for p in points:
        if p.history is not None and len(p.history["step"]) and p.group not in banded:
            _side_curves(ax_side, p, colors[p.index], classification)
    _side_labels(ax_side, points, classification)
    _per_layer(ax_std, points, colors, "act_std", "activation std at initialization, per hidden layer", "std of the layer's output")
    sources = {grad_norm_source(p.cfg) for p in points}
    _per_layer(ax_grad, points, colors, "grad_norm", "weight-gradient norm at initialization, per hidden layer",
               f"‖∂loss/∂W‖ on {sources.pop()}" if len(sources) == 1 else "‖∂loss/∂W‖ (see record.grad_from)")
    lines = suptitle(fig, title, 11).get_text().count("\n") + 1
    fig.subplots_adjust(left=0.07, right=0.985, top=0.95 - 0.03 * lines, bottom=0.07, wspace=0.22, hspace=0.32)
    return fig


def _loss_panel(ax, points, colors, first) -> None:
    """Every point's training loss (faint raw, solid moving mean); diverged points end in a marker."""
    repeated = len(first) < len(points)
    lo, hi = math.inf, 0.0
    slo, shi = math.inf, 0.0  # the range of the solid (moving-mean) curves: what the reader compares
    marks = []  # (step, last finite loss, colour) of diverged points
    # The axis range follows the points that did not diverge, so a blow-up does not flatten them.
    stable = any(p.status != "diverged" and p.history is not None and np.isfinite(p.history["train_loss"]).any()
                 for p in points)
    banded = _draw_bands(ax, points, colors, "train_loss") if repeated else set()
    for p in points:
        h, color = p.history, colors[p.index]
        label = (p.group if repeated else p.legend) if p.index in first else None
        if h is None or not len(h["step"]):
            ax.plot([], [], color=color, label=label)
            continue
        steps, loss = h["step"], h["train_loss"]
        w = smoothing_window(len(loss))
        if p.group not in banded:
            solid = smooth(loss, w) if w > 1 else loss
            ax.plot(steps, loss, color=color, alpha=0.22, lw=0.7)
            ax.plot(steps, solid, color=color, lw=1.9, label=label)
            ok = np.asarray(solid)[np.isfinite(solid)]
            if len(ok) and p.status != "diverged":
                slo, shi = min(slo, float(ok.min())), max(shi, float(ok.max()))
        elif p.index in first:
            ax.plot([], [], color=color, lw=1.9, label=f"{label} (median of {banded[p.group]} seeds, band: range)")
        finite = loss[np.isfinite(loss)]
        if len(finite) and (p.status != "diverged" or not stable):
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if p.status == "diverged":
            ok = np.flatnonzero(np.isfinite(loss))
            x = steps[ok[-1]] if len(ok) else steps[0]
            marks.append((x, loss[ok[-1]] if len(ok) else np.nan, color))
            ax.axvline(steps[-1], color=color, ls=":", lw=1)
    # A log axis when the moving means fall over 30x (their late phase is then what the reader
    # compares: MNIST optimizers at 0.05-0.2), else linear. Judged on the means, not the raw
    # minibatch losses, whose few near-0 values at batch 2 would make every comparison a log plot.
    smoothed = 0 < slo < math.inf and shi > 0
    log = (shi / slo > 30) if smoothed else (hi > 0 and lo > 0 and hi / lo > 100)
    if log:
        ax.set_yscale("log")
    elif smoothed and not marks and hi - lo > 1.5 * (shi - slo):
        pad = 0.08 * (shi - slo or 1)  # the faint raw curves may leave the axes; the means stay whole
        ax.set_ylim(max(min(lo, slo - pad), 0.0) if lo >= 0 else slo - pad, shi + pad)
    if marks and stable and math.isfinite(lo):
        top = hi * 3 if log else hi + 0.08 * (hi - lo or 1)
        bottom = lo / 3 if log else lo - 0.05 * (hi - lo or 1)
        ax.set_ylim(bottom, top)
        for x, y, color in marks:
            beyond = not np.isfinite(y) or y > top
            ax.plot([x], [min(y, top) if np.isfinite(y) else top], marker="^" if beyond else "X", ms=11,
                    color=color, mec="black", mew=0.8, zorder=5, clip_on=False)
    else:
        for x, y, color in marks:
            ax.plot([x], [y], marker="X", ms=11, color=color, mec="black", mew=0.8, zorder=5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (minibatch; faint: raw, solid: moving mean)")
    ax.set_title("training loss", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    many = len(first) > 6  # two columns in a smaller font, so the legend does not cover the curves
    ax.legend(fontsize=7.5 if many else 9, ncol=2 if many else 1, loc="best", title="point" if len(first) > 1 else None,
              title_fontsize=9)
    if any(p.status == "diverged" for p in points):
        ax.text(0.99, 0.01, "✕ last finite loss before it became non-finite (▲ off the scale)", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="#444444")


def _draw_bands(ax, points, colors, key) -> dict:
    """Points repeated over seeds: the median of their moving means and a band from the lowest to the
    highest, one per group (N faint lines per point would hide what the seeds agree on).
    Returns {group: number of seeds} for the groups drawn this way."""
    groups = {}
    for p in points:
        if p.history is not None and len(p.history["step"]) and p.status != "diverged":
            groups.setdefault(p.group, []).append(p)
    drawn = {}
    for group, members in groups.items():
        if len(members) < 2 or len({len(m.history["step"]) for m in members}) != 1:
            continue
        steps = members[0].history["step"]
        w = smoothing_window(len(steps))
        curves = np.array([smooth(m.history[key], w) if w > 1 else m.history[key] for m in members], dtype=float)
        color = colors[members[0].index]
        with np.errstate(all="ignore"):
            ax.fill_between(steps, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.2, lw=0)
            ax.plot(steps, np.nanmedian(curves, axis=0), color=color, lw=1.9)
        drawn[group] = len(members)
    return drawn


def _side_curves(ax, p, color, classification: bool) -> None:
    """One point's accuracies (classification) or global gradient norm (otherwise)."""
    h = p.history
    steps = h["step"]
    if classification:
        for key, style in (("train_acc", "-o"), ("eval_acc", "--s")):
            ok = np.isfinite(h.get(key, np.full(len(steps), np.nan)))
            if ok.any():
                ax.plot(steps[ok], h[key][ok], style, color=color, ms=3, lw=1.3)
        return
    g = h["grad_norm"]
    ok = np.isfinite(g)
    ax.plot(steps[ok], g[ok], color=color, alpha=0.25, lw=0.7)
    wg = smoothing_window(int(ok.sum()))
    ax.plot(steps, smooth(g, wg) if wg > 1 else g, color=color, lw=1.6)
    if p.status == "diverged" and not np.isfinite(g[-1]):
        x = steps[ok][-1] if ok.any() else steps[0]
        ax.plot([x], [g[ok][-1] if ok.any() else np.nan], marker="X", ms=10, color=color, mec="black", mew=0.8)


def _side_labels(ax, points, classification: bool) -> None:
    if classification:
        from matplotlib.lines import Line2D

        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy", fontsize=11)
        ax.legend([Line2D([], [], color="#444444", marker="o", ms=3), Line2D([], [], color="#444444", ls="--", marker="s", ms=3)],
                  ["training samples (eval mode)", "held-out samples"], fontsize=8, loc="best")
    else:
        ax.set_yscale("log")
        clips = {p.cfg["train"].get("clip_norm") for p in points} - {None}
        for c in sorted(clips):
            ax.axhline(c, color="black", ls="--", lw=0.9)
            ax.annotate(f"clip_norm {c:g}", xy=(1, c), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", fontsize=8)
        ax.set_ylabel("global gradient norm (before clipping)")
        ax.set_title("gradient norm during training", fontsize=11)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3, which="both")


def _per_layer(ax, points, colors, key, title, ylabel) -> None:
    drawn = False
    n_max = 1
    arrays = [np.asarray(p.snaps[0].data[key], dtype=float) for p in points]
    same = len(points) > 1 and all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0], equal_nan=True)
                                   for a in arrays)
    if same:  # one line, not N on top of each other in the last point's colour
        title += "\n(identical for every point)"
        points = points[:1]
        colors = {points[0].index: "#444444"}
    zeros = []  # (point, layers at exactly 0): a log axis cannot show them, so they are said in words
    groups = {}
    for p in points:
        groups.setdefault(getattr(p, "group", p.index), []).append(p)
    if any(len(g) > 1 for g in groups.values()):  # --seeds: a median and a band per point, not N lines
        n_max, drawn = _per_layer_bands(ax, groups, colors, key)
        title += f"\n(median of {max(len(g) for g in groups.values())} seeds, band: range)"
        points = []
    for p in points:
        raw = np.asarray(p.snaps[0].data[key], dtype=float)
        vals = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)
        layers = np.arange(1, len(vals) + 1)
        n_max = max(n_max, len(vals))
        if np.count_nonzero(raw == 0):
            zeros.append((p, int(np.count_nonzero(raw == 0)), len(raw)))
        if np.isfinite(vals).any():
            ax.plot(layers, vals, "o-", color=colors[p.index], ms=4, lw=1.4)
            drawn = True
    if drawn:
        tidy_log_axis(ax, np.concatenate([np.asarray(p.snaps[0].data[key], dtype=float).ravel()
                                          for g in groups.values() for p in g]))
    else:
        why = "0 in every layer" if zeros and all(n == total for _, n, total in zeros) else "not finite (overflow)"
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="#C44E52")
        ax.set_yticks([])
    if drawn and zeros:  # a legend finds free space; text placed by hand would sit on the lines
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colors[p.index], marker="o", ls="none", ms=4) for p, _, _ in zeros]
        labels = [f"{p.label}: 0 in {'every layer' if n == total else f'{n} of {total} layers'}"
                  for p, n, total in zeros]
        ax.legend(handles, labels, fontsize=7.5, loc="best", framealpha=0.9,
                  title="exactly 0 at init (not drawn on a log axis)", title_fontsize=7.5)
    ax.set_xticks(range(1, n_max + 1) if n_max <= 12 else [i + 1 for i in shown_layers(n_max)])
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10.5)
    ax.grid(alpha=0.3, which="both")


def _per_layer_bands(ax, groups, colors, key) -> tuple[int, bool]:
    """Per group of repeated points (seeds): the median over them per layer, and a band from the least
    to the greatest. Values at 0 or non-finite are left out (a log axis); returns (layers, drawn)."""
    n_max, drawn = 1, False
    for members in groups.values():
        rows = [np.asarray(p.snaps[0].data[key], dtype=float) for p in members]
        n = min(len(r) for r in rows)
        n_max = max(n_max, n)
        vals = np.stack([r[:n] for r in rows])
        vals = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
        ok = np.isfinite(vals).any(axis=0)
        if not ok.any():
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN layer: left out below
            med, lo, hi = np.nanmedian(vals, axis=0), np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
        layers = np.arange(1, n + 1)
        color = colors[members[0].index]
        ax.fill_between(layers[ok], lo[ok], hi[ok], color=color, alpha=0.18, lw=0)
        ax.plot(layers[ok], med[ok], "o-", color=color, ms=4, lw=1.6)
        drawn = True
    return n_max, drawn
