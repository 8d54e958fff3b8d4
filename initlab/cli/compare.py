"""``initlab compare``: runs side by side — one figure, one table of what differs and what came out."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_FAILED, EXIT_USAGE, Failure
from initlab.cli.options import absolute, emit_json, json_option, say

FINAL = ("train_loss", "eval_loss", "eval_acc", "train_acc")


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"  # as the config says it
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(labels, diff: dict, runs) -> list[str]:
    """One row per run: its label, the differing config keys, status, depth and final metrics."""
    head = ["run", *diff, "status", "layers", *FINAL]
    rows = [head]
    named = len({r.name for r in runs}) > 1  # runs of different names: the stamp alone does not say which
    for i, r in enumerate(runs):
        rows.append([f"{r.name}/{r.path.name}" if named else r.path.name, *[_cell(vals[i]) for vals in diff.values()],
                     r.status, str(r.depth),
                     *[_cell(r.final.get(k)) for k in FINAL]])
    widths = [max(len(row[j]) for row in rows) for j in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="outputs", show_default=True,
              help="Output root; the comparison goes to OUT/compare/TIMESTAMP/ (never into the runs).")
@json_option
def compare(runs, out, as_json):
    """Compare two or more runs: compare.png and a table of the config keys that differ.

    RUNS are run directories, sweep points (SWEEP/runs/K-…) or whole sweeps (their finished
    points), `latest` links included. compare.png overlays the loss curves and draws per layer
    the activation std and weight-gradient norm at init (solid) and at the end (dashed); the
    legend names only the config keys that differ. Layers that exist in some runs only are
    marked. The table goes to stdout; compare.png and compare.json to OUT/compare/TIMESTAMP/.

    \b
    Examples:
      initlab compare outputs/sigmoid_std1/latest outputs/xavier_sigmoid/latest
      initlab compare outputs/textbook/sweep-2026-01-01_12-00-00 --json
    """
    from pathlib import Path

    from initlab.comparison import compare_labels, compare_series, differing, load_compared
    from initlab.errors import ConfigError
    from initlab.listing import COMPARE_MARK
    from initlab.output.files import OutputError, make_unique_dir, timestamp, write_json

    try:
        loaded = load_compared(runs)
    except ConfigError as e:
        raise Failure(str(e), EXIT_USAGE) from e
    diff = differing([r.config for r in loaded])
    labels = compare_labels(loaded, diff)
    parent = Path(out).resolve() / "compare"
    for r in loaded:  # the comparison never goes into a run it compares
        if parent == r.path or r.path in parent.parents:
            raise Failure(f"--out {out}: inside the compared run {r.path}; choose another output root", EXIT_USAGE)
    try:
        from initlab.plots.common import save_png
        from initlab.plots.compare import compare_figure

        fig = compare_figure([compare_series(r, lab) for r, lab in zip(loaded, labels)],
                             f"{len(loaded)} runs: " + (", ".join(diff) + " differ" if diff else "same config"))
        folder = make_unique_dir(parent, timestamp())
        figure_path = folder / "compare.png"
        save_png(fig, figure_path)
        obj = {"status": "ok", "out_dir": absolute(folder), "figure": absolute(figure_path),
               "runs": [{"path": str(r.path), "label": lab, "status": r.status, "final": {k: r.final.get(k) for k in FINAL},
                         "depth": r.depth} for r, lab in zip(loaded, labels)],
               "differing": [{"key": k, "values": v} for k, v in diff.items()]}
        write_json(folder / COMPARE_MARK, obj)
    except OutputError as e:
        raise Failure(str(e), EXIT_FAILED) from e
    if as_json:
        emit_json(obj)
        return
    for line in table(labels, diff, loaded):
        click.echo(line)
    say(False, f"{absolute(figure_path)}")
