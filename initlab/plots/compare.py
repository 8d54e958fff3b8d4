"""``compare.png``: two or more runs side by side — loss curves overlaid, and per layer the
activation std and the weight-gradient norm at initialization (solid) and at the end (dashed).

Drawn from plain arrays (``initlab compare`` reads the run directories), so it never needs the
experiment. Runs of different depths share the layer axis; a layer that exists in some runs only
is marked as such in the per-layer panels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from initlab.plots.common import builds_figure, figure, save_png, smooth, smoothing_window, suptitle, wrap


def _per_layer(ax, series, colors, init_key, end_key, title, ylabel, log):
    depths = [len(s[init_key]) for s in series]
    for s, color in zip(series, colors):
        x = np.arange(1, len(s[init_key]) + 1)
        if len(x):
            ax.plot(x, s[init_key], "o-", color=color, lw=1.5, ms=4)
        end = s.get(end_key)
        if end is not None and len(end) and s.get("trained"):
            ax.plot(np.arange(1, len(end) + 1), end, "s--", color=color, lw=1.2, ms=3, alpha=0.8)
    if depths and min(depths) != max(depths):
        # Layers beyond the shallowest run exist in the deeper runs only: shade and say so.
        ax.axvspan(min(depths) + 0.5, max(depths) + 0.5, color="0.9", zorder=0)
        n_only = sum(d > min(depths) for d in depths)
        ax.text(min(depths) + 0.6, 0.97, f"layers {min(depths) + 1}–{max(depths)}\nonly in {n_only}\nof {len(depths)} runs",
                transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="0.35", clip_on=True)
    deepest = max(depths, default=1)
    if deepest <= 12:
        ax.set_xticks(range(1, deepest + 1))
    else:  # a tick per layer of a 50-layer net is a black smear
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        values = np.concatenate([np.asarray(s[k], float) for s in series for k in (init_key, end_key)
                                 if s.get(k) is not None and len(s[k])] or [np.zeros(0)])
        finite = values[np.isfinite(values)]
        # Log only when the values span orders of magnitude (vanishing or exploding signals).
        if len(finite) and np.all(finite > 0) and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
    ax.grid(alpha=0.3)


@builds_figure
def compare_figure(series: list[dict], title: str):
    """``series``: one dict per run with ``label``, ``step`` and ``train_loss`` (arrays; empty for
    a forward-only run), ``trained`` (bool), ``act_std_init``/``act_std_end`` and
    ``grad_norm_init``/``grad_norm_end`` (one value per hidden layer). Returns a Figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    colors = [cmap(i % 10) for i in range(len(series))]
    # The legend sits below the panels, each label wrapped to the figure's width: runs that differ in
    # many keys have long labels, which inside a panel would squeeze the panels to slivers.
    width_in = 15
    labels = [s["label"] + ("" if len(s["step"]) else " (no training)") for s in series]
    labels = [wrap(lab, width_in * 0.9, 8) for lab in labels]
    legend_lines = sum(lab.count("\n") + 1 for lab in labels)
    legend_in = 0.2 * legend_lines + 0.3
    fig = figure(width_in, 4.8 + legend_in)
    ax_loss, ax_act, ax_grad = fig.subplots(1, 3)
    any_loss = False
    handles = []
    for s, color in zip(series, colors):
        steps, loss = np.asarray(s["step"]), np.asarray(s["train_loss"], float)
        if len(steps):
            any_loss = True
            ax_loss.plot(steps, loss, color=color, alpha=0.25, lw=0.8)
            handles += ax_loss.plot(steps, smooth(loss, smoothing_window(len(loss))), color=color, lw=1.8)
        else:
            handles += ax_loss.plot([], [], color=color, lw=1.8)
    ax_loss.set_title("training loss (faint: per step; bold: moving average)", fontsize=10)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("minibatch loss")
    if not any_loss:
        ax_loss.text(0.5, 0.5, "forward only:\nno training steps", ha="center", va="center",
                     transform=ax_loss.transAxes, color="0.4")
        ax_loss.set_xticks([])  # no data: ticks around 0 would read as a measured scale
        ax_loss.set_yticks([])
    ax_loss.grid(alpha=0.3)
    fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.04, 0.0), fontsize=8, frameon=False)
    _per_layer(ax_act, series, colors, "act_std_init", "act_std_end", "activation std per layer",
               "std of activations", log=True)
    _per_layer(ax_grad, series, colors, "grad_norm_init", "grad_norm_end", "weight-gradient norm per layer",
               "‖∂L/∂W‖", log=True)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", marker="o", ls="-", label="at init")]
    if any(s.get("trained") for s in series):  # an "at the end" entry only where something is drawn for it
        handles.append(Line2D([], [], color="0.3", marker="s", ls="--", label="at the end"))
    ax_act.legend(handles=handles, fontsize=8, loc="best")
    lines = suptitle(fig, title).get_text().count("\n") + 1
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.05, right=0.99, wspace=0.28, top=1 - (0.35 + 0.2 * lines) / height,
                        bottom=(legend_in + 0.55) / height)
    return fig


def plot_compare(path, series: list[dict], title: str) -> Path:
    path = Path(path)
    save_png(compare_figure(series, title), path)
    return path
