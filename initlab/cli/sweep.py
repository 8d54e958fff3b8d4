"""The ``initlab sweep`` command: a thin Click wrapper over :func:`initlab.sweeps.runner.sweep`."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_USAGE, Failure
from initlab.cli.export import export_finished, export_flags, preflight
from initlab.cli.options import (
    absolute,
    emit_json,
    install_sigterm,
    json_option,
    out_option,
    provenance,
    quiet_option,
)


def _status(result, code: int) -> str:
    """The sweep's one word: interrupted, failed, diverged or completed (the worst of its points)."""
    if result.interrupted or code == 130:
        return "interrupted"
    if code == 1:
        return "failed"
    return "diverged" if result.counts.get("diverged") else "completed"


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--std", metavar="A,B,...", help="Weight stds: init.scheme=normal with init.std A, B, ... (the textbook's randn·std).")
@click.option("--init", "init_", metavar="A,B,...", help="Init schemes (init.scheme), e.g. xavier_normal,he_normal.")
@click.option("--activation", metavar="A,B,...", help="Activations (model.activation), e.g. sigmoid,relu.")
@click.option("--depth", metavar="A,B,...", help="Numbers of hidden layers (model.depth), e.g. 5,10.")
@click.option("--set", "sets", multiple=True, metavar="KEY=A,B,...",
              help="Sweep any key over a list (one value: an ordinary override). Repeatable.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="The base seed (integer ≥ 0); every point uses it.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Repeat every point with N seeds: seed, seed+1, ...")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default: one per core); fewer than twice as many points all start at once, sharing the cores.")
@out_option("Output root; the sweep goes to OUT/NAME/sweep-TIMESTAMP/.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, metavar="SWEEP_DIR",
              help="Run only the points of SWEEP_DIR that did not finish; keeps their numbering.")
@click.option("--scheduler", envvar="INITLAB_DASK_SCHEDULER", default=None, metavar="tcp://HOST:PORT",
              help="Run the points on this Dask cluster instead (env INITLAB_DASK_SCHEDULER; needs initlab[distributed]).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed point.")
@click.option("--fail-on-diverge", is_flag=True, help="Exit 3 when any point's loss diverged.")
@click.option("--figures", is_flag=True, help="Also draw each point's own figures (slower; `initlab plot RUN_DIR` draws them later).")
@json_option
@quiet_option
@export_flags
def sweep(config, std, init_, activation, depth, sets, seed, seeds, workers, out, resume, scheduler,
          fail_fast, fail_on_diverge, figures, as_json, quiet, to_tensorboard, to_mlflow):
    """Run a grid of experiments in parallel: one summary table and one comparative figure.

    The grid is the Cartesian product of CONFIG's `sweep:` axes and the lists given here
    (a list splits on top-level commas). The axis `points` lists partial configs instead,
    for points that differ in several sections. Every point uses the same seed, so only the
    axes differ. Results go to OUT/NAME/sweep-TIMESTAMP/: manifest.json, runs/K-SLUG/ (ordinary
    run directories), summary.csv, summary.json and sweep.png. Ctrl-C stops cleanly (exit
    130) and --resume finishes the rest.

    \b
    Examples:
      initlab sweep --std 1,0.01                           # the textbook's two weight scales
      initlab sweep configs/xavier_vs_kaiming.yaml --seeds 3
      initlab sweep --activation sigmoid,tanh,relu --init xavier_normal,he_normal
      initlab sweep --std 1,0.1,0.01 --set model.batchnorm=false,true --workers 4
      initlab sweep --set 'points={model: {depth: 3}},{model: {depth: 5}, optimizer: {lr: 0.05}}'
      initlab sweep --resume outputs/default/sweep-2026-01-01_12-00-00
    """
    from initlab.errors import ConfigError, EngineError, RuntimeStateError
    from initlab.output.files import OutputError
    from initlab.sweeps.plan import command_axes
    from initlab.sweeps.runner import sweep as run_sweep

    preflight(to_tensorboard, to_mlflow)
    install_sigterm()
    say = (lambda msg: None) if quiet or as_json else (lambda msg: click.echo(msg, err=True))
    try:
        axes = command_axes(std=std, init=init_, activation=activation, depth=depth,
                            sets=[s for s in sets])
        origin = provenance(config_path=config, overrides=list(sets), seed=seed,
                            axes={a.key: a.values for a in axes} if isinstance(axes, list) else None, kind="sweep")
        result = run_sweep(config, axes, seed=seed, seeds=seeds, out=out, workers=workers, fail_fast=fail_fast,
                           resume=resume, scheduler=scheduler, figures=figures,
                           progress=not quiet and not as_json, log=say, provenance=origin)
    except (ConfigError, EngineError, RuntimeStateError) as e:
        raise Failure(str(e), EXIT_USAGE) from e
    except OutputError as e:
        raise Failure(str(e)) from e
    if not result.error:
        export_finished(result.sweep_dir, to_tensorboard, to_mlflow, quiet or as_json,
                        "interrupted" if result.stopped_by else "done")
    code = result.exit_code(fail_on_diverge)
    sweep_dir = absolute(result.sweep_dir)
    if as_json:
        # Points' run_dir is relative to the sweep in summary.json; in --json every path is absolute.
        points = [{**p, "run_dir": absolute(result.sweep_dir / p["run_dir"]) if p.get("run_dir") else None}
                  for p in result.points]
        emit_json({"status": _status(result, code), "sweep_dir": sweep_dir, "counts": result.counts,
                   "points": points, "exit_code": code, "error": result.error})
    else:
        click.echo(sweep_dir)  # stdout holds the sweep directory alone: d=$(initlab sweep …) works
        shown = ", ".join(f"{n} {k}" for k, n in result.counts.items() if n)
        written = [f for f in ("summary.csv", "sweep.png") if (result.sweep_dir / f).is_file()]
        say(f"{sweep_dir}: {shown}" + (f"; {', '.join(written)}" if written else ""))
        if result.stopped_by in ("SIGINT", "SIGTERM"):
            say(f"interrupted; `initlab sweep --resume {sweep_dir}` runs the rest")
    if result.error:
        raise Failure(f"{result.error} (sweep directory: {result.sweep_dir})")
    if code == 1 and not as_json:
        failed = [p for p in result.points if p["status"] == "failed"]
        if failed:
            first = failed[0]
            raise Failure(f"{len(failed)} point(s) failed; first: {first['run_dir']}: {first['error']}")
    if code == 3:
        say("a loss diverged (--fail-on-diverge)")
    return code
