"""TensorBoard event files from a run's saved statistics (the ``tensorboard`` extra).

Written with TensorBoard's own event protos and record writer (the ones PyTorch's SummaryWriter
uses; no TensorFlow needed), so the package that shows the events also writes them. tensorboardX
would be a lighter install, but importing it imports PyTorch whenever PyTorch is installed
(seconds per export).

Per run, in one event file:

- scalars ``loss/train``, ``loss/eval``, ``accuracy/train``, ``accuracy/eval``, ``grad_norm/global``
  at every step of ``history.csv``, and per hidden layer at every snapshot
  ``activation_std/K-layer``, ``preactivation_std/K-layer``, ``saturated_frac/K-layer``,
  ``dead_frac/K-layer`` (where the notion applies) and ``weight_grad_norm/K-layer``;
- histograms ``activations/K-layer`` and ``preactivations/K-layer`` at every snapshot, built from
  the recorded counts and bin edges (the raw values were never kept, and need not be);
- texts ``config`` (the resolved ``config.yaml``) and ``status``.

Events are written in step order, one event per step holding all of that step's values, as a
training job writes them (older readers take a step that goes backwards for a restarted job).
"""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from initlab.errors import ConfigError
from initlab.export.rundata import MissingExtra, Run, Sweep, history_points, layer_points
from initlab.output.files import OutputError, make_dir

EVENT_SUFFIX = ".initlab"  # marks the event files this module wrote, the only ones it ever replaces
SCALAR_TAGS = {"train_loss": "loss/train", "eval_loss": "loss/eval", "train_acc": "accuracy/train",
               "eval_acc": "accuracy/eval", "grad_norm": "grad_norm/global"}


def _protos():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as e:
        raise MissingExtra("tensorboard", "TensorBoard export", str(e)) from e
    return event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, RecordWriter


def layer_tag(kind: str, layer: int) -> str:
    return f"{kind}/{layer}-layer"


def histogram_bounds(counts, edges) -> Optional[tuple]:
    """``(min, max)`` for a histogram: the outer edges of its first and last non-empty bins.

    TensorBoard draws the first non-empty bucket from ``min`` and the last up to ``max``; with a
    fixed range such as sigmoid's [0, 1] the outer edges would stretch a spike at 0.5 into a wide
    slab, so the bounds are those of the data's own bins. None when there is nothing to draw.
    """
    nz = np.flatnonzero(counts)
    if nz.size == 0 or not np.all(np.isfinite(edges)):
        return None
    return float(edges[nz[0]]), float(edges[nz[-1] + 1])


def _values(run: Run, summary_pb2, tensor_pb2, tensor_shape_pb2):
    """``(step, Summary.Value)`` for everything the run has, in the order they are written."""
    Summary = summary_pb2.Summary
    text_metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))

    def text(tag: str, body: str):
        tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[body.encode("utf-8")],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        return Summary.Value(tag=tag, metadata=text_metadata, tensor=tensor)

    out = []
    for col, step, v in history_points(run):
        out.append((step, Summary.Value(tag=SCALAR_TAGS[col], simple_value=v)))
    for series, layer, step, v in layer_points(run):
        out.append((step, Summary.Value(tag=layer_tag(series, layer), simple_value=v)))
    for snap in run.snapshots:
        for kind, prefix in (("activations", "act"), ("preactivations", "preact")):
            counts, edges = snap.data[f"{prefix}_counts"], snap.data[f"{prefix}_edges"]
            means, stds = snap.data[f"{prefix}_mean"], snap.data[f"{prefix}_std"]
            for i in range(len(counts)):
                bounds = histogram_bounds(counts[i], edges[i])
                if bounds is None:  # non-finite values: the recorder could not bin them
                    continue
                num = float(counts[i].sum())
                mean, std = float(means[i]), float(stds[i])
                moments = (mean * num, num * (std * std + mean * mean)) if np.isfinite(mean + std) else (0.0, 0.0)
                # bucket_limit[k] is the right edge of bucket k (its left edge is the previous limit)
                h = summary_pb2.HistogramProto(min=bounds[0], max=bounds[1], num=num, sum=moments[0],
                                               sum_squares=moments[1], bucket_limit=edges[i][1:].tolist(),
                                               bucket=counts[i].astype(float).tolist())
                out.append((snap.step, Summary.Value(tag=layer_tag(kind, i + 1), histo=h)))
    out.append((0, text("config", _code(run.config_text))))
    out.append((0, text("status", _code(status_text(run)))))
    out.sort(key=lambda sv: sv[0])  # stable: within a step, the order above
    return out


def _code(s: str) -> str:
    """Markdown code block (TensorBoard's text dashboard renders markdown)."""
    return "\n".join("    " + line for line in s.rstrip("\n").splitlines())


def status_text(run: Run) -> str:
    m = run.metrics
    lines = [f"run: {run.path}", f"status: {run.status}", f"steps_done: {m.get('steps_done')}",
             f"seed: {m.get('seed')}", f"config_hash: {m.get('config_hash')}",
             f"initlab_version: {m.get('initlab_version')}"]
    if m.get("diverged_at_step") is not None:
        lines.append(f"diverged_at_step: {m['diverged_at_step']} (non-finite values are left out of the charts)")
    if m.get("error"):
        lines.append(f"error: {m['error']}")
    return "\n".join(lines)


def write_run(run: Run, dest: Path) -> Path:
    """Write ``run``'s event file into ``dest`` (created) and return its path.

    The file appears whole (written under a temporary name, then renamed); event files of an
    earlier export into the same folder are then removed, so exporting twice never doubles a chart.
    """
    event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, RecordWriter = _protos()
    Event, Summary = event_pb2.Event, summary_pb2.Summary
    values = _values(run, summary_pb2, tensor_pb2, tensor_shape_pb2)
    dest = make_dir(Path(dest))
    wall = run.started()
    final = dest / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}{EVENT_SUFFIX}"
    tmp = dest / f".export-{os.getpid()}.tmp"  # no "tfevents" in the name: TensorBoard ignores it
    try:
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            writer.write(Event(wall_time=wall, file_version="brain.Event:2").SerializeToString())
            i = 0
            while i < len(values):  # one event per step, holding every value of that step
                step, j = values[i][0], i
                while j < len(values) and values[j][0] == step:
                    j += 1
                summary = Summary(value=[v for _, v in values[i:j]])
                writer.write(Event(wall_time=wall, step=step, summary=summary).SerializeToString())
                i = j
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        _unlink(tmp)
        raise OutputError(f"{dest}: cannot write TensorBoard events ({e.strerror or e})") from e
    except BaseException:
        _unlink(tmp)
        raise
    for old in dest.glob(f"events.out.tfevents.*{EVENT_SUFFIX}"):
        if old != final:
            _unlink(old)
    return final


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def _safe(label: str) -> str:
    """A folder name TensorBoard shows as the run's name: the point's overrides, e.g. ``std=0.01``."""
    s = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", label).strip("._") or "point"
    return s[:120]


def destinations(target: Run | Sweep, logdir: Optional[Path]) -> list[tuple[Run, Path]]:
    """Where each run of ``target`` goes: ``RUN/tensorboard`` (``SWEEP/tensorboard/K-LABEL`` for a
    point) without ``logdir``; with it, ``LOGDIR/NAME/TIMESTAMP[/K-LABEL]``, unique per run."""
    if isinstance(target, Run):
        dest = target.path / "tensorboard" if logdir is None else logdir / _safe(target.name) / target.path.name
        return [(target, dest)]
    base = target.path / "tensorboard" if logdir is None else logdir / _safe(target.name) / target.path.name
    return [(p.run, base / f"{p.index}-{_safe(p.label)}") for p in target.points if p.run is not None]


def export(targets, logdir=None, log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Write event files for every run of ``targets`` (runs and sweeps read by
    :func:`initlab.export.rundata.read_targets`); one row per run written."""
    log = log or (lambda msg: None)
    _protos()  # a missing extra is said before anything is written
    if logdir is not None:
        logdir = Path(logdir)
        if logdir.exists() and not logdir.is_dir():
            raise OutputError(f"{logdir}: exists and is not a directory")
        make_dir(logdir)
    plan = []
    for target in targets:  # every destination known (and every sweep checked) before a file is written
        pairs = destinations(target, logdir)
        if isinstance(target, Sweep) and not pairs:
            raise ConfigError(f"{target.path}: no point of this sweep has results yet")
        plan.append((target, pairs))
    rows = []
    for target, pairs in plan:
        if isinstance(target, Sweep):
            for p in target.points:
                if p.run is None:
                    log(f"{target.label}: point {p.index} ({p.label}) skipped: {p.skipped}")
        for run, dest in pairs:
            written = write_run(run, dest)
            rows.append({"run_dir": str(run.path), "logdir": str(dest), "file": str(written),
                         "status": run.status, "snapshots": len(run.snapshots)})
            log(f"{run.label}: {run.status}, {len(run.snapshots)} snapshot(s) -> {dest}")
    return rows
