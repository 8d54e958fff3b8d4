"""Dotted key paths (``init.std``): a nested mapping flattened to them, and a value written as in ``--set``."""
from __future__ import annotations

import json


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
