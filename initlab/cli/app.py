"""The command group's machinery: exit codes, the one-line ``Error:`` and the error → exit-code map.

SPEC's exit codes: 0 done, 1 a run failed, 2 usage or config error, 3 diverged with
``--fail-on-diverge``, 130 interrupted. A traceback is printed only with ``--debug`` or
``INITLAB_DEBUG=1``.

With ``--json`` every command prints exactly one JSON object on stdout, also when it fails: the
command's own object, or (when it failed before printing one) ``{"status": "error", "error": ...,
"exit_code": N, "schema_version": ...}``. The ``Error:`` line still goes to stderr.
"""
from __future__ import annotations

import os
import sys
import traceback

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# Per invocation: whether ``--json`` was given and whether the command already printed its object
# (a failed run prints its metrics and then fails; a second object would break ``json.load``).
# ``args``: the command line as given to the group (provenance records it; sys.argv is the test
# harness's under Click's test runner).
JSON_STATE = {"mode": False, "emitted": False, "args": []}


def json_requested(args: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    return "--json" in args[: args.index("--") if "--" in args else len(args)]


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
        JSON_STATE.update(mode=json_requested(args), emitted=False, args=list(args))
        try:
            rv = super().main(args=args, prog_name=prog_name or "initlab", standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            sys.exit(_error("interrupted", debug, EXIT_INTERRUPTED))
        except click.UsageError as e:
            sys.exit(_error(e.format_message(), debug, EXIT_USAGE))
        except click.ClickException as e:
            sys.exit(_error(e.format_message(), debug, e.exit_code))
        except Exception as e:  # a bug or an unexpected OS error: still one line
            from initlab.errors import describe

            sys.exit(_error(describe(e), debug, exit_code_for(e)))
        sys.exit(rv if isinstance(rv, int) else 0)


def error_object(msg: str, exit_code: int) -> dict:
    import initlab

    return {"status": "error", "error": one_line(msg), "exit_code": exit_code,
            "schema_version": initlab.SCHEMA_VERSION}


def _error(msg: str, debug: bool, exit_code: int) -> int:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"Error: {one_line(msg)}", err=True)
    if JSON_STATE["mode"] and not JSON_STATE["emitted"]:
        import json

        JSON_STATE["emitted"] = True
        click.echo(json.dumps(error_object(msg, exit_code), indent=2))
    return exit_code
