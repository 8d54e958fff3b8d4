"""The ``initlab`` command: a thin Click layer over the library, one module per command family.

Heavy imports (NumPy, pydantic, matplotlib) happen inside the commands, so ``initlab --help``
starts fast. :mod:`initlab.cli.app` maps errors to exit codes; :mod:`initlab.cli.options` holds
what the commands share.
"""
from __future__ import annotations

import gc
import signal

import click

from initlab import __version__
from initlab.cli.app import InitlabGroup
from initlab.cli.compare import compare
from initlab.cli.export import export
from initlab.cli.info import data, list_, plot
from initlab.cli.run import run, validate
from initlab.cli.runs import runs
from initlab.cli.sweep import sweep
from initlab.cli.theory import theory


@click.group(cls=InitlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="initlab")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error.")
def cli(debug):
    """See what weight initialization does to a neural network.

    \b
    Examples:
      initlab run                                  # the embedded default: 5×100 sigmoid, 1/√n init
      initlab run configs/relu_he.yaml --set model.depth=10
      initlab sweep --std 1,0.01                   # the textbook's two weight scales side by side
      initlab list                                 # activations, init schemes, optimizers, data kinds
      initlab runs --limit 5                       # the newest runs and sweeps, one line each
    """


for _command in (run, sweep, plot, list_, validate, data, theory, export, runs, compare):
    cli.add_command(_command)


def main():
    """The console command (``initlab``, ``python -m initlab``): the group, then a quick exit."""
    try:
        cli.main()
    finally:
        # The process ends here, its files written and its exit code decided. The interpreter's
        # teardown puts SIGINT and SIGTERM back to their default actions, so a signal arriving now
        # (a user pressing Ctrl-C again) would turn exit 130 or 0 into a death by signal: ignore them.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        # Its objects (NumPy arrays, matplotlib's figure machinery) need no collecting on the way out:
        # frozen, they are skipped by the final collections (0.1 s after a sweep), while atexit
        # handlers and stream flushes still run. Only here, never in `cli.main` itself: a notebook or
        # a test process calling it lives on.
        gc.freeze()
