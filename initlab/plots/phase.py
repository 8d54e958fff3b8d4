"""The (σ_w², σ_b²) phase diagram of an activation: χ₁ on a grid, the χ₁ = 1 line, a config's point."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from initlab.engine.activations import LEAKY_SLOPE
from initlab.theory.meanfield import chi1_grid, phase_of


def phase_diagram(path, activation: str, sigma_w2: Optional[float] = None, sigma_b2: Optional[float] = None,
                  slope: float = LEAKY_SLOPE, sigma_w2_max: Optional[float] = None, sigma_b2_max: Optional[float] = None,
                  n: int = 41, dpi: int = 100) -> Path:
    """Draw log χ₁ over the plane with the χ₁ = 1 line and the point (σ_w², σ_b²); write a PNG to ``path``.

    The axes reach past the point: σ_w² to max(4, 1.5·σ_w²), σ_b² to max(0.25, 1.5·σ_b²) unless given.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    w_max = sigma_w2_max or max(4.0, 1.5 * (sigma_w2 or 0.0))
    b_max = sigma_b2_max or max(0.25, 1.5 * (sigma_b2 or 0.0))
    w = np.linspace(w_max / n, w_max, n)
    b = np.linspace(0.0, b_max, n)
    chi = chi1_grid(activation, w, b, slope)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi = np.log10(np.where(chi > 0, chi, np.nan))
    span = 0.5  # colours saturate at χ₁ = 10^±0.5: the interesting part is near the line

    fig = Figure(figsize=(6.0, 4.6), dpi=dpi)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(w, b, log_chi, cmap="coolwarm", shading="nearest",
                         norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span))
    fig.colorbar(mesh, ax=ax, extend="both", label="log10 χ₁  (<0 ordered, >0 chaotic)")
    if np.nanmin(log_chi) < 0 < np.nanmax(log_chi):
        ax.contour(w, b, log_chi, levels=[0.0], colors="k", linewidths=1.5)
    ax.plot([], [], color="k", label="χ₁ = 1 (edge of chaos)")
    if sigma_w2 is not None and sigma_b2 is not None:
        point_chi = chi1_grid(activation, [sigma_w2], [sigma_b2], slope)[0, 0]
        label = f"config: σ_w²={sigma_w2:.3g}, σ_b²={sigma_b2:.3g} ({phase_of(point_chi)}, χ₁={point_chi:.3g})"
        ax.plot([sigma_w2], [sigma_b2], marker="*", markersize=14, color="gold", markeredgecolor="k",
                linestyle="none", label=label)
    ax.set_xlabel("σ_w²  (weight variance × fan_in)")
    ax.set_ylabel("σ_b²  (bias variance)")
    ax.set_xlim(0, w_max)
    ax.set_ylim(0, b_max)
    ax.set_title(f"Mean-field phase diagram: {activation}")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path

