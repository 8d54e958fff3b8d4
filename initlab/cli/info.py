"""``initlab list``, ``initlab plot`` and ``initlab data``: registries, figures redrawn, data sets fetched."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_FAILED, EXIT_USAGE, Failure
from initlab.cli.options import absolute, emit_json, json_option


@click.command(name="list")
@json_option
def list_(as_json):
    """Print the registries: activations, init schemes, optimizers, data kinds.

    \b
    Example:
      initlab list --json
    """
    from initlab.registry import registries, scheme_formulas

    regs = registries()
    formulas = scheme_formulas()
    if as_json:
        # JSON keys never hold spaces ("init schemes" → "init_schemes"); SPEC names no keys here.
        # "schemes": each init scheme's formula and truncation convention.
        emit_json({**{title.replace(" ", "_"): names for title, names in regs.items()}, "schemes": formulas})
        return
    for title, names in regs.items():
        click.echo(f"{title}:")
        if title == "init schemes":  # one per line with its formula: the names alone hide the conventions
            width = max(map(len, names))
            for n in names:
                click.echo(f"  {n:<{width}}  {formulas[n]}")
            continue
        click.echo("  " + "  ".join(names))


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@json_option
def plot(path, as_json):
    """Redraw the figures of a run or sweep directory from its saved files.

    \b
    Example:
      initlab plot outputs/xavier_sigmoid/2026-01-01_12-00-00
    """
    from pathlib import Path

    p = Path(path)
    if (p / "manifest.json").exists():
        from initlab.plots.sweep import plot_sweep

        written = plot_sweep(p)
    elif (p / "config.yaml").exists():
        from initlab.plots.run import plot_run

        written = plot_run(p)
    else:
        raise Failure(f"{path}: not a run directory (no config.yaml) or a sweep directory (no manifest.json)", EXIT_USAGE)
    if as_json:
        emit_json({"status": "ok", "path": absolute(p), "written": [absolute(w) for w in written]})
        return
    for w in written:
        click.echo(str(w))


@click.group()
def data():
    """Download and verify data sets.

    \b
    Example:
      initlab data mnist
    """


@data.command(name="mnist")
@click.option("--url", default=None, help="Mirror base URL holding the four .gz files (default: a public mirror; env INITLAB_MNIST_URL).")
@json_option
def data_mnist(url, as_json):
    """Fetch the four MNIST files into INITLAB_DATA_DIR/mnist/ and check their SHA-256.

    \b
    Example:
      INITLAB_DATA_DIR=~/data initlab data mnist --url https://example.org/mnist/
    """
    from initlab.data.mnist import fetch_mnist
    from initlab.errors import DataError

    try:
        paths = fetch_mnist(url=url, progress=not as_json)
    except DataError as e:
        raise Failure(str(e), EXIT_FAILED) from e
    if as_json:
        emit_json({"status": "ok", "files": [absolute(p) for p in paths]})
        return
    for p in paths:
        click.echo(str(p))
