"""Where the points of a sweep run: :func:`run_point` in local worker processes or on a Dask cluster.

Both backends share one interface (``start``, ``idle``, ``busy``, ``running``, ``submit``,
``poll``, ``interrupt``, ``close``); outcomes are plain dicts, recorded by the sweep's parent.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from initlab.errors import ConfigError, InitlabError, RuntimeStateError, describe, seconds_from_env, short
from initlab.output.readers import read_metrics

DASK_TIMEOUT_ENV = "INITLAB_DASK_TIMEOUT"  # seconds to connect to the scheduler and hear its handshake
DASK_TIMEOUT_S = 5.0
DASK_WORKER_WAIT_ENV = "INITLAB_DASK_WORKER_WAIT"  # seconds to wait for a cluster with no workers
DASK_WORKER_WAIT_S = 60.0
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
WORKERS_PER_CORE = 4  # the cap on local --workers: this many per core (see runner.sweep)


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
_in_point = False


def _worker_signal(signum, frame):
    # The first SIGINT/SIGTERM interrupts the point being run (its partial results are saved); later
    # ones are ignored. Outside a point (idle in recv(), or sending an outcome) the signal only sets
    # the flag: raising there would end the worker with exit code 0 while it holds a point, and the
    # parent could not tell that from a crash. The worker answers for its point, then stops.
    global _worker_stopping
    if _worker_stopping:
        return
    _worker_stopping = True
    if _in_point:
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
    if hasattr(signal, "pthread_sigmask"):  # _start_deaf's mask may be inherited (vfork): hear them now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    try:
        from threadpoolctl import threadpool_limits

        import initlab.experiment  # noqa: F401  (loads NumPy's BLAS, so the limit below applies to it)
        import initlab.output.rundir  # noqa: F401  (imported once per worker, not once per point)

        threadpool_limits(1)  # one BLAS thread per worker: no oversubscription, same numbers for any worker count
        while True:
            task = conn.recv()
            if task is None:
                return
            outcome = _run_guarded(task)
            conn.send(outcome)
            if _worker_stopping:
                return
    except (EOFError, OSError, KeyboardInterrupt):
        return


def _run_guarded(task: dict) -> dict:
    """``run_point``, interruptible by the worker's signal handler only while it runs."""
    global _in_point
    if _worker_stopping:  # the signal came while this point was on its way: it never started
        return {"index": task["index"], "status": "interrupted", "error": None,
                "exit_reason": "interrupted by a signal before it started", "steps_done": 0}
    try:
        _in_point = True
        try:
            return run_point(task)
        finally:
            _in_point = False
    except KeyboardInterrupt:
        return _interrupted_outcome(task)


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


def _saved_outcome(index: int, run_dir) -> Optional[dict]:
    """The outcome a point's own ``metrics.json`` records, or None when it has none (or an unreadable one)."""
    if not run_dir:
        return None
    try:
        metrics = read_metrics(Path(run_dir))
    except Exception:  # a half-written or damaged file is no evidence: the caller decides
        return None
    if not isinstance(metrics, dict) or metrics.get("status") not in ("completed", "diverged", "failed", "interrupted"):
        return None
    status = metrics["status"]
    steps = metrics.get("steps_done", 0)
    if status == "interrupted":
        why = f"interrupted after {steps} steps (partial results saved)"
    elif status == "failed":
        why = metrics.get("error")
    else:
        why = f"{status} (read from its metrics.json: its worker ended before reporting it)"
    return {"index": index, "status": status, "error": metrics.get("error") if status == "failed" else None,
            "exit_reason": why, "steps_done": steps}


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class WorkerStartError(InitlabError):
    """Worker processes die before running anything (e.g. the parent's ``__main__`` cannot be re-imported)."""


def _start_deaf(proc) -> None:
    """Start ``proc`` with SIGINT and SIGTERM ignored until its ``_worker_main`` installs handlers.

    Ctrl-C reaches the whole process group: a worker still starting its interpreter would die of
    it ("Fatal Python error: init_import_site", or killed by SIGTERM's default action) and its
    point would look failed. An ignored disposition survives exec, so the child starts deaf; the
    parent's own signals are blocked meanwhile (on Linux a blocked signal stays pending while its
    action is SIG_IGN), then its handlers and mask are restored and nothing sent to it is lost.
    A deaf worker misses nothing that matters: ``interrupt`` repeats its SIGTERM until answered.
    """
    sigs = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        proc.start()
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    old = {}
    try:
        for s in sigs:
            old[s] = signal.signal(s, signal.SIG_IGN)
        proc.start()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="initlab-sweep-worker")
        _start_deaf(self.proc)
        child.close()
        self.task: Optional[int] = None
        self.run_dir: Optional[str] = None  # the point's folder: its files say how it ended if the worker cannot
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

    def ready(self) -> None:
        pass  # local processes start with the first points

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
                w.run_dir = task["run_dir"]
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
        saved = _saved_outcome(index, w.run_dir)
        if saved is not None:  # its metrics.json was written: that, not the worker's exit, is its status
            return saved
        if reason:
            return {"index": index, "status": "interrupted", "error": None, "exit_reason": reason}
        if code == 0:  # a worker only returns without answering when a signal stopped it
            return {"index": index, "status": "interrupted", "error": None,
                    "exit_reason": "its worker process was stopped by a signal before it saved results"}
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
        deadline = time.monotonic() + grace
        last_sent = float("-inf")
        while any(w.task is not None for w in self.workers) and time.monotonic() < deadline and not force():
            busy = [w for w in self.workers if w.task is not None]
            if time.monotonic() - last_sent >= 0.5:
                # Repeated until answered: a worker still starting ignores it (see _start_deaf);
                # one that has begun stopping ignores the repeats.
                for w in busy:
                    try:
                        os.kill(w.proc.pid, signal.SIGTERM)
                    except OSError:
                        pass
                last_sent = time.monotonic()
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
        return _saved_outcome(index, w.run_dir) or {"index": index, "status": "interrupted", "error": None,
                                                    "exit_reason": reason}

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


class BackendLostError(InitlabError):
    """The cluster the points run on went away mid-sweep (e.g. the Dask scheduler died)."""


def _seconds(env: str, default: float) -> float:
    return seconds_from_env(env, default, ConfigError)


def _probe_scheduler(address: str, timeout: float) -> None:
    """Refuse, within ``timeout`` seconds, an address that is malformed or where no Dask scheduler
    answers. Dask's own connect does not bound its handshake: a port that accepts and never
    speaks (or an HTTP server) would hold the sweep forever. A scheduler sends its handshake as
    soon as a connection is accepted, so the first bytes are read here with a deadline."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    where = f"--scheduler {short(address)}"
    try:
        scheme, loc = parse_address(address, strict=False)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: not a Dask address (expected tcp://HOST:PORT)") from e
    if scheme not in DASK_SCHEMES:
        raise ConfigError(f"{where}: unknown scheme '{short(scheme)}' (expected tcp://HOST:PORT)")
    if scheme != "tcp":
        return  # other transports: Dask's own timeout is all there is
    try:
        host, port = parse_host_port(loc)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: not a Dask address (expected tcp://HOST:PORT)") from e
    if not host or not port:
        raise ConfigError(f"{where}: not a Dask address (expected tcp://HOST:PORT)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if not sock.recv(64):
                raise RuntimeStateError(f"{where}: the server closed the connection; is it a Dask scheduler?")
    except socket.timeout as e:
        raise RuntimeStateError(f"{where}: no Dask scheduler answered within {timeout:g} s "
                                f"(set {DASK_TIMEOUT_ENV} to wait longer)") from e
    except OSError as e:
        raise RuntimeStateError(f"{where}: cannot connect ({e.strerror or short(str(e))})") from e
    except (ValueError, OverflowError) as e:
        raise ConfigError(f"{where}: not a Dask address (expected tcp://HOST:PORT)") from e


class _Quiet:
    """Silence a library's log handlers (Dask attaches its own to its ``distributed`` logger, and
    its loggers set their own levels, so the handlers are what must be turned down); ``restore``."""

    def __init__(self, name: str):
        import logging

        self.handlers = [(h, h.level) for h in logging.getLogger(name).handlers]
        for h, _ in self.handlers:
            h.setLevel(logging.CRITICAL + 1)

    def restore(self) -> None:
        for h, level in self.handlers:
            h.setLevel(level)


def _close_quietly(client) -> None:
    try:
        client.close(timeout=2)
    except Exception:  # already closed, or its scheduler is gone: nothing left to release
        pass


class DaskBackend:
    """The points as tasks on an existing Dask distributed cluster (workers must see the sweep directory).

    Every network step has a deadline: the connection and handshake ``$INITLAB_DASK_TIMEOUT`` s
    (default 5), a cluster without workers ``$INITLAB_DASK_WORKER_WAIT`` s (default 60, with a
    warning first). Losing the scheduler mid-sweep raises :class:`BackendLostError`: the runner
    then records every unfinished point as interrupted (or by what its own files say).
    """

    limit_threads = True

    def __init__(self, address: str, workers: Optional[int] = None, log: Optional[Callable[[str], None]] = None):
        try:
            import distributed
        except ImportError as e:
            raise ConfigError("--scheduler needs the optional extra: pip install 'initlab[distributed]'") from e
        self.distributed = distributed
        self.address = address
        # Dask's client logs its reconnection attempts as tracebacks on stderr; what went wrong
        # is said once, in initlab's own message. Restored by close().
        self._quiet = _Quiet("distributed")
        self.log = log or (lambda msg: None)
        timeout = _seconds(DASK_TIMEOUT_ENV, DASK_TIMEOUT_S)
        self.worker_wait = _seconds(DASK_WORKER_WAIT_ENV, DASK_WORKER_WAIT_S)
        try:
            _probe_scheduler(address, timeout)
        except InitlabError:
            self._quiet.restore()
            raise
        before = set(distributed.Client._instances)
        try:
            self.client = distributed.Client(address, timeout=f"{timeout}s", set_as_default=False)
        except Exception as e:
            # A half-built client would print a traceback from its destructor: close it now.
            for client in set(distributed.Client._instances) - before:
                _close_quietly(client)
            self._quiet.restore()
            raise RuntimeStateError(f"--scheduler {short(address)}: cannot connect ({_reason(e)})") from e
        self.limit = workers
        self.inflight: dict = {}
        self.describe = f"the Dask cluster at {short(address)}"

    def _threads(self) -> int:
        try:
            return sum(self.client.nthreads().values())
        except Exception as e:
            raise BackendLostError(f"lost the Dask scheduler at {short(self.address)} ({_reason(e)})") from e

    def ready(self) -> None:
        """Wait (with a warning, up to the documented limit) until the cluster has a worker."""
        n = self._threads()
        if not n:
            self.log(f"warning: the Dask cluster at {short(self.address)} has no workers; "
                     f"waiting up to {self.worker_wait:g} s for one ({DASK_WORKER_WAIT_ENV})")
            deadline = time.monotonic() + self.worker_wait
            while not n and time.monotonic() < deadline:
                time.sleep(0.5)
                n = self._threads()
            if not n:
                raise RuntimeStateError(f"--scheduler {short(self.address)}: the cluster has no workers "
                                        f"(waited {self.worker_wait:g} s; set {DASK_WORKER_WAIT_ENV} to wait longer)")

    def start(self, n_tasks: int) -> None:
        n = self._threads()
        self.capacity = max(1, min(n, self.limit) if self.limit else n)

    def idle(self) -> int:
        return self.capacity - len(self.inflight)

    def busy(self) -> int:
        return len(self.inflight)

    def running(self) -> set:
        return {index for index, _ in self.inflight.values()}

    def _alive(self) -> bool:
        return getattr(self.client, "status", "") == "running"

    def submit(self, task: dict) -> str:
        import uuid

        if not self._alive():
            raise BackendLostError(f"lost the Dask scheduler at {short(self.address)}")
        fut = self.client.submit(run_point, task, pure=False, key=f"initlab-point-{task['index']}-{uuid.uuid4().hex[:8]}")
        self.inflight[fut] = (task["index"], task["run_dir"])
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
            index, run_dir = self.inflight[f]
            try:
                outcome = f.result(timeout=5)
            except Exception as e:
                saved = _saved_outcome(index, run_dir)
                if saved is not None:  # the task wrote its results; the cluster lost only the answer
                    outcome = saved
                elif not self._alive():
                    raise BackendLostError(f"lost the Dask scheduler at {short(self.address)} ({_reason(e)})") from e
                else:
                    msg = f"the Dask task failed: {_reason(e)}"
                    outcome = {"index": index, "status": "failed", "error": msg, "exit_reason": msg}
            del self.inflight[f]
            out.append(outcome)
        if not out and self.inflight and not self._alive():
            raise BackendLostError(f"lost the Dask scheduler at {short(self.address)}")
        return out

    def interrupt(self, reason: str, grace: float, force) -> list[dict]:
        # Dask cannot stop a task that has started: it runs to its end and writes its run directory,
        # which a later --resume adopts if it completed. What the files already say is recorded now.
        if self._alive():
            try:
                self.client.cancel(list(self.inflight))
            except Exception:
                pass
        out = [_saved_outcome(i, d) or {"index": i, "status": "interrupted", "error": None, "exit_reason": reason}
               for i, d in self.inflight.values()]
        self.inflight.clear()
        return out

    def close(self) -> None:
        _close_quietly(self.client)
        self._quiet.restore()


def _reason(e: BaseException) -> str:
    """An exception from Dask as words: its message, or what kind of failure it was, never a class name."""
    text = short(str(e).strip(), 200)
    if text:
        return text
    if isinstance(e, TimeoutError):
        return "timed out"
    if type(e).__name__ == "CancelledError":
        return "the task was cancelled"
    return "no reason given"


def make_backend(scheduler: Optional[str] = None, workers: Optional[int] = None, log=None):
    if scheduler:
        return DaskBackend(scheduler, workers, log)
    return LocalBackend(workers)
