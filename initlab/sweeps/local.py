"""Local worker processes: one point at a time each, one BLAS thread each, stopped cleanly by signals.

A short sweep shares the cores. With more points than workers but fewer than twice as many, all
of them start at once rather than the last few waiting for a worker: the machine time-slices
them and no core idles at the end, so 3 equal points on 2 workers take 1.5 points' time, not 2.
Only at the start: later, a worker that frees up is about to be followed by the others (points
started together end together), and a process started beside them would cost its start-up (0.3–0.5
s of imports on a busy machine) for little. Results stay the same (one BLAS thread per process,
whatever the count). With ``--workers 1`` points run strictly one after another. A sweep whose
points would not fit in memory side by side does not share (``share_cores``).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from initlab.errors import InitlabError
from initlab.output.readers import read_metrics
from initlab.output.signals import die_with_parent
from initlab.provenance import usable_cores
from initlab.sweeps.point import hostname, run_point, saved_outcome

WORKERS_PER_CORE = 4  # the cap on local --workers: this many per core (see runner.sweep)


_worker_stopping = False
_in_point = False
_spare = None  # the parent's count of idle cores (a shared integer), read by the worker's running point


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


def _worker_main(conn, parent_pid: int, spare=None) -> None:
    global _spare
    _spare = spare
    die_with_parent()
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
            return run_point(task, spare_cores=_spare_cores)
        finally:
            _in_point = False
    except KeyboardInterrupt:
        return _interrupted_outcome(task)


def _spare_cores() -> int:
    return _spare.value if _spare is not None else 0


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
    return usable_cores()


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
    def __init__(self, ctx, spare):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), spare), daemon=True,
                                name="initlab-sweep-worker")
        _start_deaf(self.proc)
        child.close()
        self.task: Optional[int] = None
        self.run_dir: Optional[str] = None  # the point's folder: its files say how it ended if the worker cannot
        self.done = 0
        self.dismissed = False  # told to exit (_tell_exit)


def _tell_exit(w: _Worker) -> None:
    """Ask a worker to exit after its current task, once (a closed pipe: it is gone already)."""
    if not w.dismissed:
        try:
            w.conn.send(None)
        except OSError:
            pass
        w.dismissed = True


class LocalBackend:
    """A small process pool: one pipe per worker, so a worker that dies fails only its own point."""

    limit_threads = False

    def __init__(self, workers: Optional[int] = None, share_cores: bool = True):
        import multiprocessing as mp

        self.size = workers or default_workers()
        self.share_cores = share_cores
        self.dispatched = 0  # points handed to workers so far
        # spawn: a clean interpreter per worker (no inherited threads or locks); started once per sweep.
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.describe = f"{self.size} local worker process{'es' if self.size != 1 else ''}"
        self.answered = 0  # outcomes received: once one worker has worked, a death is that point's problem
        self.start_failures = 0
        # Cores no point is running on, for the running points to evaluate on (initlab.evaluation).
        # Updated only when poll() begins, after the runner has handed out what it could: a
        # worker between two points is not a spare core.
        self.cores = usable_cores()
        self.spare = self.ctx.Value("i", 0, lock=False)

    def ready(self) -> None:
        pass  # local processes start with the first points

    def start(self, n_tasks: int) -> None:
        while len(self.workers) < min(self.size, n_tasks):  # a sweep sharing the cores starts its extra workers as they are needed
            self.workers.append(_Worker(self.ctx, self.spare))

    def idle(self) -> int:
        return sum(w.task is None for w in self.workers) + max(0, self.size - len(self.workers))

    def busy(self) -> int:
        return sum(w.task is not None for w in self.workers)

    def room(self, queued: int) -> int:
        """How many of ``queued`` points to start now: one per free worker, and at the start of a
        sweep of fewer than ``2·size`` points all of them (they share the cores; module docstring)."""
        if self.share_cores and not self.dispatched and self.size < queued < 2 * self.size:
            return queued
        return max(0, min(self.idle(), queued))

    def running(self) -> set:
        return {w.task for w in self.workers if w.task is not None}

    def submit(self, task: dict) -> str:
        for attempt in range(3):
            w = next((w for w in self.workers if w.task is None), None)
            if w is None:
                w = _Worker(self.ctx, self.spare)
                self.workers.append(w)
            try:
                w.conn.send(task)
                self.dispatched += 1
                w.task = task["index"]
                w.run_dir = task["run_dir"]
                return f"{hostname()} pid {w.proc.pid}"
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
        self.spare.value = max(0, min(self.cores, self.size) - len(busy))
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
        saved = saved_outcome(index, w.run_dir)
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
        return saved_outcome(index, w.run_dir) or {"index": index, "status": "interrupted", "error": None,
                                                    "exit_reason": reason}

    def dismiss(self) -> None:
        """Tell the idle workers to exit, without waiting: they wind down (0.08–0.12 s of interpreter
        teardown) while the parent writes the summary and draws sweep.png; :meth:`close` reaps them."""
        for w in list(self.workers):
            if w.task is None:
                _tell_exit(w)

    def close(self) -> None:
        for w in list(self.workers):
            _tell_exit(w)
        deadline = time.monotonic() + 2
        for w in list(self.workers):
            w.proc.join(max(0.0, deadline - time.monotonic()))
            self._drop(w)

