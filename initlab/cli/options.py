"""What the commands share: the reusable options, loading a config as a usage error, JSON and messages."""
from __future__ import annotations

import signal

import click

from initlab.cli.app import EXIT_USAGE, JSON_STATE, Failure


def install_sigterm() -> None:
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


def load(config_path, sets=(), seed=None):
    """Load and validate a config, turning every problem into a usage error."""
    from initlab.config import load_config
    from initlab.errors import ConfigError, EngineError
    from initlab.memory import check_memory

    try:
        cfg = load_config(config_path, overrides=sets, seed=seed)
        check_memory(cfg)  # before anything is allocated: exit 2, not a MemoryError halfway
        return cfg
    except (ConfigError, EngineError) as e:
        raise Failure(str(e), EXIT_USAGE) from e


def emit_json(obj) -> None:
    """Print the command's one JSON object (strict: NaN and ±inf become null), with ``schema_version``."""
    import initlab
    from initlab.output.files import dumps

    if isinstance(obj, dict):
        obj = {**obj, "schema_version": initlab.SCHEMA_VERSION}
    JSON_STATE["emitted"] = True
    click.echo(dumps(obj).rstrip("\n"))


def absolute(path) -> str | None:
    """A path as JSON gives it: absolute (through symlinks such as ``latest``), or None."""
    from pathlib import Path

    return None if path is None else str(Path(path).resolve())


def say(quiet: bool, msg: str) -> None:
    if not quiet:
        click.echo(msg, err=True)


config_argument = click.argument("config", required=False, type=click.Path(dir_okay=False))
set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key (dotted path; value parsed as YAML). Repeatable.")
seed_option = click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the seed (integer ≥ 0).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No messages on stderr (errors still print).")
fail_on_diverge_option = click.option("--fail-on-diverge", is_flag=True, help="Exit 3 when the loss diverged.")


def out_option(help: str = "Output root; runs go to OUT/NAME/TIMESTAMP/.", file_okay: bool = True):
    return click.option("--out", type=click.Path(file_okay=file_okay), default="outputs", show_default=True, help=help)


def provenance(config_path=None, overrides=(), seed=None, axes=None, kind: str = "run") -> dict:
    """:func:`initlab.provenance.collect` with this invocation's command line."""
    from initlab.provenance import collect

    return collect(config_path=config_path, overrides=overrides, seed=seed, axes=axes, kind=kind,
                   command=["initlab", *JSON_STATE["args"]])
