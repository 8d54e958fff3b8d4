"""``initlab theory``: mean-field predictions for a config, beside the measurement at init."""
from __future__ import annotations

import click

from initlab.cli.app import EXIT_USAGE, Failure
from initlab.cli.options import absolute, emit_json, json_option, load, out_option, seed_option, set_option


def _fmt(x, spec=".4g") -> str:
    if x is None:
        return "∞" if spec == "xi" else "n/a"
    return format(x, ".4g" if spec == "xi" else spec)


def _table(rows) -> list[str]:
    head = f"{'layer':>5}  {'pred preact std':>15}  {'pred act std':>12}  {'meas preact std':>15}  {'meas act std':>12}"
    out = [head]
    for r in rows:
        out.append(f"{r['layer']:>5}  {_fmt(r['predicted_preact_std']):>15}  {_fmt(r['predicted_std']):>12}  "
                   f"{_fmt(r.get('preact_std')):>15}  {_fmt(r.get('std')):>12}")
    return out


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=True))
@set_option
@seed_option
@click.option("--phase-diagram", "phase", is_flag=True, help="Also draw the (σ_w², σ_b²) phase diagram with this config's point.")
@out_option("Where the phase diagram goes: OUT/NAME/phase-diagram_TIMESTAMP.png.", file_okay=False)
@json_option
def theory(config, sets, seed, phase, out, as_json):
    """Mean-field predictions for a config at initialization, beside the measured values.

    Prints the phase (ordered: gradients vanish; chaotic: they explode; critical: the edge of
    chaos), χ₁, the fixed point q*, the depth scales ξ_q and ξ_c, and per layer the predicted and
    measured spread of pre-activations and activations on the config's probe batch (one
    network: expect deviations of order √(2/width) per layer, largest for deep ReLU nets).
    CONFIG may also be a run directory.

    \b
    Examples:
      initlab theory configs/tanh_xavier.yaml
      initlab theory configs/meanfield_tanh.yaml --set init.gain=1.58 --phase-diagram
    """
    from pathlib import Path

    from initlab.report import measure

    if config and Path(config).is_dir():
        if not (Path(config) / "config.yaml").is_file():
            raise Failure(f"{config}: not a run directory (no config.yaml)", EXIT_USAGE)
        config = str(Path(config) / "config.yaml")
    cfg = load(config, sets, seed)
    report = measure(cfg)
    if phase:
        report["phase_diagram"] = absolute(draw_phase_diagram(cfg, report["theory"], out))
    if as_json:
        emit_json({"status": "ok", **report, "phase_diagram": report.get("phase_diagram")})
        return
    t = report["theory"]
    click.echo(f"{cfg.name}: {cfg.model.depth}×{cfg.model.width} {cfg.model.activation}, init {cfg.init.scheme}")
    click.echo(f"σ_w² = {_fmt(t['sigma_w2'])}  σ_b² = {_fmt(t['sigma_b2'])}  input q = {_fmt(t['input_q'])}")
    if t["applies"]:
        click.echo(f"phase: {t['phase']}   χ₁ = {_fmt(t['chi1'])}   q* = {_fmt(t['q_star'])} ({t['fixed_point']})"
                   f"   ξ_q = {_fmt(t['xi_q'], 'xi')}   ξ_c = {_fmt(t['xi_c'], 'xi')}   c* = {_fmt(t['c_star'])}")
    if t.get("note"):
        click.echo(f"note: {t['note']}")
    for line in _table(report["layers"]):
        click.echo(line)
    if report.get("phase_diagram"):
        click.echo(f"phase diagram: {report['phase_diagram']}")


def draw_phase_diagram(cfg, theory: dict, out):
    from pathlib import Path

    from initlab.output.files import timestamp
    from initlab.plots.phase import phase_diagram

    folder = Path(out) / cfg.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Failure(f"{folder}: {e.strerror or e}") from e
    path = folder / f"phase-diagram_{timestamp()}.png"
    return phase_diagram(path, cfg.model.activation, theory.get("sigma_w2"), theory.get("sigma_b2"), slope=cfg.model.slope)
