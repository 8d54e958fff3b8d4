"""``sweep.png``: the points of a sweep side by side, drawn only from the files in the sweep directory.

- forward-only sweeps: the textbook's histogram figure for every point at once (rows = points,
  columns = layers);
- training sweeps: the loss curves overlaid (legend = each point's overrides), the accuracy or the
  gradient norm during training, and per-layer activation std and gradient norm at initialization;
- one many-valued axis × one true/false axis (the textbook's batch-norm grid): small multiples,
  one panel per value, true solid and false dashed.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from initlab.output import read_history, read_json, read_npz
from initlab.plotting import HEADROOM, draw_histogram_row, figure, save_png, shown_layers, smooth, smoothing_window
from initlab.recorder import unstack

MAX_ROWS = 24  # histogram rows drawn; the rest are in summary.csv
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


class _Point:
    """What the figure needs of one point, read from its run directory."""

    def __init__(self, sweep_dir: Path, mp: dict):
        import yaml

        self.index, self.status = mp["index"], mp["status"]
        self.label = mp.get("label") or ", ".join(f"{k}={v}" for k, v in mp["overrides"].items()) or str(self.index)
        self.dir = sweep_dir / mp["run_dir"]
        self.overrides = mp["overrides"]
        cfg_path = self.dir / "config.yaml"
        self.cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
        self.metrics = _read(self.dir / "metrics.json")
        self.history = read_history(self.dir / "history.csv") if (self.dir / "history.csv").is_file() else None
        npz = self.dir / "activations.npz"
        self.snaps = unstack(read_npz(npz)) if npz.is_file() else []

    @property
    def drawable(self) -> bool:
        return self.cfg is not None and bool(self.snaps)


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


def _predicted(metrics, n_layers):
    """Per layer (mean, std) predicted by mean-field theory, from metrics.json, or None."""
    out = []
    for layer in ((metrics or {}).get("layers") or [])[:n_layers]:
        m, s = layer.get("predicted_mean"), layer.get("predicted_std")
        out.append((m, s) if m is not None and s is not None else None)
    out += [None] * (n_layers - len(out))
    return out if any(o is not None for o in out) else None


def _read(path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def plot_sweep(sweep_dir) -> list[Path]:
    """Draw ``sweep.png`` from a sweep directory's manifest and run directories; returns the paths written."""
    from initlab.manifest import read_manifest

    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    points = [_Point(sweep_dir, mp) for mp in manifest["points"]]
    shown = [p for p in points if p.drawable]
    out = sweep_dir / "sweep.png"
    if not shown:
        fig = figure(6, 2)
        fig.text(0.5, 0.5, f"{manifest.get('name', '')}: no point has finished yet", ha="center", va="center")
        save_png(fig, out)
        return [out]
    _suffix_labels(shown)
    title = f"{manifest.get('name', sweep_dir.name)}: {len(points)} points — {_fixed(shown)}"
    if all(p.cfg["train"]["steps"] == 0 for p in shown):
        fig = _histogram_grid(shown, title)
    else:
        grid = _bool_grid(manifest)
        fig = _small_multiples(shown, grid, title) if grid else _overlay(shown, title)
    save_png(fig, out)
    return [out]


def _suffix_labels(points) -> None:
    for p in points:
        if p.status == "diverged":
            steps = (p.metrics or {}).get("steps_done")
            p.legend = f"{p.label} — diverged" + (f" at step {steps + 1}" if steps is not None else "")
        elif p.status not in ("completed",):
            p.legend = f"{p.label} ({p.status})"
        else:
            p.legend = p.label


# ---------------------------------------------------------------- the settings every point shares


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fixed(points) -> str:
    """The settings shared by every point, e.g. ``10×10 relu, init normal std=10, sgd lr=0.1, 50 steps``."""
    cfgs = [p.cfg for p in points]

    def same(*keys):
        return all(len({repr(_get(c, k)) for c in cfgs}) == 1 for k in keys)

    c = cfgs[0]
    m = c["model"]
    parts = []
    width = m["width"] if not isinstance(m["width"], list) else "·".join(map(str, m["width"]))
    if same("model.depth", "model.width"):
        parts.append(f"{m['depth']}×{width}")
    if same("model.activation"):
        parts.append(m["activation"])
    if same("model.batchnorm") and m.get("batchnorm"):
        parts.append("+BN")
    net = " ".join(parts)
    parts = [net] if net else []
    i = c["init"]
    if same("init.scheme", "init.std"):
        parts.append(f"init {i['scheme']}" + (f" std={i['std']:g}" if i.get("std") is not None else ""))
    elif same("init.scheme"):
        parts.append(f"init {i['scheme']}")
    if same("data.kind"):
        parts.append(f"{c['data']['kind']} data")
    if same("optimizer.name", "optimizer.lr") and c["train"]["steps"]:
        parts.append(f"{c['optimizer']['name']} lr={c['optimizer']['lr']:g}")
    if same("train.steps") and c["train"]["steps"]:
        parts.append(f"{c['train']['steps']} steps")
    if same("train.clip_norm") and c["train"].get("clip_norm"):
        parts.append(f"clip_norm {c['train']['clip_norm']:g}")
    if same("seed"):
        parts.append(f"seed {c['seed']}")
    return ", ".join(parts)


# ---------------------------------------------------------------- forward-only: histograms


def _histogram_grid(points, title):
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
        clip = p.cfg["model"]["activation"] in ("relu", "leaky_relu")
        predicted = _predicted(p.metrics, n)
        shaded = shaded or predicted is not None
        ymax = draw_histogram_row(axes[r][: len(own)], snap, own, predicted=predicted, clip_zero_spike=clip)
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


# ---------------------------------------------------------------- training: overlaid curves


def _groups(points):
    """Colour per point; repetitions over ``seed`` share their point's colour (and one legend entry)."""
    keys, colors, first = {}, {}, set()
    for p in points:
        base = ", ".join(part for part in p.label.split(", ") if not part.startswith("seed=")) or p.label
        if base not in keys:
            keys[base] = len(keys)
            first.add(p.index)
        p.group = base
    if len(keys) <= len(COLORS):
        palette = COLORS
    else:  # many points: an ordered colour map (the grid's order), not a repeating palette
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        palette = [cmap(0.92 * i / (len(keys) - 1)) for i in range(len(keys))]
    for p in points:
        colors[p.index] = palette[keys[p.group]]
    return colors, first


def _overlay(points, title):
    fig = figure(13, 8.2)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.35, 1], width_ratios=[1.45, 1])
    ax_loss = fig.add_subplot(gs[0, 0])
    ax_side = fig.add_subplot(gs[0, 1])
    ax_std = fig.add_subplot(gs[1, 0])
    ax_grad = fig.add_subplot(gs[1, 1])
    colors, first = _groups(points)
    repeated = len(first) < len(points)
    classification = any(p.history is not None and np.isfinite(p.history.get("train_acc", np.array([]))).any()
                         for p in points)
    lo, hi = math.inf, 0.0
    marks = []  # (step, last finite loss, colour) of diverged points
    # The axis range follows the points that did not diverge, so a blow-up does not flatten them.
    stable = any(p.status != "diverged" and p.history is not None and np.isfinite(p.history["train_loss"]).any()
                 for p in points)
    for p in points:
        h, color = p.history, colors[p.index]
        label = (p.group if repeated else p.legend) if p.index in first else None
        if h is None or not len(h["step"]):
            ax_loss.plot([], [], color=color, label=label)
            continue
        steps, loss = h["step"], h["train_loss"]
        w = smoothing_window(len(loss))
        ax_loss.plot(steps, loss, color=color, alpha=0.22, lw=0.7)
        ax_loss.plot(steps, smooth(loss, w) if w > 1 else loss, color=color, lw=1.9, label=label)
        finite = loss[np.isfinite(loss)]
        if len(finite) and (p.status != "diverged" or not stable):
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if p.status == "diverged":
            ok = np.flatnonzero(np.isfinite(loss))
            x = steps[ok[-1]] if len(ok) else steps[0]
            marks.append((x, loss[ok[-1]] if len(ok) else np.nan, color))
            ax_loss.axvline(steps[-1], color=color, ls=":", lw=1)
        if classification:
            for key, style in (("train_acc", "-o"), ("eval_acc", "--s")):
                ok = np.isfinite(h.get(key, np.full(len(steps), np.nan)))
                if ok.any():
                    ax_side.plot(steps[ok], h[key][ok], style, color=color, ms=3, lw=1.3)
        else:
            g = h["grad_norm"]
            ok = np.isfinite(g)
            ax_side.plot(steps[ok], g[ok], color=color, alpha=0.25, lw=0.7)
            wg = smoothing_window(int(ok.sum()))
            ax_side.plot(steps, smooth(g, wg) if wg > 1 else g, color=color, lw=1.6)
            if p.status == "diverged" and not np.isfinite(g[-1]):
                x = steps[ok][-1] if ok.any() else steps[0]
                ax_side.plot([x], [g[ok][-1] if ok.any() else np.nan], marker="X", ms=10, color=color, mec="black", mew=0.8)
    log = hi > 0 and lo > 0 and hi / lo > 100
    if log:
        ax_loss.set_yscale("log")
    if marks and stable and math.isfinite(lo):
        top = hi * 3 if log else hi + 0.08 * (hi - lo or 1)
        bottom = lo / 3 if log else lo - 0.05 * (hi - lo or 1)
        ax_loss.set_ylim(bottom, top)
        for x, y, color in marks:
            beyond = not np.isfinite(y) or y > top
            ax_loss.plot([x], [min(y, top) if np.isfinite(y) else top], marker="^" if beyond else "X", ms=11,
                         color=color, mec="black", mew=0.8, zorder=5, clip_on=False)
    else:
        for x, y, color in marks:
            ax_loss.plot([x], [y], marker="X", ms=11, color=color, mec="black", mew=0.8, zorder=5)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (minibatch; faint: raw, solid: moving mean)")
    ax_loss.set_title("training loss", fontsize=11)
    ax_loss.grid(alpha=0.3, which="both")
    ax_loss.legend(fontsize=9, loc="best", title="point" if len(first) > 1 else None, title_fontsize=9)
    if any(p.status == "diverged" for p in points):
        ax_loss.text(0.99, 0.01, "✕ last finite loss before it became non-finite (▲ off the scale)", transform=ax_loss.transAxes,
                     ha="right", va="bottom", fontsize=8, color="#444444")
    if classification:
        from matplotlib.lines import Line2D

        ax_side.set_ylim(0, 1.02)
        ax_side.set_ylabel("accuracy")
        ax_side.set_title("accuracy", fontsize=11)
        ax_side.legend([Line2D([], [], color="#444444", marker="o", ms=3), Line2D([], [], color="#444444", ls="--", marker="s", ms=3)],
                       ["training samples (eval mode)", "held-out samples"], fontsize=8, loc="best")
    else:
        ax_side.set_yscale("log")
        clips = {p.cfg["train"].get("clip_norm") for p in points} - {None}
        for c in sorted(clips):
            ax_side.axhline(c, color="black", ls="--", lw=0.9)
            ax_side.annotate(f"clip_norm {c:g}", xy=(1, c), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                             textcoords="offset points", ha="right", fontsize=8)
        ax_side.set_ylabel("global gradient norm (before clipping)")
        ax_side.set_title("gradient norm during training", fontsize=11)
    ax_side.set_xlabel("step")
    ax_side.grid(alpha=0.3, which="both")
    _per_layer(ax_std, points, colors, "act_std", "activation std at initialization, per hidden layer", "std of the layer's output")
    _per_layer(ax_grad, points, colors, "grad_norm", "weight-gradient norm at initialization, per hidden layer", "‖∂loss/∂W‖ (probe batch)")
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.985, top=0.92, bottom=0.07, wspace=0.22, hspace=0.32)
    return fig


def _per_layer(ax, points, colors, key, title, ylabel) -> None:
    drawn = False
    n_max = 1
    for p in points:
        vals = np.asarray(p.snaps[0].data[key], dtype=float)
        vals = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
        layers = np.arange(1, len(vals) + 1)
        n_max = max(n_max, len(vals))
        if np.isfinite(vals).any():
            ax.plot(layers, vals, "o-", color=colors[p.index], ms=4, lw=1.4)
            drawn = True
    arrays = [np.asarray(p.snaps[0].data[key], dtype=float) for p in points]
    if len(points) > 1 and all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0], equal_nan=True) for a in arrays):
        title += "\n(the same for every point)"
    if drawn:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "not finite (overflow)", ha="center", va="center", transform=ax.transAxes, color="#C44E52")
        ax.set_yticks([])
    ax.set_xticks(range(1, n_max + 1) if n_max <= 12 else [i + 1 for i in shown_layers(n_max)])
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10.5)
    ax.grid(alpha=0.3, which="both")


# ---------------------------------------------------------------- one axis × true/false: small multiples


def _bool_grid(manifest):
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
    from initlab.grid import flatten, format_value

    flat = flatten(axis["key"], value)
    every = [flatten(axis["key"], v) for v in axis["values"]]
    keys = [k for k in flat if len({repr(e.get(k)) for e in every}) > 1] or list(flat)
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(flat[k])}" for k in keys)


def _small_multiples(points, grid, title):
    axes_def = grid["axes"]
    many, flag = axes_def[grid["many"]], axes_def[grid["flag"]]
    n = len(many["values"])
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    fig = figure(3.0 * ncol + 0.4, 2.45 * nrow + 1.1)
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
    height = 2.45 * nrow + 1.1
    fig.legend(handles, [f"{flag_name}=true", f"{flag_name}=false"], loc="upper center", ncol=2, fontsize=9,
               bbox_to_anchor=(0.5, 1 - 0.38 / height), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - 0.85 / height, bottom=0.5 / height, wspace=0.12, hspace=0.38)
    return fig
