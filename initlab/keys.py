"""Dotted key paths (``init.std``): a nested mapping flattened to them, and a value written as in ``--set``."""
from __future__ import annotations

import json

# A sweep axis whose values are partial configs merged at the top level, for points that differ in
# more than one section (``{model: {residual: true}, init: {scheme: fixup}}``): a list, not a product.
ROOT_AXIS = "points"


def flatten(key: str, value) -> dict:
    """``("init", {"scheme": "normal", "std": 1})`` → ``{"init.scheme": "normal", "init.std": 1}``."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{key}.{k}" if key else str(k), v))
        return out
    return {key: value}


def format_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def axis_leaves(key: str, value) -> dict:
    """The dotted keys a sweep axis value sets: ``("init", {"scheme": "normal"})`` → ``{"init.scheme": "normal"}``;
    a :data:`ROOT_AXIS` value is a partial config, its sections merged at the top level."""
    if key == ROOT_AXIS:
        if not isinstance(value, dict) or not value:
            from initlab.errors import ConfigError

            raise ConfigError(f"{ROOT_AXIS}: each value must be a mapping of config sections, e.g. "
                              f"{{model: {{residual: true}}, init: {{scheme: fixup}}}}; got {format_value(value)}")
        return flatten("", value)
    return flatten(key, value)
