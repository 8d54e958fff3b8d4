"""The grid of a sweep: command-line lists and axes, the points they make, and their labels.

An axis is a dotted key and a list of values (a mapping value merges into its section). The
grid is the Cartesian product of the config's ``sweep:`` axes and the given ones; every point is
validated before anything is written, and named by the keys that vary between points.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from initlab.errors import ConfigError
from initlab.keys import ROOT_AXIS, axis_leaves, format_value

MAX_POINTS = 100_000
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
    from initlab.yamlio import parse_value

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
            out |= set(axis_leaves(self.key, v))
        return out


def command_axes(std=None, init=None, activation=None, depth=None, sets=()) -> list[Axis]:
    """The command line's lists as axes, in order: ``--init``, ``--std``, ``--activation``, ``--depth``, ``--set``.

    ``--std A,B`` is the textbook's ``randn·std``: ``init.scheme=normal`` with ``init.std`` A, B
    (with ``--init`` it sweeps ``init.std`` alone). ``--init`` sets ``init.scheme`` and, for
    schemes that compute their own scale, clears an inherited ``init.std``.
    """
    from initlab.engine.initializers import ALIASES, STD_SCHEMES

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


def apply_axis(raw: dict, key: str, value) -> dict:
    """``raw`` with one axis value applied (a mapping merges into its section)."""
    from initlab.config import apply_override

    if key == ROOT_AXIS:
        axis_leaves(key, value)  # the shape check
        for section, sub in value.items():
            raw = apply_override(raw, str(section), sub)
        return raw
    return apply_override(raw, key, value)


def _check_key(key: str, where: str) -> None:
    if not _KEY_RE.match(key):
        raise ConfigError(f"{where}: '{key}' is not a dotted key path like model.depth")
    if key.split(".")[0] == "sweep":
        raise ConfigError(f"{where}: the sweep section cannot be swept")


def _overlap(a: set, b: set) -> bool:
    return any(x == y or x.startswith(y + ".") or y.startswith(x + ".") for x in a for y in b)


def _consistent(a: list, b: list) -> bool:
    """Whether two settings of overlapping keys say the same thing (``--std 0.1,0.05`` and ``--set
    init.scheme=normal``): one gives a single value to each shared leaf and every value of the other agrees."""
    la, lb = set().union(*a), set().union(*b)
    if any(x != y and (x.startswith(y + ".") or y.startswith(x + ".")) for x in la for y in lb):
        return False  # a mapping against one of its leaves: not comparable value by value
    shared = la & lb
    for one, many in ((a, b), (b, a)):
        if len(one) == 1 and all(all(k in d for k in shared) for d in many):
            if all(repr(d[k]) == repr(one[0][k]) for d in many for k in shared):
                return True
    return False


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
        from initlab.yamlio import dump_yaml

        raw = dict(self.base)
        raw["sweep"] = {a.key: a.values for a in self.axes}
        head = "# Written by initlab sweep: the base config and its axes. `initlab sweep THIS_FILE` runs the same grid.\n"
        return head + dump_yaml(raw)


def _read_raw(config) -> tuple[dict, str]:
    from initlab.config import DEFAULT_NAME, Config, read_config_file

    if config is None:
        return {}, DEFAULT_NAME
    if isinstance(config, Config):
        return config.to_dict(), config.name
    if isinstance(config, dict):
        return copy.deepcopy(config), str(config.get("name") or DEFAULT_NAME)
    raw, name = read_config_file(config)
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

    raw, name = _read_raw(config)
    file_axes = _file_axes(raw.pop("sweep", None) or {})
    given = _as_axes(axes)
    fixed = _fixed_overrides(overrides)  # (key, value, source)
    _seed_axis(raw, given, fixed, seed, seeds)
    all_axes = _combine(file_axes, given, fixed)
    for key, value, _ in fixed:
        raw = apply_axis(raw, key, value)
    if "name" not in [key for key, _, _ in fixed]:  # `--set name=…` names the sweep as it names a run
        raw["name"] = name
    raw.setdefault("seed", 0)
    total = 1
    for a in all_axes:
        total *= len(a.values)
    if total > MAX_POINTS:
        raise ConfigError(f"the grid has {total} points; at most {MAX_POINTS} are allowed")
    points = _points(raw, all_axes, name)
    name = points[0].config.name  # validated like a run's name (a folder name, never a path)
    raw["name"] = name
    _check_distinct(points)
    _name_points(points, name)
    return Plan(name, raw, all_axes, points)


def _file_axes(config_axes) -> list[Axis]:
    """The config's ``sweep:`` section as axes."""
    if not isinstance(config_axes, dict):
        raise ConfigError(f"sweep: must be a mapping of dotted keys to lists of values, got {type(config_axes).__name__}")
    file_axes = []
    for key, values in config_axes.items():
        _check_key(str(key), "sweep")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: must be a non-empty list of values")
        file_axes.append(Axis(str(key), values, f"sweep: {key}"))
    return file_axes


def _fixed_overrides(overrides) -> list[tuple]:
    from initlab.config import parse_override

    fixed = []
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        fixed.append((key, value, f"--set {key}"))
    return fixed


def _seed_axis(raw: dict, given: list, fixed: list, seed, seeds) -> None:
    """``seeds=N`` adds the axis ``seed: [s, …, s+N-1]``; a lone ``seed`` is an override."""
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"--seeds must be an integer ≥ 1, got {seeds!r}")
    if seeds is not None and seeds > MAX_POINTS:
        # Checked before the seed list is built: a huge --seeds must not allocate anything.
        raise ConfigError(f"--seeds {seeds}: the grid would have at least {seeds} points; "
                          f"at most {MAX_POINTS} are allowed")
    if seeds is not None and seeds > 1:
        base_seed = seed if seed is not None else raw.get("seed", 0)
        if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
            raise ConfigError(f"seed: must be an integer ≥ 0 to derive --seeds from, got {base_seed!r}")
        raw["seed"] = base_seed
        given.append(Axis("seed", [base_seed + r for r in range(seeds)], "--seeds"))
    elif seed is not None:
        fixed.append(("seed", seed, "--seed"))


def _combine(file_axes: list, given: list, fixed: list) -> list[Axis]:
    """The grid's axes: one-value axes become overrides (appended to ``fixed``); the caller's axes
    and overrides replace config axes on the same keys; the same key set twice is an error."""
    for a in [a for a in given if len(a.values) == 1]:
        fixed.append((a.key, a.values[0], a.source))
    given = [a for a in given if len(a.values) > 1]
    caller = [(a.leaves(), a.source) for a in given] + [(set(axis_leaves(k, v)), src) for k, v, src in fixed]
    settings = [[axis_leaves(a.key, v) for v in a.values] for a in given] + [[axis_leaves(k, v)] for k, v, _ in fixed]
    for i, (la, sa) in enumerate(caller):
        for j, (lb, sb) in enumerate(caller[i + 1:], i + 1):
            if _overlap(la, lb) and not _consistent(settings[i], settings[j]):
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
    return [a for a in kept if len(a.values) > 1] + given


def _points(raw: dict, all_axes: list, name: str) -> list[Point]:
    """One validated :class:`Point` per combination, in the order of ``itertools.product``."""
    from initlab.config import validate
    from initlab.memory import check_memory, memory_limit

    limit = memory_limit()
    points = []
    for index, combo in enumerate(itertools.product(*[a.values for a in all_axes])):
        point_raw, overrides_ = raw, {}
        for a, value in zip(all_axes, combo):
            point_raw = apply_axis(point_raw, a.key, value)
            overrides_.update(axis_leaves(a.key, value))
        try:
            cfg = validate(point_raw, default_name=name)
            check_memory(cfg, limit)
        except ConfigError as e:
            where = ", ".join(f"{k}={format_value(v)}" for k, v in overrides_.items())
            raise ConfigError(f"point {index} ({where}): {e}" if where else str(e)) from e
        points.append(Point(index, overrides_, cfg))
    return points


def _check_distinct(points: list[Point]) -> None:
    seen = {}
    for p in points:
        if p.config.hash in seen:
            q = seen[p.config.hash]
            raise ConfigError(f"points {q.index} and {p.index} are the same experiment "
                              f"({_describe(q.overrides)} and {_describe(p.overrides)})")
        seen[p.config.hash] = p


def _lookup(d: dict, key: str):
    node = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _describe(overrides: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "no overrides"


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
    """``model.activation`` → ``activation`` unless two keys share their last part; ``optimizer.name`` →
    ``optimizer`` (a bare ``name`` would not say what is named)."""
    last = [k.rsplit(".", 2)[-2] if k.endswith(".name") else k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _slug_part(short: str, v) -> str:
    if isinstance(v, bool) or v is None:
        return short if v else f"no-{short}"
    if isinstance(v, str):
        return v
    return f"{short}{format_value(v)}"


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
        p.label = ", ".join(f"{shorts[k]}={format_value(v)}" for k, v in vals.items()) or name
        slug = "_".join(_slug_part(shorts[k], v) for k, v in vals.items()) or name
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", slug).strip("-.")[:48].rstrip("-.") or "point"
        p.run_dir = f"runs/{p.index:0{width}d}-{slug}"


def load_plan(sweep_dir) -> Plan:
    """The grid of an existing sweep directory, rebuilt from its ``sweep.yaml``."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no sweep.yaml)")
    return make_plan(path)
