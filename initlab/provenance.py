"""Where a run or sweep came from: ``provenance.json`` beside its ``config.yaml``.

Enough to make it again (the command line, the source config, the overrides, the seed) and to
explain a difference when it does not come out the same (versions, platform, BLAS, git commit).
Every value is cheap to get; the git commit has a short deadline and is null outside a checkout.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

GIT_TIMEOUT_S = 2.0


def git_commit(cwd=None) -> str | None:
    """The commit checked out in ``cwd`` (default: the current directory), or None (no git, not a
    checkout, or git too slow: provenance must never hold a run up)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 40 else None


def git_dirty(cwd=None) -> bool | None:
    """Whether tracked files differ from the commit (None when unknown)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def blas() -> list[dict]:
    """The BLAS libraries NumPy loaded and their thread counts (threadpoolctl), outside any run's limit."""
    try:
        from threadpoolctl import threadpool_info

        return [{"library": i.get("internal_api"), "version": i.get("version"), "threads": i.get("num_threads"),
                 "path": i.get("filepath")} for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl cannot inspect this platform's libraries: say nothing rather than fail
        return []


def _overrides(items) -> list[str]:
    out = []
    for item in items or ():
        out.append(item if isinstance(item, str) else f"{item[0]}={item[1]}")
    return out


def collect(config_path=None, overrides=(), seed=None, axes=None, kind: str = "run", command=None) -> dict:
    """The provenance of a run (``kind="run"``) or sweep being started now, in this process.

    ``config_path``: the source YAML (None: the embedded default, or a mapping given in Python);
    ``overrides``: the ``--set`` strings or (key, value) pairs; ``axes``: a sweep's axes;
    ``command``: the command line (default ``sys.argv``).
    """
    import numpy

    import initlab

    commit = git_commit()
    source = None
    if config_path is not None and isinstance(config_path, (str, os.PathLike)):
        source = str(Path(config_path).resolve())
    return {
        "kind": kind,
        "command": list(command) if command is not None else [Path(sys.argv[0]).name if sys.argv else "python",
                                                              *sys.argv[1:]],
        "cwd": os.getcwd(),
        "config_path": source,
        "overrides": _overrides(overrides),
        "seed": seed,
        "axes": axes,
        "versions": {"initlab": initlab.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "python_implementation": platform.python_implementation()},
        "blas": blas(),
        "blas_threads_env": os.environ.get("INITLAB_BLAS_THREADS"),
        "git_commit": commit,
        "git_dirty": git_dirty() if commit else None,
    }
