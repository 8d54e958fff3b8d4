"""``initlab run`` and ``initlab validate``: one experiment, or its config resolved."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Failure
from initlab.cli.options import (
    config_argument,
    emit_json,
    fail_on_diverge_option,
    install_sigterm,
    json_option,
    load,
    out_option,
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
def run(config, sets, seed, out, as_json, quiet, fail_on_diverge):
    """Run one experiment and write its run directory.

    CONFIG is a YAML file; without it the embedded default runs (the textbook's 5×100 sigmoid
    net with 1/√n weights on 1000×100 Gaussian input, forward only).

    \b
    Example:
      initlab run configs/sigmoid_std1.yaml --set model.depth=10 --seed 3
    """
    cfg = load(config, sets, seed)
    install_sigterm()
    from initlab.experiment import run as run_experiment
    from initlab.output.files import OutputError

    try:
        result = run_experiment(cfg, out=out, progress=not quiet and not as_json)
    except OutputError as e:
        raise Failure(str(e), EXIT_FAILED) from e
    metrics = dict(result.metrics, run_dir=result.run_dir)
    if as_json:
        emit_json(metrics)
    elif result.status != "failed":  # a failure is said once, in the Error: line
        say(quiet, f"{result.run_dir}: {summary_line(metrics)}")
    if result.status == "failed":
        raise Failure(f"run failed: {result.error} (see {result.run_dir}/metrics.json)", EXIT_FAILED)
    if result.status == "interrupted":
        say(quiet, f"interrupted after {metrics.get('steps_done')} steps; partial results in {result.run_dir}")
        return EXIT_INTERRUPTED
    if result.status == "diverged" and fail_on_diverge:
        say(quiet, "the loss diverged (--fail-on-diverge)")
        return EXIT_DIVERGED
    return EXIT_OK


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
        emit_json({"valid": True, "config_hash": cfg.hash, "config": cfg.to_dict()})
    else:
        from initlab.config import dump_yaml

        click.echo(f"# config_hash: {cfg.hash}")
        click.echo(dump_yaml(cfg), nl=False)
