"""``initlab run`` and ``initlab validate``: one experiment, or its config resolved."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Failure
from initlab.cli.export import export_finished, export_flags, preflight
from initlab.cli.options import (
    absolute,
    config_argument,
    emit_json,
    fail_on_diverge_option,
    install_sigterm,
    json_option,
    load,
    out_option,
    provenance,
    quiet_option,
    say,
    seed_option,
    set_option,
)


def summary_line(metrics: dict) -> str:
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


@click.command()
@config_argument
@set_option
@seed_option
@out_option()
@json_option
@quiet_option
@fail_on_diverge_option
@export_flags
def run(config, sets, seed, out, as_json, quiet, fail_on_diverge, to_tensorboard, to_mlflow):
    """Run one experiment and write its run directory.

    CONFIG is a YAML file; without it the embedded default runs (the textbook's 5×100 sigmoid
    net with 1/√n weights on 1000×100 Gaussian input, forward only).

    \b
    Example:
      initlab run configs/sigmoid_std1.yaml --set model.depth=10 --seed 3
    """
    cfg = load(config, sets, seed)
    preflight(to_tensorboard, to_mlflow)
    install_sigterm()
    from initlab.config import ignored_settings
    from initlab.experiment import StoppedAfterSaving
    from initlab.experiment import run as run_experiment
    from initlab.output.files import OutputError

    for note in ignored_settings(cfg):  # also kept in metrics.json's warnings
        say(quiet or as_json, f"warning: {note}")
    try:
        result = run_experiment(cfg, out=out, progress=not quiet and not as_json,
                                provenance=provenance(config_path=config, overrides=sets, seed=seed))
    except StoppedAfterSaving as e:  # the signal came after the last file: metrics.json decides
        result = e.result
    except OutputError as e:
        raise Failure(str(e), EXIT_FAILED) from e
    run_dir = absolute(result.run_dir)
    code = {"failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}.get(result.status, EXIT_OK)
    if result.status == "diverged" and fail_on_diverge:
        code = EXIT_DIVERGED
    metrics = dict(result.metrics, run_dir=run_dir, exit_code=code)
    export_finished(result.run_dir, to_tensorboard, to_mlflow, quiet or as_json, result.status)
    if as_json:
        emit_json(metrics)
    else:
        click.echo(run_dir)  # stdout holds the run directory alone: d=$(initlab run …) works
        if result.status != "failed":  # a failure is said once, in the Error: line
            say(quiet, f"{run_dir}: {summary_line(metrics)}")
    if result.status == "failed":
        raise Failure(f"run failed: {result.error} (see {run_dir}/metrics.json)", EXIT_FAILED)
    if result.status == "interrupted":
        say(quiet, f"interrupted after {metrics.get('steps_done')} steps; partial results in {run_dir}")
    if code == EXIT_DIVERGED:
        say(quiet, "the loss diverged (--fail-on-diverge)")
    return code


@click.command()
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
        emit_json({"status": "ok", "valid": True, "config_hash": cfg.hash, "config": cfg.to_dict()})
    else:
        from initlab.config import dump_yaml

        click.echo(f"# config_hash: {cfg.hash}")
        click.echo(dump_yaml(cfg), nl=False)
