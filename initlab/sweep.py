"""Sweeps: a grid of experiments run in parallel, one manifest, one summary, one comparative figure.

    import initlab
    res = initlab.sweep("configs/xavier_vs_kaiming.yaml", workers=2)
    res.sweep_dir, res.counts, res.points[0]["final"]["train_loss"]

The grid is the Cartesian product of axes, each a dotted key and a list of values (a mapping
value merges into its section, so one axis can set ``scheme`` and ``std`` together): the
config's ``sweep:`` section first, then the given axes, which replace config axes that set the
same keys. A one-value axis is an ordinary override. Every point keeps the base seed, so every
point sees the same data, the same random draws for its weights and the same minibatches: the
axes are the only difference. ``seeds=N`` adds a last axis ``seed: [s, s+1, …, s+N-1]``.

The parent process is the only writer of ``manifest.json`` and the summaries. Points run in
worker processes (one BLAS thread each, so results do not depend on the worker count) or on a
Dask cluster, and each writes its own run directory, ``metrics.json`` last. A point is done when
its ``metrics.json`` says ``completed`` or ``diverged``; ``resume`` re-runs every other point into
a fresh directory under the same number.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from initlab.errors import ConfigError, InitlabError

DONE = ("completed", "diverged")
STATUSES = ("pending", "running", "completed", "diverged", "failed", "interrupted")
MAX_POINTS = 100_000
GRACE_S = 10.0  # how long interrupted workers get to save their partial run directory
DASK_CONNECT_TIMEOUT = "10s"
MANIFEST_EVERY_S = 0.25  # manifest.json is rewritten at most this often (and always at the end)
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ---------------------------------------------------------------- command-line lists


def split_list(text: str) -> list[str]:
    """Split on top-level commas: ``"[0,1],[0,2]"`` → ``["[0,1]", "[0,2]"]`` (quotes and brackets nest)."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_list(text: str, where: str, kind: Optional[str] = None) -> list:
    """``"1,0.01"`` → ``[1, 0.01]``: each item a YAML flow scalar; ``kind`` "number" or "int" checks the type."""
    from initlab.config import parse_value

    if not text.strip():
        raise ConfigError(f"{where}: empty list (give values separated by commas, e.g. {where} 1,0.01)")
    values = []
    for item in split_list(text):
        if not item:
            raise ConfigError(f"{where} {text!r}: empty value (two commas in a row, or a comma at an end)")
        value = parse_value(item, where)
        if isinstance(value, str) and _FLOAT_RE.match(value):
            value = float(value)  # YAML 1.1 reads "1e-4" as a string
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: {item!r} is not a number")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: {item!r} is not an integer")
        values.append(value)
    seen = set()
    for v in values:
        tag = json.dumps(v, sort_keys=True, default=str)
        if tag in seen:
            raise ConfigError(f"{where}: {v!r} is given twice")
        seen.add(tag)
    return values


@dataclass
class Axis:
    key: str
    values: list
    source: str = ""  # where it came from, for messages: "--std", "sweep: model.depth"

    def leaves(self) -> set[str]:
        out = set()
        for v in self.values:
            out |= set(flatten(self.key, v))
        return out


def command_axes(std=None, init=None, activation=None, depth=None, sets=()) -> list[Axis]:
    """The command line's lists as axes, in order: ``--init``, ``--std``, ``--activation``, ``--depth``, ``--set``.

    ``--std A,B`` is the textbook's ``randn·std``: ``init.scheme=normal`` with ``init.std`` A, B
    (with ``--init`` it sweeps ``init.std`` alone). ``--init`` sets ``init.scheme`` and, for
    schemes that compute their own scale, clears an inherited ``init.std``.
    """
    from initlab.initializers import ALIASES, STD_SCHEMES

    axes = []
    if init is not None:
        values = []
        for scheme in parse_list(init, "--init"):
            v = {"scheme": scheme}
            if std is None and ALIASES.get(scheme, scheme) not in STD_SCHEMES:
                v["std"] = None
            values.append(v)
        axes.append(Axis("init", values, "--init"))
    if std is not None:
        stds = parse_list(std, "--std", "number")
        if init is not None:
            axes.append(Axis("init.std", stds, "--std"))
        else:
            axes.append(Axis("init", [{"scheme": "normal", "std": s} for s in stds], "--std"))
    if activation is not None:
        axes.append(Axis("model.activation", parse_list(activation, "--activation"), "--activation"))
    if depth is not None:
        axes.append(Axis("model.depth", parse_list(depth, "--depth", "int"), "--depth"))
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=A,B,..., e.g. --set model.depth=5,10")
        key, _, text = item.partition("=")
        key = key.strip()
        _check_key(key, f"--set {item!r}")
        axes.append(Axis(key, parse_list(text, f"--set {key}"), f"--set {key}"))
    return axes


def _check_key(key: str, where: str) -> None:
    if not _KEY_RE.match(key):
        raise ConfigError(f"{where}: '{key}' is not a dotted key path like model.depth")
    if key.split(".")[0] == "sweep":
        raise ConfigError(f"{where}: the sweep section cannot be swept")


def flatten(key: str, value) -> dict:
    """``("init", {"scheme": "normal", "std": 1})`` → ``{"init.scheme": "normal", "init.std": 1}``."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{key}.{k}" if key else str(k), v))
        return out
    return {key: value}


def _overlap(a: set, b: set) -> bool:
    return any(x == y or x.startswith(y + ".") or y.startswith(x + ".") for x in a for y in b)


# ---------------------------------------------------------------- the grid


@dataclass
class Point:
    index: int
    overrides: dict  # dotted key → value (mappings flattened)
    config: Any  # initlab.config.Config
    label: str = ""
    run_dir: str = ""  # relative to the sweep directory


@dataclass
class Plan:
    name: str
    base: dict  # the raw base config: name and seed set, one-value overrides applied, no sweep section
    axes: list[Axis]
    points: list[Point]

    @property
    def hash(self) -> str:
        """What ``--resume`` compares: the ordered list of the points' config hashes."""
        blob = json.dumps([p.config.hash for p in self.points])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def sweep_yaml(self) -> str:
        """The base config with the axes as its ``sweep:`` section: ``initlab sweep`` on it reproduces the grid."""
        import yaml

        raw = dict(self.base)
        raw["sweep"] = {a.key: a.values for a in self.axes}
        head = "# Written by initlab sweep: the base config and its axes. `initlab sweep THIS_FILE` runs the same grid.\n"
        return head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def _read_raw(config) -> tuple[dict, str]:
    from initlab.config import DEFAULT_NAME, NAME_RE, Config, read_yaml

    if config is None:
        return {}, DEFAULT_NAME
    if isinstance(config, Config):
        return config.to_dict(), config.name
    if isinstance(config, dict):
        return copy.deepcopy(config), str(config.get("name") or DEFAULT_NAME)
    raw = read_yaml(config)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: the top level must be a mapping of sections, got {type(raw).__name__}")
    name = Path(config).stem
    if not NAME_RE.match(name):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or DEFAULT_NAME
    return raw, str(raw.get("name") or name)


def _as_axes(axes) -> list[Axis]:
    if axes is None:
        return []
    items = axes.items() if isinstance(axes, dict) else axes
    out = []
    for item in items:
        if isinstance(item, Axis):
            out.append(item)
            continue
        key, values = item
        _check_key(key, f"axis {key!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(f"axis '{key}': expected a list of values, got {values!r}")
        values = list(values)
        if not values:
            raise ConfigError(f"axis '{key}' has no values")
        out.append(Axis(key, values, f"axis {key}"))
    return out


def make_plan(config=None, axes=None, overrides=(), seed=None, seeds=None) -> Plan:
    """Every point of the grid, validated; any bad point is a :class:`ConfigError` and nothing is written."""
    from initlab.config import apply_override, parse_override, validate

    raw, name = _read_raw(config)
    config_axes = raw.pop("sweep", None) or {}
    if not isinstance(config_axes, dict):
        raise ConfigError(f"sweep: must be a mapping of dotted keys to lists of values, got {type(config_axes).__name__}")
    file_axes = []
    for key, values in config_axes.items():
        _check_key(str(key), "sweep")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: must be a non-empty list of values")
        file_axes.append(Axis(str(key), values, f"sweep: {key}"))
    given = _as_axes(axes)
    fixed = []  # (key, value, source)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        fixed.append((key, value, f"--set {key}"))
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"--seeds must be an integer ≥ 1, got {seeds!r}")
    if seeds is not None and seeds > 1:
        base_seed = seed if seed is not None else raw.get("seed", 0)
        if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
            raise ConfigError(f"seed: must be an integer ≥ 0 to derive --seeds from, got {base_seed!r}")
        raw["seed"] = base_seed
        given.append(Axis("seed", [base_seed + r for r in range(seeds)], "--seeds"))
    elif seed is not None:
        fixed.append(("seed", seed, "--seed"))

    # One-value axes are overrides; the caller's axes and overrides replace config axes on the same keys.
    for a in [a for a in given if len(a.values) == 1]:
        fixed.append((a.key, a.values[0], a.source))
    given = [a for a in given if len(a.values) > 1]
    caller = [(a.leaves(), a.source) for a in given] + [(set(flatten(k, v)), src) for k, v, src in fixed]
    for i, (la, sa) in enumerate(caller):
        for lb, sb in caller[i + 1:]:
            if _overlap(la, lb):
                both = f"{sa} twice" if sa == sb else f"{sa} and {sb}"
                raise ConfigError(f"{both}: the same key is set twice ({', '.join(sorted(la & lb) or sorted(la))})")
    kept = [a for a in file_axes if not any(_overlap(a.leaves(), leaves) for leaves, _ in caller)]
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            if _overlap(a.leaves(), b.leaves()):
                raise ConfigError(f"sweep: axes '{a.key}' and '{b.key}' set the same key")
    for a in kept:
        if len(a.values) == 1:
            fixed.append((a.key, a.values[0], a.source))
    all_axes = [a for a in kept if len(a.values) > 1] + given

    for key, value, _ in fixed:
        raw = apply_override(raw, key, value)
    raw["name"] = name
    raw.setdefault("seed", 0)
    total = 1
    for a in all_axes:
        total *= len(a.values)
    if total > MAX_POINTS:
        raise ConfigError(f"the grid has {total} points; at most {MAX_POINTS} are allowed")

    from initlab.experiment import check_memory, memory_limit

    limit = memory_limit()
    points = []
    for index, combo in enumerate(itertools.product(*[a.values for a in all_axes])):
        point_raw, overrides_ = raw, {}
        for a, value in zip(all_axes, combo):
            point_raw = apply_override(point_raw, a.key, value)
            overrides_.update(flatten(a.key, value))
        try:
            cfg = validate(point_raw, default_name=name)
            check_memory(cfg, limit)
        except ConfigError as e:
            where = ", ".join(f"{k}={_fmt(v)}" for k, v in overrides_.items())
            raise ConfigError(f"point {index} ({where}): {e}" if where else str(e)) from None
        points.append(Point(index, overrides_, cfg))
    seen = {}
    for p in points:
        if p.config.hash in seen:
            q = seen[p.config.hash]
            raise ConfigError(f"points {q.index} and {p.index} are the same experiment "
                              f"({_describe(q.overrides)} and {_describe(p.overrides)})")
        seen[p.config.hash] = p
    _name_points(points, name)
    return Plan(name, raw, all_axes, points)


def _lookup(d: dict, key: str):
    node = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _describe(overrides: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items()) or "no overrides"


def varying(points: list[Point]) -> list[str]:
    """The override keys whose resolved value differs between points, in first-seen order."""
    keys = list(dict.fromkeys(k for p in points for k in p.overrides))
    dicts = [p.config.to_dict() for p in points]
    out = []
    for k in keys:
        vals = {json.dumps(_lookup(d, k), sort_keys=True, default=lambda o: "<missing>") for d in dicts}
        if len(vals) > 1:
            out.append(k)
    return out


def short_names(keys: list[str]) -> dict:
    """``model.activation`` → ``activation`` unless two keys share their last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _slug_part(short: str, v) -> str:
    if isinstance(v, bool) or v is None:
        return short if v else f"no-{short}"
    if isinstance(v, str):
        return v
    return f"{short}{_fmt(v)}"


def _name_points(points: list[Point], name: str) -> None:
    """Labels (``std=0.01, activation=relu``) and folders (``runs/03-std0.01_relu``) from the varying keys."""
    keys = varying(points)
    shorts = short_names(keys)
    width = len(str(len(points) - 1))
    values = []
    for p, d in zip(points, [p.config.to_dict() for p in points]):
        vals = {k: _lookup(d, k) for k in keys}
        values.append({k: (p.overrides.get(k) if v is _MISSING else v) for k, v in vals.items()})
    # "scheme=he_normal" reads better than "scheme=he_normal, std=null": leave nulls out where the
    # labels stay distinct and non-empty without them.
    terse = [{k: v for k, v in vals.items() if v is not None} for vals in values]
    keys_of = [json.dumps(t, sort_keys=True, default=str) for t in terse]
    if all(terse) and len(set(keys_of)) == len(points):
        values = terse
    for p, vals in zip(points, values):
        p.label = ", ".join(f"{shorts[k]}={_fmt(v)}" for k, v in vals.items()) or name
        slug = "_".join(_slug_part(shorts[k], v) for k, v in vals.items()) or name
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", slug).strip("-.")[:48].rstrip("-.") or "point"
        p.run_dir = f"runs/{p.index:0{width}d}-{slug}"


def load_plan(sweep_dir) -> Plan:
    """The grid of an existing sweep directory, rebuilt from its ``sweep.yaml``."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no sweep.yaml)")
    return make_plan(path)


# ---------------------------------------------------------------- manifest


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_manifest(sweep_dir) -> dict:
    """``manifest.json`` of a sweep directory, or a :class:`ConfigError` saying it is not one."""
    from initlab.output import read_json

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such sweep directory")
    path = sweep_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no manifest.json)")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list) or "config_hash" not in manifest:
        raise ConfigError(f"{path}: not an initlab sweep manifest")
    return manifest


def _new_manifest(plan: Plan) -> dict:
    import initlab

    return {
        "config_hash": plan.hash,
        "created": _now(),
        "name": plan.name,
        "initlab_version": initlab.__version__,
        "state": "pending",
        "axes": [{"key": a.key, "values": a.values} for a in plan.axes],
        "invocations": [],
        "points": [
            {
                "index": p.index, "overrides": p.overrides, "label": p.label, "seed": p.config.seed,
                "status": "pending", "run_dir": p.run_dir, "started": None, "finished": None,
                "error": None, "exit_reason": None, "duration_s": None, "worker": None,
                "config_hash": p.config.hash,
            }
            for p in plan.points
        ],
    }


def _write_manifest(sweep_dir: Path, manifest: dict) -> None:
    from initlab.output import write_json

    manifest["updated"] = _now()
    write_json(Path(sweep_dir) / "manifest.json", manifest)


def _read_metrics(run_dir: Path) -> Optional[dict]:
    from initlab.output import read_json

    try:
        m = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _reconcile(sweep_dir: Path, manifest: dict, plan: Plan) -> list[int]:
    """Trust the disk: a point is done iff its metrics.json says completed/diverged (for its config); the rest re-run."""
    todo = []
    for mp, p in zip(manifest["points"], plan.points):
        run_dir = sweep_dir / p.run_dir
        metrics = _read_metrics(run_dir)
        ok = metrics is not None and metrics.get("status") in DONE and metrics.get("config_hash") == p.config.hash
        if ok:
            if mp.get("status") != metrics["status"]:
                mp.update(status=metrics["status"], error=None,
                          exit_reason=f"{metrics['status']} (recovered from its metrics.json on resume)",
                          finished=mp.get("finished") or _now(),
                          duration_s=mp.get("duration_s") or (metrics.get("timing") or {}).get("total_s"))
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a partial, failed or interrupted attempt: start it afresh
        mp.update(status="pending", started=None, finished=None, error=None, exit_reason=None,
                  duration_s=None, worker=None)
        todo.append(p.index)
    return todo


class _Lock:
    """An exclusive lock on the sweep directory for the lifetime of the sweep (released by the kernel on kill -9)."""

    def __init__(self, sweep_dir: Path):
        self.f = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        self.f = open(sweep_dir / ".lock", "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            self.f = None
            raise ConfigError(f"{sweep_dir}: another initlab sweep is running in this directory") from None

    def release(self):
        if self.f is not None:
            self.f.close()
            self.f = None


# ---------------------------------------------------------------- one point (runs in a worker)


def run_point(task: dict) -> dict:
    """Run one point and write its run directory (``metrics.json`` last). Picklable: Dask workers call it too."""
    t0 = time.perf_counter()
    index = task["index"]
    outcome = {"index": index, "status": "failed", "error": None, "exit_reason": None, "steps_done": 0,
               "worker": f"{_hostname()} pid {os.getpid()}"}
    try:
        from initlab.config import dump_yaml, validate
        from initlab.experiment import run
        from initlab.output import atomic_write
        from initlab.rundir import RunWriter

        path = Path(task["run_dir"])
        path.mkdir(parents=True, exist_ok=True)
        cfg = validate(task["config"])
        atomic_write(path / "config.yaml", dump_yaml(cfg))
        if task.get("limit_threads"):
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                result = run(cfg)
        else:
            result = run(cfg)
        if not result.history and cfg.train.steps > 0:  # failed before the first step: an empty history.csv
            import numpy as np

            from initlab.output import HISTORY_COLUMNS

            result.history = {c: np.zeros(0, dtype=np.int64 if c == "step" else float) for c in HISTORY_COLUMNS}
        RunWriter(path, cfg).write(result, figures=bool(task.get("figures")))
        steps = result.metrics.get("steps_done", 0)
        outcome.update(status=result.status, error=result.error, steps_done=steps)
        if result.status == "diverged":
            outcome["exit_reason"] = f"the loss became non-finite at step {steps + 1}"
        elif result.status == "interrupted":
            outcome["exit_reason"] = f"interrupted after {steps} steps (partial results saved)"
        elif result.status == "failed":
            outcome["exit_reason"] = result.error
    except Exception as e:
        outcome["error"] = outcome["exit_reason"] = f"{type(e).__name__}: {e}" if not isinstance(e, InitlabError) else str(e)
    outcome["duration_s"] = time.perf_counter() - t0
    return outcome


def _hostname() -> str:
    import socket

    return socket.gethostname()


# ---------------------------------------------------------------- local worker processes

_worker_stopping = False


def _worker_signal(signum, frame):
    # The first SIGINT/SIGTERM interrupts the point (its partial results are saved); later ones are ignored.
    global _worker_stopping
    if _worker_stopping:
        return
    _worker_stopping = True
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_main(conn, parent_pid: int) -> None:
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    signal.signal(signal.SIGINT, _worker_signal)
    signal.signal(signal.SIGTERM, _worker_signal)
    try:
        import initlab.experiment  # noqa: F401  (loads NumPy's BLAS, so the limit below applies to it)
        import initlab.rundir  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # one BLAS thread per worker: no oversubscription, same numbers for any worker count
        while True:
            task = conn.recv()
            if task is None:
                return
            try:
                outcome = run_point(task)
            except KeyboardInterrupt:
                outcome = _interrupted_outcome(task)
            conn.send(outcome)
            if _worker_stopping:
                return
    except (EOFError, OSError, KeyboardInterrupt):
        return


def _interrupted_outcome(task: dict) -> dict:
    """A signal escaped the run: if its metrics.json got written anyway, that is the outcome."""
    metrics = _read_metrics(Path(task["run_dir"])) or {}
    status = metrics.get("status")
    if status in ("completed", "diverged", "failed", "interrupted"):
        return {"index": task["index"], "status": status, "error": metrics.get("error"),
                "exit_reason": "stopped by a signal after its results were saved" if status != "interrupted"
                else f"interrupted after {metrics.get('steps_done', 0)} steps (partial results saved)",
                "steps_done": metrics.get("steps_done", 0)}
    return {"index": task["index"], "status": "interrupted", "error": None,
            "exit_reason": "interrupted by a signal before its results were saved", "steps_done": 0}


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class WorkerStartError(InitlabError):
    """Worker processes die before running anything (e.g. the parent's ``__main__`` cannot be re-imported)."""


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="initlab-sweep-worker")
        self.proc.start()
        child.close()
        self.task: Optional[int] = None
        self.done = 0


class LocalBackend:
    """A small process pool: one pipe per worker, so a worker that dies fails only its own point."""

    limit_threads = False

    def __init__(self, workers: Optional[int] = None):
        import multiprocessing as mp

        self.size = workers or default_workers()
        # spawn: a clean interpreter per worker (no inherited threads or locks); started once per sweep.
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.describe = f"{self.size} local worker process{'es' if self.size != 1 else ''}"
        self.answered = 0  # outcomes received: once one worker has worked, a death is that point's problem
        self.start_failures = 0

    def start(self, n_tasks: int) -> None:
        while len(self.workers) < min(self.size, n_tasks):
            self.workers.append(_Worker(self.ctx))

    def idle(self) -> int:
        return sum(w.task is None for w in self.workers) + max(0, self.size - len(self.workers))

    def busy(self) -> int:
        return sum(w.task is not None for w in self.workers)

    def running(self) -> set:
        return {w.task for w in self.workers if w.task is not None}

    def submit(self, task: dict) -> str:
        for attempt in range(3):
            w = next((w for w in self.workers if w.task is None), None)
            if w is None:
                w = _Worker(self.ctx)
                self.workers.append(w)
            try:
                w.conn.send(task)
                w.task = task["index"]
                return f"{_hostname()} pid {w.proc.pid}"
            except OSError:  # it died while idle: replace it
                self._drop(w)
        raise InitlabError("cannot start a worker process")

    def _drop(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(1)
        w.conn.close()
        self.workers.remove(w)

    def poll(self, timeout: float) -> list[dict]:
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            time.sleep(timeout)
            return []
        ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout))
        out = []
        for w in busy:
            if w.conn in ready or w.proc.sentinel in ready:
                out.append(self._collect(w))
        return out

    def _collect(self, w: _Worker, reason: str = "") -> dict:
        index = w.task
        try:
            if w.conn.poll():
                outcome = w.conn.recv()
                w.task = None
                w.done += 1
                self.answered += 1
                return outcome
        except Exception:  # EOF or a truncated message: the worker died, perhaps mid-send
            pass
        w.proc.join(1)
        code = w.proc.exitcode
        self._drop(w)
        if reason:
            return {"index": index, "status": "interrupted", "error": None, "exit_reason": reason}
        if not w.done and not self.answered and code is not None and code > 0:
            self.start_failures += 1
            if self.start_failures >= 2:
                raise WorkerStartError(
                    f"worker processes exit (code {code}) before running any point; their error is printed above. "
                    "A script that calls initlab.sweep() must be importable: a file with `if __name__ == '__main__':`")
        why = f"signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else f"exit code {code}"
        msg = f"the worker process died ({why}) while running this point"
        return {"index": index, "status": "failed", "error": msg, "exit_reason": msg}

    def interrupt(self, reason: str, grace: float, force: Callable[[], bool]) -> list[dict]:
        """Ask busy workers to stop (their points save partial results), wait ``grace`` s, then kill."""
        from multiprocessing.connection import wait

        out = []
        for w in self.workers:
            if w.task is not None and w.proc.is_alive():
                try:
                    os.kill(w.proc.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        while any(w.task is not None for w in self.workers) and time.monotonic() < deadline and not force():
            busy = [w for w in self.workers if w.task is not None]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], 0.1))
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    out.append(self._collect(w, reason))
        for w in [w for w in self.workers if w.task is not None]:
            out.append(self._collect(w, reason) if w.conn.poll() else self._kill(w, reason))
        return out

    def _kill(self, w: _Worker, reason: str) -> dict:
        index = w.task
        self._drop(w)
        return {"index": index, "status": "interrupted", "error": None, "exit_reason": reason}

    def close(self) -> None:
        for w in list(self.workers):
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for w in list(self.workers):
            w.proc.join(max(0.0, deadline - time.monotonic()))
            self._drop(w)


class DaskBackend:
    """The points as tasks on an existing Dask distributed cluster (workers must see the sweep directory)."""

    limit_threads = True

    def __init__(self, address: str, workers: Optional[int] = None):
        try:
            import distributed
        except ImportError:
            raise ConfigError("--scheduler needs the optional extra: pip install 'initlab[distributed]'") from None
        self.distributed = distributed
        try:
            self.client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
        except Exception as e:
            raise ConfigError(f"--scheduler {address}: cannot connect ({type(e).__name__}: {e})") from None
        self.limit = workers
        self.inflight: dict = {}
        self.describe = f"the Dask cluster at {address}"

    def _capacity(self) -> int:
        try:
            n = sum(self.client.nthreads().values())
        except Exception:
            n = 1
        return max(1, min(n, self.limit) if self.limit else n)

    def start(self, n_tasks: int) -> None:
        self.capacity = self._capacity()

    def idle(self) -> int:
        return self.capacity - len(self.inflight)

    def busy(self) -> int:
        return len(self.inflight)

    def running(self) -> set:
        return set(self.inflight.values())

    def submit(self, task: dict) -> str:
        import uuid

        fut = self.client.submit(run_point, task, pure=False, key=f"initlab-point-{task['index']}-{uuid.uuid4().hex[:8]}")
        self.inflight[fut] = task["index"]
        return "dask"

    def poll(self, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            done = [f for f in self.inflight if f.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        out = []
        for f in done:
            index = self.inflight.pop(f)
            try:
                out.append(f.result())
            except Exception as e:
                msg = f"the Dask task failed: {type(e).__name__}: {e}"
                out.append({"index": index, "status": "failed", "error": msg, "exit_reason": msg})
        return out

    def interrupt(self, reason: str, grace: float, force) -> list[dict]:
        # Dask cannot stop a task that has started: it runs to its end and writes its run directory,
        # which a later --resume adopts if it completed.
        futures = list(self.inflight)
        try:
            self.client.cancel(futures)
        except Exception:
            pass
        out = [{"index": i, "status": "interrupted", "error": None, "exit_reason": reason} for i in self.inflight.values()]
        self.inflight.clear()
        return out

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def make_backend(scheduler: Optional[str] = None, workers: Optional[int] = None):
    if scheduler:
        return DaskBackend(scheduler, workers)
    return LocalBackend(workers)


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    sweep_dir: Path
    counts: dict
    points: list = field(default_factory=list)  # the rows of summary.json
    stopped_by: Optional[str] = None  # "SIGINT", "SIGTERM", "--fail-fast" or "error"
    error: Optional[str] = None  # why the sweep itself stopped (stopped_by "error")

    @property
    def interrupted(self) -> bool:
        return self.stopped_by in ("SIGINT", "SIGTERM")

    def exit_code(self, fail_on_diverge: bool = False) -> int:
        """SPEC's worst outcome: 130 interrupted, 1 any failed, 3 any diverged (with the flag), else 0."""
        if self.interrupted:
            return 130
        if self.counts.get("failed") or self.stopped_by:
            return 1
        if self.counts.get("interrupted") or self.counts.get("pending"):
            return 130  # a worker was interrupted on its own: the sweep is incomplete
        if fail_on_diverge and self.counts.get("diverged"):
            return 3
        return 0

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.counts.items() if v}
        return f"SweepResult(sweep_dir={str(self.sweep_dir)!r}, counts={shown})"


def sweep(config=None, axes=None, *, overrides=(), seed=None, seeds=None, out="outputs", workers=None,
          fail_fast=False, resume=None, scheduler=None, figures=False, progress=False,
          log: Optional[Callable[[str], None]] = None) -> SweepResult:
    """Run every point of a grid and write the sweep directory; see the module docstring.

    ``config``: a path, a mapping, a Config or None (the embedded default). ``axes``: a mapping of
    dotted key → list of values (or :class:`Axis` objects, e.g. from :func:`command_axes`).
    ``overrides``: ``"key=value"`` strings or pairs applied to every point. ``resume``: an existing
    sweep directory; only its unfinished points run (the other arguments, when given, must
    describe the same grid). ``scheduler``: a Dask scheduler address (default
    ``$INITLAB_DASK_SCHEDULER``); otherwise ``workers`` local processes (default: one per core).
    ``figures``: also draw each point's own PNGs. Ctrl-C or SIGTERM stops the sweep cleanly:
    the result then has ``stopped_by`` set and ``exit_code()`` 130.
    """
    from initlab.output import make_unique_dir, timestamp

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be an integer ≥ 1, got {workers!r}")
    scheduler = scheduler or os.environ.get("INITLAB_DASK_SCHEDULER") or None
    log = log or (lambda msg: None)
    lock = None
    if resume is not None:
        sweep_dir = Path(resume)
        manifest = read_manifest(sweep_dir)
        plan = load_plan(sweep_dir)
        if plan.hash != manifest["config_hash"]:
            raise ConfigError(f"{sweep_dir}: sweep.yaml does not match manifest.json (edited by hand?)")
        if config is not None or axes or overrides or seed is not None or seeds is not None:
            other = make_plan(config, axes, overrides, seed, seeds)
            if other.hash != plan.hash:
                raise ConfigError(f"{sweep_dir}: belongs to a different config (its hash {plan.hash}, this command's "
                                  f"{other.hash}); `initlab sweep --resume {sweep_dir}` alone resumes it as it was")
        backend = make_backend(scheduler, workers)
        try:
            lock = _Lock(sweep_dir)
            todo = _reconcile(sweep_dir, manifest, plan)
        except BaseException:
            backend.close()
            if lock:
                lock.release()
            raise
    else:
        plan = make_plan(config, axes, overrides, seed, seeds)
        backend = make_backend(scheduler, workers)
        try:
            sweep_dir = make_unique_dir(Path(out) / plan.name, f"sweep-{timestamp()}")
            lock = _Lock(sweep_dir)
            from initlab.output import atomic_write

            atomic_write(sweep_dir / "sweep.yaml", plan.sweep_yaml())
            (sweep_dir / "runs").mkdir()
            manifest = _new_manifest(plan)
            _write_manifest(sweep_dir, manifest)
        except BaseException:
            backend.close()
            if lock:
                lock.release()
            raise
        todo = [p.index for p in plan.points]
    try:
        runner = _Runner(sweep_dir, manifest, plan, backend, fail_fast, figures, progress, log)
        if resume is not None:
            done = len(plan.points) - len(todo)
            log(f"resuming {sweep_dir}: {done} of {len(plan.points)} points done, {len(todo)} to run")
        else:
            log(f"{sweep_dir}: {len(plan.points)} point{'s' if len(plan.points) != 1 else ''} on {backend.describe}")
        stopped_by = runner.run(todo)
    finally:
        backend.close()
        if lock:
            lock.release()
    rows = write_summary(sweep_dir, manifest)
    _draw(sweep_dir, log)
    return SweepResult(sweep_dir, _counts(manifest), rows, stopped_by, runner.error)


def _import_plotting() -> None:
    try:
        import initlab.sweep_plot  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except Exception:  # the real import, when drawing, reports any problem
        pass


def _counts(manifest: dict) -> dict:
    counts = dict.fromkeys(STATUSES, 0)
    for mp in manifest["points"]:
        counts[mp["status"]] = counts.get(mp["status"], 0) + 1
    return counts


def _draw(sweep_dir: Path, log) -> None:
    try:
        from initlab.sweep_plot import plot_sweep

        plot_sweep(sweep_dir)
    except KeyboardInterrupt:
        log("sweep.png skipped (interrupted); `initlab plot` draws it later")
    except Exception as e:  # the numbers are saved; a figure is not worth failing for
        log(f"warning: sweep.png not drawn ({type(e).__name__}: {e})")


class _Runner:
    """The parent's loop: dispatch points, record outcomes in the manifest, stop cleanly on a signal."""

    def __init__(self, sweep_dir, manifest, plan, backend, fail_fast, figures, progress, log):
        self.sweep_dir, self.manifest, self.plan, self.backend = Path(sweep_dir), manifest, plan, backend
        self.fail_fast, self.figures, self.log = fail_fast, figures, log
        self.progress = progress
        self.stop: Optional[str] = None
        self.error: Optional[str] = None
        self.force = False
        self.last_write = 0.0
        self.bar = None
        self.finished = 0

    # signals: the handlers only set flags; the loop notices within a poll interval
    def _on_signal(self, signum, frame):
        if self.stop is None:
            self.stop = signal.Signals(signum).name
        else:
            self.force = True  # a second Ctrl-C: stop waiting for workers to save

    def _install(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._on_signal)
        return old

    def _save(self, force=False):
        now = time.monotonic()
        if force or now - self.last_write >= MANIFEST_EVERY_S:
            _write_manifest(self.sweep_dir, self.manifest)
            self.last_write = now

    def run(self, todo: list[int]) -> Optional[str]:
        m = self.manifest
        m["state"] = "running"
        m.setdefault("invocations", []).append({"started": _now(), "points": len(todo), "on": self.backend.describe})
        old = self._install()
        try:
            self._save(force=True)
            self._open_bar(len(todo))
            self._loop(deque(todo))
        finally:
            if old:
                for s, h in old.items():
                    signal.signal(s, h)
            self._close_bar()
        c = _counts(m)
        m["state"] = "interrupted" if self.stop else ("failed" if c["failed"] else "completed")
        if self.error:
            m["error"] = self.error
        m["invocations"][-1].update(finished=_now(), stopped_by=self.stop)
        self._save(force=True)
        return self.stop

    def _loop(self, queue: deque) -> None:
        points = self.manifest["points"]
        if queue:
            self.backend.start(len(queue))
        warm = None
        while (queue or self.backend.busy()) and self.stop is None:
            while queue and self.backend.idle() > 0 and self.stop is None:
                index = queue.popleft()
                self._start(index)
            if not queue and warm is None:
                # Every point is out: a core frees up as the last ones finish. Import matplotlib now, in
                # the background, so that drawing sweep.png at the end does not wait for it.
                warm = threading.Thread(target=_import_plotting, daemon=True)
                warm.start()
            try:
                outcomes = self.backend.poll(0.2)
            except WorkerStartError as e:
                self.stop, self.error = "error", str(e)
                busy = self.backend.running()
                lost = [i for i, mp in enumerate(points) if mp["status"] == "running" and i not in busy]
                queue.extendleft(sorted(lost, reverse=True))
                break
            for outcome in outcomes:
                self._finish(outcome)
                if self.fail_fast and outcome["status"] == "failed" and self.stop is None:
                    self.stop = "--fail-fast"
                    self.fail_index = outcome["index"]
        if self.stop is None:
            return
        if self.stop == "--fail-fast":
            reason = f"stopped by --fail-fast (point {self.fail_index} failed)"
        elif self.stop == "error":
            reason = "stopped: the worker processes could not start"
        else:
            reason = f"interrupted by {self.stop}"
        self.log(f"{reason}: stopping {self.backend.busy()} running point(s)…" if self.backend.busy() else reason)
        for outcome in self.backend.interrupt(f"{reason} while running", GRACE_S, lambda: self.force):
            self._finish(outcome)
        for index in queue:
            points[index].update(status="interrupted", exit_reason=f"{reason} before it started",
                                 started=None, worker=None)
        self._save(force=True)

    def _start(self, index: int) -> None:
        p = self.plan.points[index]
        run_dir = self.sweep_dir / p.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        task = {"index": index, "config": p.config.to_dict(), "run_dir": str(run_dir.resolve()),
                "figures": self.figures, "limit_threads": self.backend.limit_threads}
        worker = self.backend.submit(task)
        self.manifest["points"][index].update(status="running", started=_now(), finished=None, error=None,
                                              exit_reason=None, duration_s=None, worker=worker)
        self._save()

    def _finish(self, outcome: dict) -> None:
        mp = self.manifest["points"][outcome["index"]]
        mp.update(status=outcome["status"], finished=_now(), error=outcome.get("error"),
                  exit_reason=outcome.get("exit_reason"), duration_s=outcome.get("duration_s"))
        if outcome.get("worker"):
            mp["worker"] = outcome["worker"]
        self._save(force=True)  # a finished point is recorded at once (starts are batched, every 0.25 s)
        self.finished += 1
        self._report(mp)

    # progress: one bar on a terminal, one line per point otherwise
    def _open_bar(self, total: int) -> None:
        if self.progress and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.plan.name, unit="point", file=sys.stderr, dynamic_ncols=True)
        self.total = total

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _report(self, mp: dict) -> None:
        line = f"[{self.finished}/{self.total}] {Path(mp['run_dir']).name}: {mp['status']}"
        if mp.get("duration_s") is not None:
            line += f" ({mp['duration_s']:.1f} s)"
        if mp["status"] == "failed" and mp.get("error"):
            line += f": {mp['error']}"
        elif mp["status"] == "diverged" and mp.get("exit_reason"):
            line += f": {mp['exit_reason']}"
        if self.bar is not None:
            self.bar.update(1)
            c = _counts(self.manifest)
            self.bar.set_postfix_str(" ".join(f"{k} {c[k]}" for k in ("completed", "diverged", "failed") if c[k]))
            if mp["status"] not in DONE:
                self.bar.write(line, file=sys.stderr)
        else:
            self.log(line)


# ---------------------------------------------------------------- summary


def summary_rows(sweep_dir, manifest: Optional[dict] = None) -> list[dict]:
    """One row per point: overrides, seed, status, run dir, final metrics and per-layer activation std at init."""
    sweep_dir = Path(sweep_dir)
    manifest = manifest or read_manifest(sweep_dir)
    rows = []
    for mp in manifest["points"]:
        metrics = _read_metrics(sweep_dir / mp["run_dir"]) or {}
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
    from initlab.output import atomic_write, write_json

    rows = summary_rows(sweep_dir, manifest)
    write_json(Path(sweep_dir) / "summary.json", rows)
    atomic_write(Path(sweep_dir) / "summary.csv", summary_csv(rows))
    return rows


# ---------------------------------------------------------------- `initlab.sweep(...)`


class _CallableModule(type(sys)):
    """``initlab.sweep`` is both this module and the function: once the module is imported, Python
    binds the package attribute to the module, so the module forwards calls to :func:`sweep`."""

    def __call__(self, *args, **kwargs) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
