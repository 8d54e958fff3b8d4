"""Reading config YAML safely: size, nesting and alias limits, one-line :class:`ConfigError` messages.

Safe loading only (no Python tags), YAML 1.2 exponents, duplicate keys refused. Validation of
what the document says is :mod:`initlab.config`'s job.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from initlab.errors import ConfigError, short

MAX_CONFIG_BYTES = 1 << 20
MAX_NESTING = 32  # a real config is at most ~5 levels deep (sweep axis → list → mapping → list)
MAX_NODES = 100_000  # values in a document, aliases counted each time they are used ("billion laughs")


def read_yaml(path: str | Path) -> Any:
    """Read one YAML document safely; every failure is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, not a config file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config files over 1 MiB are refused ({size} bytes)")
        with open(path, "rb") as f:  # bounded: a device or pipe has no size to check beforehand
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config files over 1 MiB are refused")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such config file") from e
    except PermissionError as e:
        raise ConfigError(f"{path}: permission denied") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    return parse_yaml(text, str(path))


class _Loader(yaml.SafeLoader):
    """Safe loading (no Python tags), plus YAML 1.2 exponents (``1e-3`` is a float, not a string),
    and a key given twice in one mapping is an error rather than the last one silently winning."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"the key '{short(key_node.value)}' is given twice", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


class _Dumper(yaml.SafeDumper):
    """Safe dumping that quotes every string the loader would read as something else."""


class _SavedLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Files initlab wrote itself (a run's config.yaml): libyaml's parser where PyYAML has it,
    about ten times faster for a figure that reads a sweep's 32 configs; the same values."""


# YAML 1.2 exponents: 1e-3 is a float. The dumper knows it too, so a string such as "1e5" (a
# run's name) is written quoted and reads back as the string it was.
for _cls in (_Loader, _Dumper, _SavedLoader):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def parse_saved_yaml(text: str) -> Any:
    """A YAML file initlab wrote (config.yaml, sweep.yaml): trusted, so no limits; safe tags only."""
    return yaml.load(text, Loader=_SavedLoader)


def dump_yaml(data: Any) -> str:
    """``data`` as block YAML in insertion order, read back by :func:`parse_yaml` as the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=False)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def check_shape(obj: Any, where: str) -> None:
    """Refuse a document nested deeper than :data:`MAX_NESTING` levels (or self-referencing)
    or holding more than :data:`MAX_NODES` values, counting an alias each time it is used."""
    stack, nodes = [(obj, 0)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"{where}: too many values (over {MAX_NODES}, aliases counted each time they are used)")
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth >= MAX_NESTING:
            raise ConfigError(f"{where}: the document is nested too deeply (over {MAX_NESTING} levels)")
        stack.extend((child, depth + 1) for child in children)


def parse_yaml(text: str, where: str = "<config>") -> Any:
    try:
        data = _load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = e.problem or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML error{at}: {problem}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {str(e).splitlines()[0]}") from e
    except RecursionError as e:
        raise ConfigError(f"{where}: the document is nested too deeply") from e
    except (ValueError, OverflowError) as e:
        # PyYAML's scanner lets chr() fail on an escape such as "\U00110000" instead of a YAMLError.
        raise ConfigError(f"{where}: YAML error: a character escape or number is out of range") from e
    check_shape(data, where)
    return data


def parse_value(value: str, where: str) -> Any:
    try:
        parsed = _load(value) if value.strip() else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: cannot parse {short(repr(value))} ({problem})") from e
    except RecursionError as e:
        raise ConfigError(f"{where}: value nested too deeply") from e
    except (ValueError, OverflowError) as e:
        raise ConfigError(f"{where}: cannot parse {short(repr(value))} (a character escape or number is out of range)") from e
    check_shape(parsed, where)
    return parsed
