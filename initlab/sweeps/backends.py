"""Where the points of a sweep run: :func:`run_point` in local worker processes or on a Dask cluster.

Both backends share one interface (``start``, ``idle``, ``room``, ``busy``, ``running``, ``submit``,
``poll``, ``interrupt``, ``dismiss``, ``close``); outcomes are plain dicts, recorded by the sweep's parent.
"""
from __future__ import annotations

from typing import Optional

from initlab.sweeps.dask_backend import DaskBackend
from initlab.sweeps.local import LocalBackend


def make_backend(scheduler: Optional[str] = None, workers: Optional[int] = None, log=None, share_cores: bool = True):
    if scheduler:
        return DaskBackend(scheduler, workers, log)
    return LocalBackend(workers, share_cores)
