"""``sweep.png`` for one many-valued axis × one true/false axis (the textbook's batch-norm grid).

Small multiples: one panel per value of the many-valued axis, true solid and false dashed.
"""
from __future__ import annotations

import math

import numpy as np

from initlab.plots.common import figure, smooth, smoothing_window, suptitle


def bool_grid(manifest):
    """``(many-valued axis, bool axis)`` positions when the grid is exactly that (seeds aside), else None."""
    axes = [a for a in manifest.get("axes") or [] if a["key"] != "seed"]
    if len(axes) != 2:
        return None
    for many, flag in ((0, 1), (1, 0)):
        if sorted(map(repr, axes[flag]["values"])) == ["False", "True"] and len(axes[many]["values"]) >= 3:
            return {"axes": manifest["axes"], "many": manifest["axes"].index(axes[many]),
                    "flag": manifest["axes"].index(axes[flag])}
    return None


def _coords(index, axes):
    """The value position along each axis of point ``index`` (points are the axes' product, last fastest)."""
    out = []
    for a in reversed(axes):
        n = len(a["values"])
        out.append(index % n)
        index //= n
    return out[::-1]


def _value_title(axis, value) -> str:
    from initlab.keys import flatten, format_value

    flat = flatten(axis["key"], value)
    every = [flatten(axis["key"], v) for v in axis["values"]]
    keys = [k for k in flat if len({repr(e.get(k)) for e in every}) > 1] or list(flat)
    def shown(v):  # titles are read, not parsed: 0.0857696 → 0.0858 (the manifest keeps the exact value)
        return f"{v:.3g}" if isinstance(v, float) else format_value(v)

    return ", ".join(f"{k.rsplit('.', 1)[-1]}={shown(flat[k])}" for k in keys)


def small_multiples(points, grid, title):
    axes_def = grid["axes"]
    many, flag = axes_def[grid["many"]], axes_def[grid["flag"]]
    n = len(many["values"])
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    fig = figure(3.0 * ncol + 0.4, 2.45 * nrow + 1.3)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    classification = any(p.history is not None and np.isfinite(p.history.get("train_acc", np.array([]))).any()
                         for p in points)
    flag_name = flag["key"].rsplit(".", 1)[-1]
    for p in points:
        c = _coords(p.index, axes_def)
        ax = axes.flat[c[grid["many"]]]
        on = bool(flag["values"][c[grid["flag"]]])
        h = p.history
        if h is None or not len(h["step"]):
            continue
        style = dict(color="#4C72B0", ls="-", lw=1.8) if on else dict(color="#DD8452", ls="--", lw=1.5)
        if classification:
            ok = np.isfinite(h["train_acc"])
            ax.plot(h["step"][ok], h["train_acc"][ok], **style)
        else:
            w = smoothing_window(len(h["train_loss"]))
            ax.plot(h["step"], smooth(h["train_loss"], w), **style)
        if p.status == "diverged":
            ax.text(0.03, 0.9 if on else 0.78, f"{flag_name}={'true' if on else 'false'}: diverged",
                    transform=ax.transAxes, fontsize=7, color=style["color"])
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        ax.set_title(_value_title(many, many["values"][i]), fontsize=9)
        ax.grid(alpha=0.3)
        if classification:
            ax.set_ylim(0, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    for row in axes:
        row[0].set_ylabel("train accuracy" if classification else "training loss", fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="#4C72B0", ls="-", lw=1.8), Line2D([], [], color="#DD8452", ls="--", lw=1.5)]
    height = fig.get_figheight()
    extra = 0.17 * suptitle(fig, title, 10).get_text().count("\n")  # a wrapped title pushes the legend down
    fig.legend(handles, [f"{flag_name}=true", f"{flag_name}=false"], loc="upper center", ncol=2, fontsize=9,
               bbox_to_anchor=(0.5, 1 - (0.38 + extra) / height), frameon=False)
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - (0.85 + extra) / height, bottom=0.5 / height, wspace=0.12, hspace=0.38)
    return fig
