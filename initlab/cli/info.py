"""``initlab list``, ``initlab plot`` and ``initlab data``: registries, figures redrawn, data sets fetched."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_FAILED, EXIT_USAGE, Failure
from initlab.cli.options import emit_json, json_option


@click.command(name="list")
@json_option
def list_(as_json):
    """Print the registries: activations, init schemes, optimizers, data kinds.

    \b
    Example:
      initlab list --json
    """
    from initlab.registry import registries

    regs = registries()
    if as_json:
        emit_json(regs)
        return
    for title, names in regs.items():
        click.echo(f"{title}:")
        click.echo("  " + "  ".join(names))


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def plot(path):
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
def data_mnist(url):
    """Fetch the four MNIST files into INITLAB_DATA_DIR/mnist/ and check their SHA-256.

    \b
    Example:
      INITLAB_DATA_DIR=~/data initlab data mnist --url https://example.org/mnist/
    """
    from initlab.data.mnist import fetch_mnist
    from initlab.errors import DataError

    try:
        paths = fetch_mnist(url=url, progress=True)
    except DataError as e:
        raise Failure(str(e), EXIT_FAILED) from e
    for p in paths:
        click.echo(str(p))
