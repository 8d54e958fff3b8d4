"""``summary.json`` and ``summary.csv``: one row per point of a sweep, from its manifest and metrics.

With ``--seeds N > 1`` (a ``seed`` axis) one aggregate row per grid point follows the points:
the mean, sample std and count of each final metric over its seeds (docs/FILES.md).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Optional

from initlab.output.readers import read_manifest, read_metrics, worst_status


def summary_rows(sweep_dir, manifest: Optional[dict] = None) -> list[dict]:
    """One row per point: overrides, seed, status, run dir, final metrics and per-layer activation std at
    init; then, when the sweep repeats points over seeds, one aggregate row per grid point."""
    sweep_dir = Path(sweep_dir)
    manifest = manifest or read_manifest(sweep_dir)
    rows = []
    for mp in manifest["points"]:
        metrics = read_metrics(sweep_dir / mp["run_dir"]) or {}
        rows.append({
            "index": mp["index"],
            "overrides": mp["overrides"],
            "label": mp.get("label"),
            "seed": mp["seed"],
            "status": mp["status"],
            "run_dir": mp["run_dir"],
            "final": metrics.get("final") or {},
            "init_std": [layer.get("std") for layer in metrics.get("layers") or []],
            "steps_done": metrics.get("steps_done"),
            "duration_s": mp.get("duration_s"),
            "error": mp.get("error"),
            "aggregate": False,
        })
    seed_axis = next((a for a in manifest.get("axes") or [] if a.get("key") == "seed"), None)
    if seed_axis and len(seed_axis.get("values") or []) > 1:
        rows += aggregate_rows(rows)
    return rows


def _stats(values) -> tuple[Optional[float], Optional[float], int]:
    """Mean, sample std (None below two values) and count of the finite values."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs)


def aggregate_rows(rows: list[dict]) -> list[dict]:
    """One row per grid point (the overrides without ``seed``), in the order the points first appear."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = json.dumps({k: v for k, v in r["overrides"].items() if k != "seed"}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        first = members[0]
        metric_keys = list(dict.fromkeys(k for r in members for k in r["final"] if k != "train_loss_window"))
        final = {}
        for k in metric_keys:
            mean, std, n = _stats(r["final"].get(k) for r in members)
            final.update({k: mean, f"{k}.std": std, f"{k}.n": n})
        n_layers = max((len(r["init_std"]) for r in members), default=0)
        init_std = [_stats(r["init_std"][i] if i < len(r["init_std"]) else None for r in members)[0]
                    for i in range(n_layers)]
        statuses = [r["status"] for r in members]
        out.append({
            "index": None,
            "overrides": {k: v for k, v in first["overrides"].items() if k != "seed"},
            "label": ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in first["overrides"].items() if k != "seed")
                     + f" (mean of {len(members)} seeds)",
            "seed": [r["seed"] for r in members],
            "status": worst_status(statuses),
            "run_dir": None,
            "final": final,
            "init_std": init_std,
            "steps_done": _stats(r["steps_done"] for r in members)[0],
            "duration_s": _stats(r["duration_s"] for r in members)[0],
            "error": next((r["error"] for r in members if r["error"]), None),
            "aggregate": True,
        })
    return out


FINAL_KEYS = ("train_loss", "train_acc", "eval_loss", "eval_acc")


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def summary_csv(rows: list[dict]) -> str:
    """The rows flattened. Columns are prefixed (``config.``, ``final.``, ``layer<i>.``) so a config
    key such as ``init.std`` never sits unmarked next to a result such as a layer's activation std."""
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"] if k not in ("seed", "index", "status")))
    finals = [k for k in FINAL_KEYS if any(k in r["final"] for r in rows)]
    finals += list(dict.fromkeys(k for r in rows for k in r["final"] if k not in finals))
    n_layers = max((len(r["init_std"]) for r in rows), default=0)
    header = (["index", "aggregate", "status", "seed"] + [f"config.{k}" for k in keys]
              + [f"final.{k}" for k in finals] + ["steps_done", "duration_s"]
              + [f"layer{i + 1}.act_std" for i in range(n_layers)] + ["run_dir", "error"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        stds = r["init_std"] + [None] * (n_layers - len(r["init_std"]))
        seed = " ".join(str(s) for s in r["seed"]) if isinstance(r["seed"], list) else r["seed"]
        w.writerow([_cell(v) for v in
                    [r["index"], r.get("aggregate", False), r["status"], seed]
                    + [r["overrides"].get(k) for k in keys]
                    + [r["final"].get(k) for k in finals] + [r["steps_done"], r["duration_s"]] + stds
                    + [r["run_dir"], r["error"]]])
    return buf.getvalue()


def write_summary(sweep_dir, manifest: Optional[dict] = None) -> list[dict]:
    """(Re)write ``summary.json`` and ``summary.csv`` from the manifest and the points' metrics.json."""
    from initlab.output.files import atomic_write, write_json

    rows = summary_rows(sweep_dir, manifest)
    write_json(Path(sweep_dir) / "summary.json", rows)
    atomic_write(Path(sweep_dir) / "summary.csv", summary_csv(rows))
    return rows
