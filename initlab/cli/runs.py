"""``initlab runs``: one table of the runs and sweeps under an output root."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_USAGE, Failure
from initlab.cli.options import absolute, emit_json, json_option, say

SORTS = ("stamp", "name", "status", "steps", "train_loss", "eval_loss", "eval_acc", "train_acc")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def table(entries) -> list[str]:
    """Aligned columns, git-log style: newest first; ``*`` marks what ``<name>/latest`` points at."""
    head = ["name", "stamp", "kind", "status", "steps", "train_loss", "eval_acc", "overrides", "path"]
    rows = [head]
    for e in entries:
        rows.append([e.name + ("*" if e.latest else ""), e.stamp, e.kind, e.status,
                     "-" if e.steps is None else str(e.steps), _fmt(e.final.get("train_loss")),
                     _fmt(e.final.get("eval_acc")), " ".join(e.overrides) or "-", str(e.path)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


@click.command()
@click.argument("root", required=False, default="outputs", type=click.Path(file_okay=False))
@click.option("--name", default=None, metavar="GLOB", help="Only these config names (a glob, e.g. 'xavier*').")
@click.option("--status", default=None, metavar="S[,S…]",
              help="Only these statuses: completed, diverged, failed, interrupted, incomplete, …")
@click.option("--since", default=None, metavar="WHEN", help="Only runs started since: an age (30m, 2h, 3d) or a date/time.")
@click.option("--kind", type=click.Choice(["run", "sweep"]), default=None, help="Only runs or only sweeps.")
@click.option("--sort", type=click.Choice(SORTS), default="stamp", show_default=True,
              help="Sort key (stamp: newest first; the others ascending, missing last).")
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most K entries.")
@json_option
def runs(root, name, status, since, kind, sort, reverse, limit, as_json):
    """List the runs and sweeps under ROOT (default: outputs/), newest first.

    Reads only each directory's small JSON files. A half-written run (no metrics.json) is
    listed as incomplete; an entry that cannot be read is skipped with a note on stderr.
    `NAME*` marks the entry that OUT/NAME/latest points at.

    \b
    Examples:
      initlab runs
      initlab runs --name 'xavier*' --status completed --since 2h --limit 10
      initlab runs outputs --sort eval_acc --reverse --json
    """
    from initlab.errors import ConfigError
    from initlab.listing import parse_since, scan, select

    try:
        entries, skipped = scan(root)
        when = parse_since(since) if since else None
        shown = select(entries, name=name, status=status, since=when, kind=kind, sort=sort, reverse=reverse,
                       limit=limit)
    except ConfigError as e:
        raise Failure(str(e), EXIT_USAGE) from e
    if as_json:
        emit_json({"status": "ok", "root": absolute(root), "runs": [e.to_dict() for e in shown], "skipped": skipped})
        return
    for s in skipped:
        say(False, f"skipped {s['path']}: {s['reason']}")
    if not shown:
        say(False, f"no runs under {root}" + (" match" if entries else ""))
        return
    for line in table(shown):
        click.echo(line)
