"""``initlab export tensorboard`` and ``initlab export mlflow``: runs and sweeps opened in those tools.

The exporters live in :mod:`initlab.export` and need optional extras; everything is imported
inside the commands, so ``initlab --help`` loads neither TensorBoard nor MLflow.
"""
from __future__ import annotations

import os

import click

from initlab.cli.app import EXIT_FAILED, EXIT_USAGE, Failure
from initlab.cli.options import absolute, emit_json, json_option, quiet_option, say

paths_argument = click.argument("paths", nargs=-1, required=True, metavar="RUN_OR_SWEEP...",
                                type=click.Path(file_okay=True, dir_okay=True))


def export_tensorboard(paths, logdir=None, log=None) -> list[dict]:
    """Read ``paths`` and write their event files; library errors become :class:`Failure` (one line)."""
    from initlab.export import tensorboard as tb

    return _guard(lambda: tb.export(_read(paths), logdir=logdir, log=log))


def export_mlflow(paths, tracking_uri=None, experiment=None, log=None) -> list[dict]:
    from initlab.export import mlflow as ml

    return _guard(lambda: ml.export(_read(paths), tracking_uri=tracking_uri, experiment=experiment, log=log))


def _read(paths):
    from initlab.export.rundata import read_targets

    return read_targets(paths)


def _guard(fn):
    from initlab.errors import ConfigError, RuntimeStateError
    from initlab.export.rundata import ExportError, MissingExtra
    from initlab.output.files import OutputError

    try:
        return fn()
    except (ConfigError, MissingExtra, RuntimeStateError) as e:  # nothing was written
        raise Failure(str(e), EXIT_USAGE) from e
    except (ExportError, OutputError) as e:
        raise Failure(str(e), EXIT_FAILED) from e


@click.group()
def export():
    """Open runs and sweeps in TensorBoard or MLflow (optional extras).

    \b
    Examples:
      initlab export tensorboard outputs/relu_he/latest --logdir tb && tensorboard --logdir tb
      initlab export mlflow outputs/default/sweep-2026-01-01_12-00-00 --experiment init-study
    """


@export.command()
@paths_argument
@click.option("--logdir", type=click.Path(), default=None,
              help="Write under LOGDIR/NAME/TIMESTAMP[/K-LABEL] instead of a tensorboard/ folder in each run "
                   "(or sweep).")
@json_option
@quiet_option
def tensorboard(paths, logdir, as_json, quiet):
    """Write TensorBoard event files for runs and sweeps (needs initlab[tensorboard]).

    Per run: loss, accuracy and gradient-norm scalars per step; per hidden layer and snapshot the
    activation std, saturated and dead fractions and weight-gradient norm; histograms of the
    activations and pre-activations from the recorded bins; the config as text. A sweep gives one
    TensorBoard run per point, named by its overrides. Without --logdir the events go to a
    tensorboard/ folder inside each run (SWEEP/tensorboard/K-LABEL for a sweep), so
    `tensorboard --logdir outputs` finds them all (TensorBoard follows the `latest` links, so the
    newest run of each name shows twice; --logdir gives one entry per run). The run's own files
    are never changed. Prints each folder written.

    \b
    Example:
      initlab export tensorboard outputs/sigmoid_std1/latest outputs/sigmoid_std0.01/latest --logdir tb
      tensorboard --logdir tb
    """
    rows = export_tensorboard(paths, logdir, log=lambda msg: say(quiet or as_json, msg))
    if as_json:
        emit_json({"status": "ok", "exported": [{**row, **{k: absolute(row[k]) for k in ("run_dir", "logdir", "file")}}
                                                 for row in rows]})
        return
    for row in rows:
        click.echo(row["logdir"])
    if rows:
        root = logdir or os.path.commonpath([row["logdir"] for row in rows])
        say(quiet, f"view: tensorboard --logdir {root}")


@export.command()
@paths_argument
@click.option("--tracking-uri", default=None, metavar="URI",
              help="MLflow tracking URI (default: MLflow's own, i.e. MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--experiment", default=None, metavar="NAME",
              help="MLflow experiment, created when missing (default: MLFLOW_EXPERIMENT_NAME or 'initlab').")
@json_option
@quiet_option
def mlflow(paths, tracking_uri, experiment, as_json, quiet):
    """Log runs and sweeps to MLflow (needs initlab[mlflow]).

    Params are the flattened resolved config; metrics the history per step, the per-layer
    snapshot statistics and the final values; tags the status, config_hash, seed and versions;
    artifacts the run's figures, JSON, CSV and NPZ files. A sweep is a parent run with one nested
    run per point. Exporting again skips an unchanged run and replaces a changed or half-exported
    one (never a duplicate). Prints the MLflow run id of each run or sweep.

    \b
    Example:
      initlab export mlflow outputs/relu_he/latest --tracking-uri http://127.0.0.1:5000
    """
    rows = export_mlflow(paths, tracking_uri, experiment, log=lambda msg: say(quiet or as_json, msg))
    if as_json:
        emit_json({"status": "ok", "exported": [_mlflow_row(row) for row in rows]})
        return
    for row in rows:
        click.echo(row["run_id"])
    if rows:
        uri = rows[0]["tracking_uri"]
        web = uri.startswith(("http://", "https://"))
        hint = (f"{uri.rstrip('/')}/#/experiments/{rows[0]['experiment_id']}" if web
                else f"mlflow ui --backend-store-uri {uri}")
        say(quiet, f"experiment '{rows[0]['experiment']}' at {uri}; view: {hint}")


def _mlflow_row(row: dict) -> dict:
    """One exported run or sweep with every key present (null where it does not apply), paths absolute."""
    def one(r: dict) -> dict:
        return {"action": r.get("action"), "run_id": r.get("run_id"), "run_dir": absolute(r.get("run_dir")),
                "reason": r.get("reason")}

    sweep = "points" in row
    return {"kind": "sweep" if sweep else "run", **one(row),
            "sweep_dir": absolute(row.get("sweep_dir")) if sweep else None,
            "points": [one(p) for p in row["points"]] if sweep else None,
            **{k: row.get(k) for k in ("tracking_uri", "experiment", "experiment_id")}}


# -- the --tensorboard and --mlflow flags of `initlab run` and `initlab sweep` ---------------------------

def export_flags(fn):
    """``--tensorboard`` and ``--mlflow``: export the run or sweep as soon as it has finished."""
    fn = click.option("--mlflow", "to_mlflow", is_flag=True,
                      help="When done, log it to MLflow (MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME, else "
                           "MLflow's defaults; needs initlab[mlflow]).")(fn)
    return click.option("--tensorboard", "to_tensorboard", is_flag=True,
                        help="When done, write TensorBoard events into its tensorboard/ folder "
                             "(needs initlab[tensorboard]).")(fn)


def preflight(to_tensorboard: bool, to_mlflow: bool) -> None:
    """Before anything runs: the extras the flags need are installed, and an HTTP tracking server
    answers; a usage error now (exit 2) rather than after an hour of training."""
    from initlab.export.rundata import MissingExtra

    for wanted, module, extra, what in ((to_tensorboard, "tensorboard", "tensorboard", "--tensorboard"),
                                        (to_mlflow, "mlflow", "mlflow", "--mlflow")):
        if wanted and not _installed(module):
            raise Failure(str(MissingExtra(extra, what)), EXIT_USAGE)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if to_mlflow and uri:
        from initlab.errors import RuntimeStateError
        from initlab.export.mlflow import probe

        try:
            probe(uri)
        except RuntimeStateError as e:
            raise Failure(str(e).replace("nothing exported", "nothing run"), EXIT_USAGE) from e


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: present in sys.modules as None (blocked)
        return False


def export_finished(path, to_tensorboard: bool, to_mlflow: bool, quiet: bool, status: str) -> None:
    """Export a finished run or sweep directory for the flags; messages on stderr only (stdout is the
    command's own). An interrupted one is not exported: Ctrl-C means stop."""
    if not (to_tensorboard or to_mlflow) or path is None:
        return
    if status == "interrupted":
        tool = "tensorboard" if to_tensorboard else "mlflow"
        say(quiet, f"not exported (interrupted); later: initlab export {tool} {path}")
        return
    log = lambda msg: say(quiet, msg)  # noqa: E731
    try:
        if to_tensorboard:
            export_tensorboard([path], log=log)
        if to_mlflow:
            export_mlflow([path], log=log)
    except Failure as e:  # the results are on disk: a failed export is exit 1, never "nothing was written"
        raise Failure(f"{path} was written, but exporting it failed: {e.message}", EXIT_FAILED) from e
