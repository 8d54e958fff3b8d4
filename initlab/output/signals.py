"""A signal guard, so that Ctrl-C never cuts a write in half; and helper processes that die with their parent."""
from __future__ import annotations

import signal
import sys
import threading


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux's PR_SET_PDEATHSIG; elsewhere nothing):
    a worker or helper must never outlive the run that started it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class SignalGuard:
    """Decides when SIGINT and SIGTERM may interrupt: ``arm()`` lets the first one through (to the
    handler that was installed before, which raises KeyboardInterrupt); while disarmed — and after
    that first one — signals are held, and on exit delivered again unless one already interrupted.

    Used as ``with SignalGuard() as guard:`` around a run: armed while training, disarmed while
    results are written, so a second Ctrl-C cannot cut ``metrics.json`` in half. Only signals that
    have a Python handler are guarded (SIGTERM's default, terminate, is left alone), and only in
    the main thread; elsewhere the guard does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.armed = False
        self.interrupted = False
        self.pending: list[int] = []
        self._old: dict = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                old = signal.getsignal(signum)
                if callable(old):
                    self._old[signum] = old
                    signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.armed and not self.interrupted:
            self.armed, self.interrupted = False, True
            return self._old[signum](signum, frame)
        self.pending.append(signum)

    def arm(self) -> None:
        """Let the next signal interrupt; one that arrived while disarmed interrupts now."""
        self.armed = True
        if self.pending and not self.interrupted:
            self._handle(self.pending.pop(0), None)

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        if self.pending and not self.interrupted:
            signal.raise_signal(self.pending[0])  # the caller asked to stop: stop now that the write is done
