"""The ``initlab`` command: a thin Click layer over the library.

Errors become one ``Error:`` line on stderr and an exit code (SPEC): 0 done, 1 a run failed,
2 usage or config error, 3 diverged with ``--fail-on-diverge``, 130 interrupted.
Heavy imports (NumPy, pydantic, matplotlib) happen inside the commands.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import click

from initlab import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Failure(click.ClickException):
    """An error with its own exit code, shown as one ``Error:`` line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class InitlabGroup(click.Group):
    """Runs commands in non-standalone mode so every error is one line (and a traceback only with --debug)."""

    def main(self, args=None, prog_name=None, **kwargs):
        debug = os.environ.get("INITLAB_DEBUG") not in (None, "", "0")
        args = list(sys.argv[1:] if args is None else args)
        if "--debug" in args[: args.index("--") if "--" in args else len(args)]:
            debug = True
        try:
            rv = super().main(args=args, prog_name=prog_name or "initlab", standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            _error("interrupted", debug)
            sys.exit(EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            _error("interrupted", debug)
            sys.exit(EXIT_INTERRUPTED)
        except click.UsageError as e:
            _error(e.format_message(), debug)
            sys.exit(EXIT_USAGE)
        except click.ClickException as e:
            _error(e.format_message(), debug)
            sys.exit(e.exit_code)
        except Exception as e:  # a bug or an unexpected OS error: still one line
            from initlab.errors import ConfigError, InitlabError

            code = EXIT_USAGE if isinstance(e, ConfigError) else EXIT_FAILED
            msg = str(e) if isinstance(e, InitlabError) else f"{type(e).__name__}: {e}"
            _error(msg, debug)
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


def _error(msg: str, debug: bool) -> None:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"Error: {_one_line(msg)}", err=True)


def _install_sigterm():
    """SIGINT and SIGTERM both stop a run as Ctrl-C does: it says 'interrupted' and exits 130.

    SIGINT is set explicitly because a shell starts background jobs (``initlab run … &``) with
    SIGINT ignored, and ``kill -INT`` must still stop them.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. a test harness)
        pass


def _config_error(e) -> Failure:
    return Failure(str(e), EXIT_USAGE)


def load(config_path, sets=(), seed=None):
    """Load and validate a config, turning every problem into a usage error."""
    from initlab.config import load_config
    from initlab.errors import ConfigError, EngineError
    from initlab.experiment import check_memory

    try:
        cfg = load_config(config_path, overrides=sets, seed=seed)
        check_memory(cfg)  # before anything is allocated: exit 2, not a MemoryError halfway
        return cfg
    except (ConfigError, EngineError) as e:
        raise _config_error(e) from None


def _emit_json(obj) -> None:
    from initlab.output import dumps

    click.echo(dumps(obj).rstrip("\n"))


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        click.echo(msg, err=True)


def _summary_line(metrics: dict) -> str:
    final = metrics.get("final") or {}
    parts = [f"status {metrics.get('status')}", f"steps {metrics.get('steps_done')}"]
    for key in ("train_loss", "eval_loss", "train_acc", "eval_acc"):
        if final.get(key) is not None:
            parts.append(f"{key} {final[key]:.4g}")
    layers = metrics.get("layers") or []
    if layers:
        stds = ", ".join(f"{layer['std']:.3g}" if layer.get("std") is not None else "nan" for layer in layers[:10])
        parts.append(f"activation std at init per layer [{stds}{', …' if len(layers) > 10 else ''}]")
    return "; ".join(parts)


config_argument = click.argument("config", required=False, type=click.Path(dir_okay=False))
set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key (dotted path; value parsed as YAML). Repeatable.")
seed_option = click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the seed (integer ≥ 0).")
out_option = click.option("--out", type=click.Path(), default="outputs", show_default=True,
                          help="Output root; runs go to OUT/NAME/TIMESTAMP/.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else.")


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
    """


@cli.command()
@config_argument
@set_option
@seed_option
@out_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No messages on stderr (errors still print).")
@click.option("--fail-on-diverge", is_flag=True, help="Exit 3 when the loss diverged.")
def run(config, sets, seed, out, as_json, quiet, fail_on_diverge):
    """Run one experiment and write its run directory.

    CONFIG is a YAML file; without it the embedded default runs (the textbook's 5×100 sigmoid
    net with 1/√n weights on 1000×100 Gaussian input, forward only).

    \b
    Example:
      initlab run configs/sigmoid_std1.yaml --set model.depth=10 --seed 3
    """
    cfg = load(config, sets, seed)
    _install_sigterm()
    from initlab.experiment import run as run_experiment
    from initlab.output import OutputError

    try:
        result = run_experiment(cfg, out=out, progress=not quiet and not as_json)
    except OutputError as e:
        raise Failure(str(e), EXIT_FAILED) from None
    metrics = dict(result.metrics, run_dir=result.run_dir)
    if as_json:
        _emit_json(metrics)
    elif result.status != "failed":  # a failure is said once, in the Error: line
        _say(quiet, f"{result.run_dir}: {_summary_line(metrics)}")
    if result.status == "failed":
        raise Failure(f"run failed: {result.error} (see {result.run_dir}/metrics.json)", EXIT_FAILED)
    if result.status == "interrupted":
        _say(quiet, f"interrupted after {metrics.get('steps_done')} steps; partial results in {result.run_dir}")
        return EXIT_INTERRUPTED
    if result.status == "diverged" and fail_on_diverge:
        _say(quiet, "the loss diverged (--fail-on-diverge)")
        return EXIT_DIVERGED
    return EXIT_OK


@cli.command()
@config_argument
@set_option
@seed_option
@json_option
def validate(config, sets, seed, as_json):
    """Check a config and print it resolved, every default filled in.

    \b
    Example:
      initlab validate configs/relu_he.yaml --set init.scheme=he_uniform
    """
    cfg = load(config, sets, seed)
    if as_json:
        _emit_json({"valid": True, "config_hash": cfg.hash, "config": cfg.to_dict()})
    else:
        from initlab.config import dump_yaml

        click.echo(f"# config_hash: {cfg.hash}")
        click.echo(dump_yaml(cfg), nl=False)


@cli.command(name="list")
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
        _emit_json(regs)
        return
    for title, names in regs.items():
        click.echo(f"{title}:")
        click.echo("  " + "  ".join(names))


@cli.command()
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
        from initlab.sweep_plot import plot_sweep

        written = plot_sweep(p)
    elif (p / "config.yaml").exists():
        from initlab.plotting import plot_run

        written = plot_run(p)
    else:
        raise Failure(f"{path}: not a run directory (no config.yaml) or a sweep directory (no manifest.json)", EXIT_USAGE)
    for w in written:
        click.echo(str(w))


@cli.group()
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
    from initlab.errors import DataError
    from initlab.mnist import fetch_mnist

    try:
        paths = fetch_mnist(url=url, progress=True)
    except DataError as e:
        raise Failure(str(e), EXIT_FAILED) from None
    for p in paths:
        click.echo(str(p))


from initlab.sweep_cli import sweep as _sweep_command  # noqa: E402

cli.add_command(_sweep_command)
from initlab.theory_cli import theory as _theory_command  # noqa: E402

cli.add_command(_theory_command)


def main():
    cli.main()


if __name__ == "__main__":
    main()
