"""Snapshots taken in a second process, beside training, so that recording costs training almost nothing.

A snapshot is a forward pass of the whole probe plus histograms and moments of every layer: several
training steps of work, while a run trains on one core and the machine has two or more. So
:class:`BackgroundRecorder` forks a helper process when the first snapshot is taken; the helper
inherits the model, the probe and the recorder. Each snapshot then costs training only a copy of
the weights (into one of ``SLOTS`` buffers of shared memory, tens of microseconds) and a few bytes
down a pipe; the helper loads those weights into its copy of the model, measures it with the very
same :meth:`Recorder.measure` (so the numbers are the same, bit for bit) and sends the fields back.
Results are collected as they arrive and all of them by :meth:`close`, before the run's files are
written. When every slot is in use, the next snapshot waits for the oldest: recording falls behind
by at most ``SLOTS`` snapshots and never piles up memory.

Threads would not do: a snapshot is a hundred NumPy calls of 5-100 µs, and two threads trading
the GIL between them ran slower than one (measured: 3.4 ms against 2.3 ms for the statistics).

If the helper cannot start (no ``fork``) or dies, the snapshots still in its slots are measured
here, from the slots, with the model's own weights put back afterwards: a run never loses them.
The helper ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group; the run decides
when to stop) and is killed if the run's process dies.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np

from initlab.output.signals import die_with_parent
from initlab.provenance import usable_cores
from initlab.recorder import Recorder, Snapshot

SLOTS = 8  # snapshots in flight at most (weights in shared memory: SLOTS × the model's parameters)
# A helper that answers nothing for this long is taken for stuck (stopped, say) and abandoned; a
# snapshot takes milliseconds, or seconds for the largest nets initlab accepts.
HELPER_TIMEOUT_S = 120.0
# A helper told to stop (or killed) leaves within milliseconds; one that has not after this long
# (stopped by SIGSTOP, say) is killed, so that closing a run never waits on it for ever.
REAP_S = 5.0
# A helper pays for itself when the snapshots it takes over are worth more than starting it (a fork:
# milliseconds, more for a process holding MNIST): at least this many multiply-adds of the probe's
# forward passes over the run, plus 50 per hidden value for the histograms and moments. The
# 784-100×5-10 MLP with a 1,000-input probe every 100 steps for 3,000 steps is 4e9; a test's tiny
# nets stay in their own process.
BACKGROUND_MIN_WORK = 1e9


def worth_a_helper(cfg) -> bool:
    """Should a run of ``cfg`` (a :class:`initlab.config.Config`) take its snapshots in a helper process?

    ``INITLAB_RECORD_HELPER=0`` or ``1`` decides; otherwise yes when the process may run on two or
    more cores (the run trains on one) and the snapshots are worth it (``BACKGROUND_MIN_WORK``).
    Sweep points never ask: there every core runs a point.
    """
    value = os.environ.get("INITLAB_RECORD_HELPER", "")
    if value in ("0", "1"):
        return value == "1"
    every = cfg.record.every
    if not every or usable_cores() < 2:
        return False
    sizes = [cfg.data.features, *cfg.model.widths, 10]  # 10 outputs: close enough for an estimate
    per_input = sum(a * b for a, b in zip(sizes, sizes[1:])) + 50 * sum(cfg.model.widths)
    probe = min(cfg.record.samples, cfg.data.samples or 60_000)
    return cfg.train.steps // every * probe * per_input >= BACKGROUND_MIN_WORK


class BackgroundRecorder(Recorder):
    """A :class:`Recorder` whose snapshots are measured by a forked helper process (see the module docstring).

    ``snapshot`` returns a :class:`Snapshot` whose fields arrive later; ``collect`` merges what has
    arrived, ``close`` waits for the rest and stops the helper. Read snapshots after ``close``.

    A signal (KeyboardInterrupt) can land anywhere in this code: one that interrupts a message to or
    from the helper leaves the pipe unusable, so the helper is killed and what it held is measured
    here at :meth:`close`, from the slots. ``_waiting`` (slot → snapshot, in the order sent) is the
    only record of what is in flight, and a slot leaves it only once its fields are in place.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._model = None
        self._params = []
        self._ring = None  # (SLOTS, n_params) weights in shared memory
        self._conn = None
        self._pid = None
        self._waiting: dict[int, Snapshot] = {}

    # -- in the run's process ------------------------------------------------------------------

    def snapshot(self, model, step: int) -> Snapshot:
        if self._model is None:
            self._start(model)
        self.collect()
        while self._conn is not None and len(self._waiting) == SLOTS:
            self._receive_one()  # every slot in flight: wait for the oldest
        if self._conn is None:  # no helper (or no longer): measured here, as a plain Recorder would
            return super().snapshot(model, step)
        slot = next(i for i in range(SLOTS) if i not in self._waiting)
        self._pack(slot)
        snap = self._keep(Snapshot(step, {"grad_norm": np.full(len(model.blocks), np.nan)}))
        self._waiting[slot] = snap
        try:
            self._conn.send((slot, step))
        except OSError:  # the helper is gone: what it held is measured here
            self._abandon()
        except BaseException:
            self._abandon()
            raise
        return snap

    def collect(self) -> None:
        """Merge every result that has arrived, without waiting."""
        while self._conn is not None and self._waiting and self._poll(0):
            self._receive_one()

    def close(self) -> None:
        """Wait for every snapshot in flight (measuring here what a dead helper held), then stop the helper."""
        while self._conn is not None and self._waiting:
            self._receive_one()
        if self._waiting:
            self._measure_here()
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        self._reap()

    def _start(self, model) -> None:
        import mmap
        from multiprocessing import Pipe

        self._model = model
        self._params = model.params()
        size = sum(p.data.size for p in self._params)
        if not hasattr(os, "fork"):
            return
        buf = mmap.mmap(-1, max(1, SLOTS * size * model.dtype.itemsize))  # anonymous and shared: fork keeps it
        self._ring = np.frombuffer(buf, dtype=model.dtype, count=SLOTS * size).reshape(SLOTS, size)
        parent, child = Pipe(duplex=True)
        run_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            code = 1
            try:
                parent.close()
                _serve(self, child, run_pid)
                code = 0
            finally:
                os._exit(code)
        child.close()
        self._conn, self._pid = parent, pid

    def _pack(self, slot: int) -> None:
        row, off = self._ring[slot], 0
        for p in self._params:
            n = p.data.size
            row[off:off + n] = p.data.reshape(-1)
            off += n

    def _poll(self, timeout: float) -> bool:
        try:
            return self._conn.poll(timeout)
        except (EOFError, OSError):
            return True  # recv will say what happened

    def _receive_one(self) -> None:
        """Merge the helper's next result; a helper that died, or answers nothing for ``HELPER_TIMEOUT_S``, is abandoned."""
        try:
            if not self._poll(HELPER_TIMEOUT_S):
                self._abandon()
                return
            slot, step, data = self._conn.recv()
        except (EOFError, OSError):
            self._abandon()
            return
        except BaseException:
            self._abandon()
            raise
        snap = self._waiting[slot]
        if snap.step != step:  # not ours: the pipe is out of step, trust nothing in flight
            self._abandon()
            return
        self._fill(snap, data)
        del self._waiting[slot]

    def _fill(self, snap: Snapshot, data: dict) -> None:
        """The measured fields; the gradient norms stay the run's when they come from its steps."""
        if self.grad_from == "step":
            data = {k: v for k, v in data.items() if k != "grad_norm"}
        snap.data.update(data)

    def _abandon(self) -> None:
        """Stop using the helper: kill it; what it held is measured here (:meth:`close`)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()

    def _reap(self) -> None:
        pid, self._pid = self._pid, None
        if pid is None:
            return
        deadline = time.monotonic() + REAP_S
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return
                time.sleep(0.001)
        except ChildProcessError:
            pass

    def _measure_here(self) -> None:
        """Measure the snapshots still in flight from their slots, then put the model's weights back."""
        now = [p.data.copy() for p in self._params]
        try:
            for slot, snap in list(self._waiting.items()):
                _unpack(self._params, self._ring[slot])
                self._fill(snap, self.measure(self._model))
                del self._waiting[slot]
        finally:
            for p, saved in zip(self._params, now):
                p.data[...] = saved


def _unpack(params, row) -> None:
    off = 0
    for p in params:
        n = p.data.size
        p.data[...] = row[off:off + n].reshape(p.data.shape)
        off += n


def _serve(rec: BackgroundRecorder, conn, run_pid: int) -> None:
    """The helper's loop: load the weights of each slot it is sent, measure, send the fields back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when to stop, and tells us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != run_pid:  # the run died before prctl took effect
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        slot, step = msg
        _unpack(rec._params, rec._ring[slot])
        with np.errstate(all="ignore"):  # the run counts its own warnings; these are the same values
            data = rec.measure(rec._model)
        conn.send((slot, step, data))
