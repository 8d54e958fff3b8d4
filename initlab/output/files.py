"""Files on disk: collision-free run directories, atomic writes, strict JSON, CSV and NPZ round trips."""
from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from initlab.errors import InitlabError
from initlab.numbers import finite_or_none


class OutputError(InitlabError):
    """The output location cannot be created or written (exit code 1)."""


def _oserror(e: OSError, path) -> OutputError:
    return OutputError(f"{path}: {e.strerror or e}")


LATEST = "latest"  # <out>/<name>/latest: the newest finished run or sweep of that name (output/rundir.link_latest)


def timestamp(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(t))


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (links followed) lies in ``root``: a manifest naming a folder elsewhere is not trusted."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def make_dir(path: Path) -> Path:
    """``mkdir -p path``; an :class:`OutputError` naming the file in the way, or the reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # Name the path that is in the way (the output root itself, usually), not its child.
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"{blocker}: exists and is not a directory") from e
        raise OutputError(f"{path}: cannot create ({e.strerror or e})") from e
    return path


def make_unique_dir(parent: Path, stem: str) -> Path:
    """Create ``parent/stem``, or ``stem-1``, ``stem-2``… exclusively (never reuse an existing folder)."""
    parent = make_dir(parent)
    for k in range(10_000):
        path = parent / (stem if k == 0 else f"{stem}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise _oserror(e, path) from e
    raise OutputError(f"{parent}: too many runs named {stem}")


def run_dir(out, name: str) -> Path:
    """``<out>/<name>/<YYYY-MM-DD_HH-MM-SS>[-N]/``"""
    return make_unique_dir(Path(out) / name, timestamp())


def atomic_write(path, data: bytes | str) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # also KeyboardInterrupt: never leave the temporary file behind
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _oserror(e, path) from e
        raise


def strict(obj):
    """Replace non-finite floats by None, NumPy scalars and arrays by Python values."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(obj, indent=2) -> str:
    return json.dumps(strict(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path, obj) -> None:
    atomic_write(path, dumps(obj))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


HISTORY_COLUMNS = ("step", "train_loss", "grad_norm", "eval_loss", "eval_acc", "train_acc")


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return repr(float(x))


def write_history(path, history: dict, columns=HISTORY_COLUMNS) -> None:
    """One row per step; empty cells where a column was not measured (or not finite)."""
    if "step" not in history:  # stopped before training began: the header alone
        history = {c: () for c in columns}
    cols = [c for c in columns if c in history]
    buf = io.StringIO()
    buf.write(",".join(cols) + "\n")
    n = len(history["step"])
    arrays = [history[c] for c in cols]
    for i in range(n):
        row = [str(int(arrays[0][i]))] + [_fmt(a[i]) for a in arrays[1:]]
        buf.write(",".join(row) + "\n")
    atomic_write(path, buf.getvalue())


def read_history(path) -> dict:
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        rows = [line.rstrip("\n").split(",") for line in f if line.strip()]
    out = {}
    for j, col in enumerate(header):
        vals = [r[j] if j < len(r) else "" for r in rows]
        out[col] = np.array([float(v) if v else np.nan for v in vals])
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out


def write_npz(path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, buf.getvalue())


def read_npz(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
