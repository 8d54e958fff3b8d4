"""``sweep.png`` for forward-only sweeps: the textbook's histogram figure for every point at once.

Rows are points, columns are layers; the orange bracket is the mean-field prediction (mean ± std)
when metrics.json has one, and an extra column shows each point's input–output Jacobian spectrum
when it was recorded. The Jacobian is the point of such sweeps (dynamical isometry), so with it the
figure shows fewer layers (first, middle, last) and gives the spectrum the room of two panels.
"""
from __future__ import annotations

import numpy as np

from initlab.output.files import read_npz
from initlab.plots.common import (
    HEADROOM,
    OVERLAY_NOTE,
    OWN_RANGE_NOTE,
    clips_zero_spike,
    draw_histogram_row,
    figure,
    own_ranges,
    predicted,
    shown_layers,
    wrap,
)
from initlab.plots.run import jacobian_text
from initlab.theory.jacobian import RANK_RTOL, nonzero_mask

MAX_ROWS = 24  # histogram rows drawn; the rest are in summary.csv
LAYERS_BESIDE_JACOBIAN = 4


def _jacobian(p):
    path = p.dir / "jacobian.npz"
    if not path.is_file():
        return None
    sv = np.asarray(read_npz(path)["singular_values"], dtype=float)
    return sv.reshape(-1, sv.shape[-1]) if sv.size else None


def _jacobian_column(axes, spectra) -> None:
    """log10 of the non-zero singular values of d(last hidden layer)/d(input) at init, one panel per point,
    one x range taken from the non-zero values only (zeros are counted in the panel, not drawn)."""
    nonzero = [sv[nonzero_mask(sv)] for sv in spectra]
    logs = [np.log10(nz) for nz in nonzero]
    finite = np.concatenate(logs) if logs else np.array([])
    lo = min(float(finite.min()) if len(finite) else -1.0, -0.5)
    hi = max(float(finite.max()) if len(finite) else 1.0, 0.5)
    bins = np.linspace(lo, hi, 41)
    for r, (ax, lg, sv) in enumerate(zip(axes, logs, spectra)):
        ax.hist(lg, bins=bins, color="#55A868", alpha=0.85)
        ax.axvline(0.0, color="#C44E52", ls="--", lw=1)
        ax.text(0.03, 0.95, "\n".join(jacobian_text(sv, brief=True)), transform=ax.transAxes, va="top", fontsize=7,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", alpha=0.85))
        ax.set_xlim(lo, hi)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if r == 0:
            ax.set_title("input–output Jacobian at init", fontsize=10)
    axes[-1].set_xlabel(f"log10 non-zero singular value (dashed: 1; zero: ≤ {RANK_RTOL:.0e}·max)", fontsize=7.5)


def histogram_grid(points, title):
    rows = points[:MAX_ROWS]
    n_layers = max(len(p.snaps[0].data["act_std"]) for p in rows)
    spectra = [_jacobian(p) for p in rows]
    with_jac = all(sv is not None for sv in spectra)
    # deep nets beside a Jacobian: first, middle and last layers (a 5-layer net keeps every panel)
    layers = shown_layers(n_layers, LAYERS_BESIDE_JACOBIAN if with_jac and n_layers > 6 else 10)
    ncol = len(layers)
    longest = max(len(line) for p in rows for line in p.legend.split(", "))
    label_w = min(3.2, max(1.0, 0.075 * longest + 0.3))
    jac_w = 2.2 * 1.9 if with_jac else 0.0
    width = label_w + 1.9 * ncol + jac_w + (0.5 if with_jac else 0)
    height = 1.6 * len(rows) + 1.3
    fig = figure(width, height)
    if with_jac:  # one more column, set apart: each point's input–output Jacobian spectrum
        gs = fig.add_gridspec(len(rows), ncol + 2, width_ratios=[1] * ncol + [0.25, 2.2])
        axes = np.array([[fig.add_subplot(gs[r, c]) for c in range(ncol)] for r in range(len(rows))])
        _jacobian_column([fig.add_subplot(gs[r, ncol + 1]) for r in range(len(rows))], spectra)
    else:
        axes = fig.subplots(len(rows), ncol, squeeze=False)
    shaded = own = False
    for r, p in enumerate(rows):
        snap = p.snaps[0]
        n = len(snap.data["act_std"])
        mine = [li for li in layers if li < n]
        expected = predicted(p.metrics, n)
        shaded = shaded or expected is not None
        own = own or own_ranges(snap, mine)
        ymax = draw_histogram_row(axes[r][: len(mine)], snap, mine, predicted=expected,
                                  clip_zero_spike=clips_zero_spike(p.cfg), titles=r == 0)
        for ax in axes[r][: len(mine)]:
            if ymax:
                ax.set_ylim(0, ymax * HEADROOM)
            ax.set_yticks([])
        for ax in axes[r][len(mine):]:
            ax.set_axis_off()
        axes[r][0].annotate(p.legend.replace(", ", "\n"), xy=(0, 0.5), xycoords="axes fraction", xytext=(-8, 0),
                            textcoords="offset points", ha="right", va="center", fontsize=9)
    if len(points) > len(rows):
        fig.text(0.5, 0.005, f"… and {len(points) - len(rows)} more points (see summary.csv)", ha="center", fontsize=8)
    what = "activation histograms at initialization, per hidden layer"
    if with_jac and ncol < n_layers:
        what += f" ({ncol} of {n_layers} shown)"
    notes = ([OVERLAY_NOTE] if shaded else []) + ([OWN_RANGE_NOTE] if own else [])
    text = wrap(f"{title}\n{what}" + ("\n(" + "; ".join(notes) + ")" if notes else ""), width * 0.96, 10)
    fig.suptitle(text, fontsize=10)
    top_in = 0.3 + 0.17 * text.count("\n") + 0.35
    fig.subplots_adjust(left=label_w / width, right=0.99, top=1 - top_in / height, bottom=0.45 / height,
                        wspace=0.18, hspace=0.6)
    return fig
