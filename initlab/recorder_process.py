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

import numpy as np

from initlab.output.signals import die_with_parent
from initlab.recorder import Recorder, Snapshot

SLOTS = 8  # snapshots in flight at most (weights in shared memory: SLOTS × the model's parameters)


class BackgroundRecorder(Recorder):
    """A :class:`Recorder` whose snapshots are measured by a forked helper process (see the module docstring).

    ``snapshot`` returns a :class:`Snapshot` whose fields arrive later; ``collect`` merges what has
    arrived, ``close`` waits for the rest and stops the helper. Read snapshots after ``close``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._model = None
        self._params = []
        self._ring = None  # (SLOTS, n_params) weights in shared memory
        self._conn = None
        self._pid = None
        self._free = list(range(SLOTS))
        self._waiting: dict[int, Snapshot] = {}  # slot → its snapshot, until the helper's fields arrive
        self._order: list[int] = []  # slots in the order they were sent

    # -- in the run's process ------------------------------------------------------------------

    def snapshot(self, model, step: int) -> Snapshot:
        if self._model is None:
            self._start(model)
        if self._conn is None:  # no helper: measured here, as a plain Recorder would
            return super().snapshot(model, step)
        self.collect()
        if not self._free:
            self._receive(self._order[0])  # every slot in flight: wait for the oldest
        slot = self._free.pop()
        self._pack(slot)
        snap = self._keep(Snapshot(step, {"grad_norm": np.full(len(model.blocks), np.nan)}))
        self._waiting[slot] = snap
        self._order.append(slot)
        try:
            self._conn.send((slot, step))
        except OSError:  # the helper is gone: this one and any others are measured here
            self._fail()
        return snap

    def collect(self) -> None:
        """Merge every result that has arrived, without waiting."""
        try:
            while self._conn is not None and self._order and self._conn.poll():
                self._merge(*self._conn.recv())
        except (EOFError, OSError):
            self._fail()

    def close(self) -> None:
        """Wait for every snapshot in flight, then stop the helper."""
        while self._order:
            self._receive(self._order[0])
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._pid is not None:
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
            self._pid = None

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

    def _receive(self, slot: int) -> None:
        """Block until ``slot``'s fields have arrived (merging others that come first)."""
        try:
            while slot in self._waiting and self._conn is not None:
                self._merge(*self._conn.recv())
        except (EOFError, OSError):
            self._fail()

    def _merge(self, slot: int, step: int, data: dict) -> None:
        snap = self._waiting.pop(slot)
        assert snap.step == step, (snap.step, step)
        self._settle_fields(snap, data)
        self._order.remove(slot)
        self._free.append(slot)

    def _settle_fields(self, snap: Snapshot, data: dict) -> None:
        """The measured fields; the gradient norms stay the run's when they come from its steps."""
        if self.grad_from == "step":
            data = {k: v for k, v in data.items() if k != "grad_norm"}
        snap.data.update(data)

    def _fail(self) -> None:
        """The helper is gone: measure what it held here, from its slots, then restore the model's weights."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._pid is not None:
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
            self._pid = None
        if not self._order:
            return
        now = [p.data.copy() for p in self._params]
        try:
            for slot in list(self._order):
                _unpack(self._params, self._ring[slot])
                self._merge(slot, self._waiting[slot].step, self.measure(self._model))
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
