"""The command group's machinery: exit codes, the one-line ``Error:`` and the error → exit-code map.

SPEC's exit codes: 0 done, 1 a run failed, 2 usage or config error, 3 diverged with
``--fail-on-diverge``, 130 interrupted. A traceback is printed only with ``--debug`` or
``INITLAB_DEBUG=1``.
"""
from __future__ import annotations

import os
import sys
import traceback

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Failure(click.ClickException):
    """An error with its own exit code, shown as one ``Error:`` line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def exit_code_for(error: BaseException) -> int:
    """The exit code of a library error that reached the command line."""
    from initlab.errors import ConfigError, EngineError, RuntimeStateError

    if isinstance(error, (ConfigError, EngineError, RuntimeStateError)):
        return EXIT_USAGE
    return EXIT_FAILED


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
        except (click.exceptions.Abort, KeyboardInterrupt):
            _error("interrupted", debug)
            sys.exit(EXIT_INTERRUPTED)
        except click.UsageError as e:
            _error(e.format_message(), debug)
            sys.exit(EXIT_USAGE)
        except click.ClickException as e:
            _error(e.format_message(), debug)
            sys.exit(e.exit_code)
        except Exception as e:  # a bug or an unexpected OS error: still one line
            from initlab.errors import describe

            _error(describe(e), debug)
            sys.exit(exit_code_for(e))
        sys.exit(rv if isinstance(rv, int) else 0)


def _error(msg: str, debug: bool) -> None:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"Error: {one_line(msg)}", err=True)
