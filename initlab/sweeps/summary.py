"""``summary.json`` and ``summary.csv``: one row per point of a sweep, from its manifest and metrics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from initlab.output.readers import read_manifest, read_metrics


def summary_rows(sweep_dir, manifest: Optional[dict] = None) -> list[dict]:
    """One row per point: overrides, seed, status, run dir, final metrics and per-layer activation std at init."""
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
        })
    return rows


FINAL_KEYS = ("train_loss", "train_acc", "eval_loss", "eval_acc")


def _cell(v) -> str:
    import math

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
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"] if k not in ("seed", "index", "status")))
    finals = [k for k in FINAL_KEYS if any(k in r["final"] for r in rows)]
    finals += list(dict.fromkeys(k for r in rows for k in r["final"] if k not in finals))
    n_layers = max((len(r["init_std"]) for r in rows), default=0)
    header = (["index", "status", "seed"] + keys + [f"final.{k}" for k in finals] + ["steps_done", "duration_s"]
              + [f"init_std.{i + 1}" for i in range(n_layers)] + ["run_dir", "error"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        stds = r["init_std"] + [None] * (n_layers - len(r["init_std"]))
        w.writerow([_cell(v) for v in
                    [r["index"], r["status"], r["seed"]] + [r["overrides"].get(k) for k in keys]
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
