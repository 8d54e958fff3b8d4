"""Where the points of a sweep run: :func:`run_point` in local worker processes or on a Dask cluster.

Both backends share one interface (``start``, ``idle``, ``busy``, ``running``, ``submit``,
``poll``, ``interrupt``, ``close``); outcomes are plain dicts, recorded by the sweep's parent.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from initlab.errors import ConfigError, InitlabError, RuntimeStateError, describe
from initlab.output.readers import read_metrics

DASK_CONNECT_TIMEOUT = "10s"


# ---------------------------------------------------------------- one point (runs in a worker)


def run_point(task: dict) -> dict:
    """Run one point and write its run directory (``metrics.json`` last). Picklable: Dask workers call it too."""
    t0 = time.perf_counter()
    index = task["index"]
    outcome = {"index": index, "status": "failed", "error": None, "exit_reason": None, "steps_done": 0,
               "worker": f"{_hostname()} pid {os.getpid()}"}
    try:
        from initlab.config import validate
        from initlab.experiment import run

        cfg = validate(task["config"])
        figures = bool(task.get("figures"))
        if task.get("limit_threads"):
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                result = run(cfg, run_dir=task["run_dir"], figures=figures)
        else:
            result = run(cfg, run_dir=task["run_dir"], figures=figures)
        steps = result.metrics.get("steps_done", 0)
        outcome.update(status=result.status, error=result.error, steps_done=steps)
        if result.status == "diverged":
            outcome["exit_reason"] = f"the loss became non-finite at step {steps + 1}"
        elif result.status == "interrupted":
            outcome["exit_reason"] = f"interrupted after {steps} steps (partial results saved)"
        elif result.status == "failed":
            outcome["exit_reason"] = result.error
    except Exception as e:
        outcome["error"] = outcome["exit_reason"] = describe(e)
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
        from threadpoolctl import threadpool_limits

        import initlab.experiment  # noqa: F401  (loads NumPy's BLAS, so the limit below applies to it)
        import initlab.output.rundir  # noqa: F401  (imported once per worker, not once per point)

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
    metrics = read_metrics(Path(task["run_dir"])) or {}
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
        except ImportError as e:
            raise ConfigError("--scheduler needs the optional extra: pip install 'initlab[distributed]'") from e
        self.distributed = distributed
        try:
            self.client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
        except Exception as e:
            raise RuntimeStateError(f"--scheduler {address}: cannot connect ({type(e).__name__}: {e})") from e
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
