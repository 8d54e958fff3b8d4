"""``sweep.png`` for forward-only sweeps: the textbook's histogram figure for every point at once.

Rows are points, columns are layers; the shaded band is the mean-field prediction when metrics.json
has one, and an extra column shows each point's input–output Jacobian spectrum when it was recorded.
"""
from __future__ import annotations

import numpy as np

from initlab.output.files import read_npz
from initlab.plots.common import HEADROOM, clips_zero_spike, draw_histogram_row, figure, predicted, shown_layers

MAX_ROWS = 24  # histogram rows drawn; the rest are in summary.csv


def _jacobian(p):
    path = p.dir / "jacobian.npz"
    if not path.is_file():
        return None
    sv = np.asarray(read_npz(path)["singular_values"], dtype=float).ravel()
    return sv if len(sv) else None


def _jacobian_column(axes, spectra) -> None:
    """log10 singular values of d(last hidden layer)/d(input) at init, one panel per point, one x range."""
    logs = [np.log10(np.maximum(sv, np.finfo(np.float64).tiny)) for sv in spectra]
    finite = np.concatenate([lg[np.isfinite(lg)] for lg in logs])
    lo = min(float(finite.min()) if len(finite) else -1.0, -0.5)
    hi = max(float(finite.max()) if len(finite) else 1.0, 0.5)
    bins = np.linspace(lo, hi, 41)
    for r, (ax, lg) in enumerate(zip(axes, logs)):
        ax.hist(lg[np.isfinite(lg)], bins=bins, color="#55A868", alpha=0.85)
        ax.axvline(0.0, color="#C44E52", ls="--", lw=1)
        near = float(np.mean(np.abs(10 ** lg - 1) <= 0.1))
        ax.text(0.03, 0.95, f"within 10% of 1: {100 * near:.0f}%", transform=ax.transAxes, va="top", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", alpha=0.85))
        ax.set_xlim(lo, hi)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if r == 0:
            ax.set_title("input–output Jacobian at init", fontsize=10)
    axes[-1].set_xlabel("log10 singular value (dashed: 1)", fontsize=8)


def histogram_grid(points, title):
    rows = points[:MAX_ROWS]
    n_layers = max(len(p.snaps[0].data["act_std"]) for p in rows)
    layers = shown_layers(n_layers)
    ncol = len(layers)
    longest = max(len(line) for p in rows for line in p.legend.split(", "))
    label_w = min(3.2, max(1.0, 0.08 * longest + 0.3))
    spectra = [_jacobian(p) for p in rows]
    with_jac = all(sv is not None for sv in spectra)
    width = label_w + 1.9 * ncol + (2.6 if with_jac else 0)
    height = 1.55 * len(rows) + 1.1
    fig = figure(width, height)
    if with_jac:  # one more column, set apart: each point's input–output Jacobian spectrum
        gs = fig.add_gridspec(len(rows), ncol + 2, width_ratios=[1] * ncol + [0.25, 1.3])
        axes = np.array([[fig.add_subplot(gs[r, c]) for c in range(ncol)] for r in range(len(rows))])
        _jacobian_column([fig.add_subplot(gs[r, ncol + 1]) for r in range(len(rows))], spectra)
    else:
        axes = fig.subplots(len(rows), ncol, squeeze=False)
    shaded = False
    for r, p in enumerate(rows):
        snap = p.snaps[0]
        n = len(snap.data["act_std"])
        own = [li for li in layers if li < n]
        expected = predicted(p.metrics, n)
        shaded = shaded or expected is not None
        ymax = draw_histogram_row(axes[r][: len(own)], snap, own, predicted=expected,
                                  clip_zero_spike=clips_zero_spike(p.cfg))
        for ax in axes[r][: len(own)]:
            if ymax:
                ax.set_ylim(0, ymax * HEADROOM)
            ax.set_yticks([])
            if r:
                ax.set_title("")
        for ax in axes[r][len(own):]:
            ax.set_axis_off()
        axes[r][0].annotate(p.legend.replace(", ", "\n"), xy=(0, 0.5), xycoords="axes fraction", xytext=(-8, 0),
                            textcoords="offset points", ha="right", va="center", fontsize=9)
    if len(points) > len(rows):
        fig.text(0.5, 0.005, f"… and {len(points) - len(rows)} more points (see summary.csv)", ha="center", fontsize=8)
    what = "activation histograms at initialization, per hidden layer"
    if shaded:
        what += " (shaded: mean-field prediction, mean ± std)"
    fig.suptitle(f"{title}\n{what}", fontsize=10)
    fig.subplots_adjust(left=label_w / width, right=0.99, top=1 - 0.95 / height, bottom=0.35 / height,
                        wspace=0.12, hspace=0.55)
    return fig
