"""Evaluation during training: mean loss and accuracy in evaluation mode, in the run's own thread
or, while a core is spare, in a helper thread as training goes on.

Evaluating every ``eval_every`` steps (the held-out set, then up to 10,000 training images) is a
fifth of an MNIST run's time. When a core would otherwise idle (a single run on a multi-core
machine; the last point of a sweep with fewer points than workers), :class:`Evaluator` hands
each evaluation to a helper thread together with an exact copy of the model at that step
(weights and BatchNorm's running statistics), and training goes on. The helper runs the same
:func:`evaluate` on the copy, so its numbers are bit-for-bit those of evaluating in place
(tested); the history's rows are filled as evaluations finish, and all of them before the run
ends. Threads rather than a process: the large chunked products and element-wise passes release
the GIL for milliseconds at a time, so the two threads seldom wait for each other (unlike the
recorder's many small operations, which is why snapshots use a helper *process*).
"""
from __future__ import annotations

import contextvars
import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Union

import numpy as np

from initlab.engine.model import MLP
from initlab.memory import EVAL_CHUNK
from initlab.provenance import usable_cores

COPIES = 2  # models the helper may hold: one being evaluated, one waiting; beyond that, evaluate here

SpareCores = Union[int, Callable[[], int], None]


def evaluate(model: MLP, loss, x, y) -> tuple[float, Optional[float]]:
    """Mean loss and accuracy (None for regression) in evaluation mode, in chunks."""
    total, correct, n = 0.0, 0, len(x)
    for i in range(0, n, EVAL_CHUNK):
        out = model.forward(x[i:i + EVAL_CHUNK], train=False)
        yi = y[i:i + EVAL_CHUNK]
        total += loss.forward(out, yi) * len(out)
        if loss.classifies:
            correct += int(np.sum(np.argmax(out, axis=1) == yi))
    acc = correct / n if loss.classifies else None
    return total / n, acc


class Evaluator:
    """Fills the history's ``eval_loss``, ``eval_acc`` and ``train_acc`` at row ``i`` when called.

    ``spare``: how many cores are free right now (a number, or a function asked at every
    evaluation: a sweep's idle workers change as points finish; None: the cores this process may
    use, less the one it trains on); with none free, or with the
    helper already holding :data:`COPIES` models, the evaluation runs here. :meth:`close` waits
    for the helper and returns the first error it met (the run fails then, as it would have here).
    ``helper_s`` is the time the helper spent evaluating (``eval_s`` counts only this thread's).
    """

    def __init__(self, hist: dict, loss, x_eval, y_eval, train_x, train_y, spare: SpareCores = None):
        self.hist, self.loss = hist, loss
        self.sets = (x_eval, y_eval, train_x, train_y)
        if spare is None:
            spare = usable_cores() - 1
        self.spare = spare if callable(spare) else (lambda n=int(spare): n)
        self.helper_s = 0.0
        self._pool: Optional[ThreadPoolExecutor] = None
        self._free: list = []  # model copies not lent to the helper
        self._lent: list[tuple[Future, MLP]] = []
        self._errors: list[BaseException] = []

    def __call__(self, i: int, model: MLP) -> None:
        self._reclaim()
        if len(self._lent) < COPIES and self.spare() > 0:
            self._lend(i, model)
        else:
            self._fill(i, model, self.loss)

    def _fill(self, i: int, model: MLP, loss) -> None:
        x_eval, y_eval, train_x, train_y = self.sets
        if len(x_eval):  # data.eval_samples: 0 is no held-out set: its columns stay empty
            loss_value, acc = evaluate(model, loss, x_eval, y_eval)
            self.hist["eval_loss"][i] = loss_value
            self.hist["eval_acc"][i] = np.nan if acc is None else acc
        if loss.classifies:
            self.hist["train_acc"][i] = evaluate(model, loss, train_x, train_y)[1]

    def _lend(self, i: int, model: MLP) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="initlab-eval")
        twin = self._free.pop() if self._free else copy.deepcopy(model)
        for mine, theirs in zip(twin.state(), model.state()):
            mine[...] = theirs  # the weights and running statistics of this step
        # The helper runs in this thread's context: NumPy's error state (the run counts its
        # floating-point warnings through np.seterrcall) is a context variable.
        task = contextvars.copy_context().run
        self._lent.append((self._pool.submit(task, self._timed_fill, i, twin, copy.copy(self.loss)), twin))

    def _timed_fill(self, i, model, loss) -> None:
        t = time.perf_counter()
        try:
            self._fill(i, model, loss)
        finally:
            self.helper_s += time.perf_counter() - t

    def _reclaim(self, wait: bool = False) -> None:
        still = []
        for future, twin in self._lent:
            if wait or future.done():
                error = future.exception()  # waits for it; close() hands it to the run
                if error is not None:
                    self._errors.append(error)
                self._free.append(twin)
            else:
                still.append((future, twin))
        self._lent = still

    def wait(self) -> None:
        """Wait for every evaluation lent to the helper (their rows are in the history then); errors are
        kept for :meth:`close`."""
        self._reclaim(wait=True)

    def close(self) -> Optional[BaseException]:
        """Wait for every evaluation lent to the helper; the first error one of them met, if any."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        errors, self._errors = self._errors, []
        return errors[0] if errors else None
