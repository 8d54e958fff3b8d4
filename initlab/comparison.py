"""What ``initlab compare`` compares: runs read back, the config keys that differ, legend labels
and the arrays :func:`initlab.plots.compare.compare_figure` draws."""
from __future__ import annotations

from initlab.errors import ConfigError
from initlab.keys import flatten, format_value
from initlab.results import Run, load_run, load_sweep, resolve_dir


def differing(configs: list[dict]) -> dict:
    """The dotted keys whose values are not the same in every config → one value per config (None
    where a config lacks the key). ``name`` is left out: it names, it does not change a result.
    A key missing from a config (written by an older initlab, before the key existed) does not by
    itself make a difference: only the values present are compared."""
    flats = [flatten("", c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    out = {}
    for k in keys:
        values = [f.get(k, missing) for f in flats]
        present = [v for v in values if v is not missing]
        if k != "name" and any(v != present[0] for v in present[1:]):
            out[k] = [None if v is missing else v for v in values]
    return out


def load_compared(paths) -> list[Run]:
    """The runs ``initlab compare`` was given: run directories, sweep points, or whole sweeps
    (each expands into its finished points). Two of them being the same directory, or fewer than
    two runs in all, is a :class:`ConfigError`."""
    runs: list[Run] = []
    for p in paths:
        resolved = resolve_dir(p)
        if (resolved / "manifest.json").is_file():
            found = load_sweep(resolved).runs()
            if not found:
                raise ConfigError(f"{p}: a sweep with no finished point to compare")
            runs.extend(found)
        else:
            runs.append(load_run(resolved))
    seen = {}
    for r in runs:
        if r.path in seen:
            raise ConfigError(f"{r.path}: given twice (a run compared with itself)")
        seen[r.path] = True
    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs")
    return runs


def _label_value(v) -> str:
    if v is None or isinstance(v, bool):
        return format_value(v)  # null, true, false: as YAML and the config say them
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ",".join(f"{k}={_label_value(x)}" for k, x in v.items())
    return str(v)


def compare_labels(runs: list[Run], diff: dict) -> list[str]:
    """One legend label per run: the differing keys only (last part of the key when unambiguous),
    else the run's folder."""
    if not diff:
        return [f"{r.name}/{r.path.name}" for r in runs]
    short = {k: k.rsplit(".", 1)[-1] for k in diff}
    if len(set(short.values())) < len(short):
        short = {k: k for k in diff}
    labels = [", ".join(f"{short[k]}={_label_value(vals[i])}" for k, vals in diff.items()) for i in range(len(runs))]
    if len(set(labels)) < len(labels):  # same differing values (e.g. a seed the config does not hold)
        labels = [f"{lab} ({r.path.name})" for lab, r in zip(labels, runs)]
    return labels


def compare_series(run: Run, label: str) -> dict:
    """The arrays :func:`initlab.plots.compare.compare_figure` draws for one run."""
    h = run.history
    trained = bool(len(h["step"]))
    return {"label": label, "step": h["step"], "train_loss": h["train_loss"], "trained": trained,
            "act_std_init": run.layer_stat("act_std", "init"), "act_std_end": run.layer_stat("act_std", "end"),
            "grad_norm_init": run.layer_stat("grad_norm", "init"), "grad_norm_end": run.layer_stat("grad_norm", "end")}

