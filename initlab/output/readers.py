"""Reading run and sweep directories back, for everything that looks at results after the fact
(figures, summaries, resume). A directory that is not what it should be is a :class:`ConfigError`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from initlab.errors import ConfigError
from initlab.output.files import read_json


def read_manifest(sweep_dir) -> dict:
    """``manifest.json`` of a sweep directory, or a :class:`ConfigError` saying it is not one."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such sweep directory")
    path = sweep_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no manifest.json)")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list) or "config_hash" not in manifest:
        raise ConfigError(f"{path}: not an initlab sweep manifest")
    return manifest


def read_metrics(run_dir: Path) -> Optional[dict]:
    try:
        m = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def read_json_object(path: Path) -> Optional[dict]:
    """A JSON file that should hold an object: the object, None when absent; ValueError when unreadable."""
    try:
        obj = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name}: {getattr(e, 'strerror', None) or e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return obj


# Run and point statuses from best to worst: a group of them (a sweep, a point's seeds) is as good as its worst.
STATUS_RANK = ("completed", "diverged", "pending", "running", "interrupted", "failed")


def worst_status(statuses):
    """The worst of ``statuses`` by :data:`STATUS_RANK` (an unknown status counts as worse than all)."""
    return max(statuses, key=lambda s: STATUS_RANK.index(s) if s in STATUS_RANK else len(STATUS_RANK))
