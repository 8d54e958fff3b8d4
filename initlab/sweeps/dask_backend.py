"""Points as tasks on an existing Dask distributed cluster, with a deadline on every network step."""
from __future__ import annotations

import time
from typing import Callable, Optional

from initlab.errors import ConfigError, InitlabError, RuntimeStateError, seconds_from_env, short
from initlab.sweeps.point import run_point, saved_outcome

DASK_TIMEOUT_ENV = "INITLAB_DASK_TIMEOUT"  # seconds to connect to the scheduler and hear its handshake
DASK_TIMEOUT_S = 5.0
DASK_WORKER_WAIT_ENV = "INITLAB_DASK_WORKER_WAIT"  # seconds to wait for a cluster with no workers
DASK_WORKER_WAIT_S = 60.0
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")


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

    def room(self, queued: int) -> int:
        return max(0, min(self.idle(), queued))

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
                saved = saved_outcome(index, run_dir)
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
        out = [saved_outcome(i, d) or {"index": i, "status": "interrupted", "error": None, "exit_reason": reason}
               for i, d in self.inflight.values()]
        self.inflight.clear()
        return out

    def dismiss(self) -> None:
        pass  # the cluster's workers are not this sweep's to stop; close() lets go of the client

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

