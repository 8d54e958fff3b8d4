"""One experiment: config → data, model, optimizer → training loop → recorder → :class:`Result`.

``run(config, out=None)`` returns the result in memory; with ``out`` it also writes the run
directory (see :mod:`initlab.output.rundir`). Randomness comes from one ``numpy.random.Generator``
tree seeded by ``config.seed``: data, weights and minibatches each get their own stream, so
recording or evaluating more often never changes what is trained.
"""
from __future__ import annotations

import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

import initlab
from initlab.config import Config
from initlab.data.datasets import build_dataset
from initlab.engine.clipping import clip_grad_norm, clip_grad_value, grad_norm
from initlab.engine.losses import LOSSES, TASK_LOSSES
from initlab.engine.lsuv import DATA_DEPENDENT
from initlab.engine.model import MLP, build_mlp
from initlab.engine.optimizers import make_optimizer
from initlab.engine.residual import STRUCTURAL
from initlab.errors import describe
from initlab.evaluation import Evaluator, SpareCores
from initlab.memory import TRAIN_ACC_SAMPLES, check_memory
from initlab.recorder import Recorder
from initlab.recorder_process import BackgroundRecorder, worth_a_helper
from initlab.theory.measure import init_spec, merge_prediction


@dataclass
class Result:
    config: Config
    status: str = "completed"
    history: dict = field(default_factory=dict)
    snapshots: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    model: Optional[MLP] = None
    run_dir: Optional[str] = None
    error: Optional[str] = None
    exception: Optional[BaseException] = field(default=None, repr=False)  # why a failed run failed
    prediction: Optional[dict] = None  # mean-field prediction at init (initlab.theory.meanfield)
    jacobian: Optional[np.ndarray] = None  # singular values at init, (inputs, k)

    def reraise(self) -> None:
        """Raise the exception that failed this run (with its traceback); nothing when it did not fail."""
        if self.exception is not None:
            raise self.exception

    def __repr__(self) -> str:
        return f"Result(status={self.status!r}, run_dir={self.run_dir!r}, steps_done={self.metrics.get('steps_done')})"


class _WarningCounter:
    """Counts NumPy floating-point warnings instead of printing them (np.seterrcall)."""

    def __init__(self):
        self.count = 0

    def __call__(self, kind, flag):
        self.count += 1


def blas_threads():
    """Limit BLAS to ``INITLAB_BLAS_THREADS`` threads (default 1) for the duration of a run.

    These MLPs' matrix products are small: one thread is as fast as two on an idle machine and
    many times faster on a busy one (threads spin-waiting for each other), and sweeps run one
    process per core anyway.
    """
    import os

    from threadpoolctl import threadpool_limits

    value = os.environ.get("INITLAB_BLAS_THREADS", "1")
    limit = int(value) if value.isdigit() and int(value) > 0 else None
    return threadpool_limits(limits=limit, user_api="blas")


def build(cfg: Config):
    """Data, model, loss and optimizer for a config (deterministic in ``cfg.seed``)."""
    data_ss, init_ss, batch_ss = np.random.SeedSequence(cfg.seed).spawn(3)
    data = build_dataset(cfg.data, np.random.default_rng(data_ss), cfg.model.dtype)
    init = cfg.init
    spec = init_spec(cfg)
    data_dependent = DATA_DEPENDENT.get(init.scheme)
    if data_dependent:  # drawn by its data-free start, then adjusted on data below
        spec = replace(spec, scheme=data_dependent.start)
    structural = STRUCTURAL.get(init.scheme)
    if structural:  # drawn by its data-free start, then adjusted on the net's structure below
        spec = replace(spec, scheme=structural.start)
    init_rng = np.random.default_rng(init_ss)
    m = cfg.model
    # Only residual nets get the residual keywords, so a plain net is built by exactly the same call as before.
    residual = {"residual": True, "branch_scale": (structural and structural.branch_scale) or m.branch_scale} if m.residual else {}
    model = build_mlp(
        data.x_train.shape[1], data.n_out, m.widths, m.activation, spec, init_rng,
        bias=m.bias, batchnorm=m.batchnorm, layernorm=m.layernorm, dtype=m.dtype,
        slope=m.slope, bn_momentum=m.bn_momentum, bn_eps=m.bn_eps, **residual,
    )
    if structural:
        structural.apply(model)
    extra = {}
    if data_dependent:
        batch = data.x_train[: min(len(data.x_train), max(cfg.train.batch_size, 500))]
        extra[data_dependent.metric] = data_dependent.apply(model, batch, tol=init.lsuv_tol, rng=init_rng)
    loss = LOSSES[TASK_LOSSES[data.task]]()
    o = cfg.optimizer
    opt = make_optimizer(o.name, o.lr, o.weight_decay, momentum=o.momentum, beta1=o.beta1,
                         beta2=o.beta2, alpha=o.alpha, eps=o.eps)
    return data, model, loss, opt, np.random.default_rng(batch_ss), extra


# The history's rows are allocated this many at a time, then doubled as training reaches them
# (up to train.steps): a run of millions of steps no longer writes NaN into its whole history
# (240 MB at 5,000,000 steps, seconds on a machine slow to hand out fresh pages) before step 1.
HISTORY_ROWS = 1 << 16
_COLUMNS = ("train_loss", "grad_norm", "eval_loss", "eval_acc", "train_acc")


def _new_history(rows: int) -> dict:
    h = {"step": np.arange(1, rows + 1, dtype=np.int64)}
    for k in _COLUMNS:
        h[k] = np.full(rows, np.nan)
    return h


def _grow(hist: dict, steps: int) -> None:
    """Twice the rows (at most ``steps``), in place in the dict that the evaluator and the result hold."""
    n = len(hist["step"])
    bigger = _new_history(min(steps, 2 * n))
    for k, column in bigger.items():
        column[:n] = hist[k]
        hist[k] = column


def _cut(history: dict, n: int) -> dict:
    return {k: v[:n] for k, v in history.items()}


def _as_config(config) -> Config:
    from initlab.config import load_config

    return config if isinstance(config, Config) else load_config(config)


def train(config, progress: bool = False, on_step: Callable[[int], None] | None = None,
          on_start: Callable[[], None] | None = None, *, record_helper: bool | None = None,
          spare_cores: SpareCores = None) -> Result:
    """Build and train one experiment in memory: no files, no signal handlers.

    ``config``: a :class:`Config`, a mapping or a YAML path. KeyboardInterrupt ends training with
    status ``interrupted`` (the steps done so far are kept); any other error gives status
    ``failed`` with ``result.error`` (its message) and ``result.exception`` (to re-raise).
    ``on_start`` is called once, just before building begins (``run`` lets signals through then).
    ``record_helper``: take snapshots in a helper process (None: ``recorder_process.worth_a_helper`` decides).
    ``spare_cores``: cores free for evaluating in a helper thread while training goes on (see
    :mod:`initlab.evaluation`): a number, or a function asked at each evaluation; None: the
    cores this process may use, less the one it trains on. The numbers are the same either way.
    """
    cfg = _as_config(config)
    check_memory(cfg)
    result = Result(config=cfg)
    t0 = time.perf_counter()
    counter, caught = _WarningCounter(), []
    old_call = np.seterrcall(counter)
    try:
        with np.errstate(all="call"), warnings.catch_warnings(record=True) as caught, blas_threads():
            warnings.simplefilter("always")
            if on_start is not None:
                on_start()
            _train(cfg, result, progress, on_step, record_helper, spare_cores)
    except KeyboardInterrupt:
        result.status = "interrupted"
    except Exception as e:  # recorded in metrics.json; the CLI exits 1
        result.status = "failed"
        result.error = describe(e)
        result.exception = e
    finally:
        np.seterrcall(old_call)
    result.metrics.setdefault("timing", {})["total_s"] = time.perf_counter() - t0
    from initlab.config import ignored_settings

    for note in ignored_settings(cfg):  # said on stderr by the CLI, and kept in metrics.json
        result.metrics.setdefault("warnings", []).append(note)
    if caught:  # Python-level warnings (e.g. from NumPy reductions) are counted, not printed
        notes = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
        result.metrics.setdefault("warnings", []).extend(list(notes)[:10])
    _finish_metrics(cfg, result, counter.count + len(caught))
    return result


def run(config, out=None, progress: bool = False, on_step: Callable[[int], None] | None = None, *,
        run_dir=None, figures: bool = True, provenance: dict | None = None,
        record_helper: bool | None = None, spare_cores: SpareCores = None) -> Result:
    """Run one experiment: :func:`train`, then (with ``out`` or ``run_dir``) write its run directory.

    ``out``: an output root; the run directory ``<out>/<name>/<timestamp>/`` is created.
    ``run_dir``: an existing or new folder to write into (how sweep workers write their points).
    ``result.run_dir`` names it. ``figures=False`` skips the PNGs (``initlab plot`` draws them later).
    ``provenance``: what :func:`initlab.provenance.collect` gathered (the CLI passes its command
    line); with ``out`` and no provenance, one is collected here. ``record_helper``, ``spare_cores``: as
    :func:`train`'s.
    """
    from initlab.output.rundir import RunWriter
    from initlab.output.signals import SignalGuard

    cfg = _as_config(config)
    check_memory(cfg)
    # Signals interrupt training only; while the run directory is created and while results are
    # written they wait, so a second Ctrl-C never cuts a file in half (see SignalGuard).
    late: list = []
    with SignalGuard() as guard:
        writer = None
        if run_dir is not None:
            writer = RunWriter.open(run_dir, cfg)
        elif out is not None:
            if provenance is None:
                from initlab.provenance import collect

                provenance = collect(config_path=config if isinstance(config, (str, os.PathLike)) else None)
            writer = RunWriter.create(out, cfg, provenance)
        try:
            result = train(cfg, progress, on_step, on_start=guard.arm, record_helper=record_helper,
                           spare_cores=spare_cores)
        finally:
            guard.disarm()
        if writer is not None:
            result.run_dir = str(writer.path)
            writer.write(result, figures=figures)
            # A signal held while the results were written is delivered after the guard exits. The
            # caller asked to stop (a script's loop must end), but this run is complete: its
            # KeyboardInterrupt carries the result, so `initlab run` can follow metrics.json.
            late, guard.pending[:] = guard.pending[:], []
    if late and not guard.interrupted:
        try:
            signal.raise_signal(late[0])  # through the caller's own handler, as the guard would
        except KeyboardInterrupt:
            raise StoppedAfterSaving(result) from None
    return result


class StoppedAfterSaving(KeyboardInterrupt):
    """A signal arrived while a run's files were written: ``.result`` is the finished run (its
    ``metrics.json`` says how it ended); the interrupt stops whatever called :func:`run`."""

    def __init__(self, result: Result):
        super().__init__("interrupted after the run's results were saved")
        self.result = result


def _train(cfg: Config, result: Result, progress: bool, on_step, helper: bool | None = None,
           spare: SpareCores = None) -> None:
    timing = result.metrics.setdefault("timing", {"train_s": 0.0, "record_s": 0.0})
    # build_s (data, model, init), and the parts of record_s: analysis_s (theory and Jacobian at
    # init) and eval_s (evaluation), so that benchmarks see where a short run's time goes
    timing.update(train_s=0.0, record_s=0.0, build_s=0.0, analysis_s=0.0, eval_s=0.0)
    t = time.perf_counter()
    data, model, loss, opt, batch_rng, extra = build(cfg)
    timing["build_s"] = time.perf_counter() - t
    result.model = model
    result.metrics.update(extra)
    n = len(data.x_train)
    probe = slice(0, min(cfg.record.samples, n))
    recorder = BackgroundRecorder if (worth_a_helper(cfg) if helper is None else helper) else Recorder
    with recorder(data.x_train[probe], data.y_train[probe], loss, cfg.record.bins, cfg.record.range,
                  grad_samples=cfg.record.grad_samples, grad_from=cfg.record.grad_from) as rec:
        result.snapshots = rec.snapshots
        t = time.perf_counter()
        _analyse(cfg, model, data.x_train[probe], result)
        timing["analysis_s"] = time.perf_counter() - t
        rec.snapshot(model, 0)
        timing["record_s"] += time.perf_counter() - t
        steps, bs = cfg.train.steps, cfg.train.batch_size
        hist = _new_history(min(steps, HISTORY_ROWS))
        result.history = hist
        result.metrics["steps_done"] = 0
        params = model.params()
        every, eval_every = cfg.record.every, cfg.train.eval_every
        evaluator = Evaluator(hist, loss, data.x_eval, data.y_eval, data.x_train[:TRAIN_ACC_SAMPLES],
                              data.y_train[:TRAIN_ACC_SAMPLES], spare)
        bar = _progress_bar(steps, cfg.name) if progress and steps else None
        done = 0

        def settle():  # a pending snapshot no step follows: the gradient of a minibatch drawn as the next step's
            if rec.pending:
                t = time.perf_counter()
                idx = batch_rng.integers(0, n, size=bs)
                rec.settle(model, *data.batch(idx))
                timing["record_s"] += time.perf_counter() - t

        try:
            rows = len(hist["step"])
            for i in range(steps):
                if i == rows:
                    evaluator.wait()  # the helper thread writes rows of these arrays: none may still be in flight
                    _grow(hist, steps)
                    rows = len(hist["step"])
                t = time.perf_counter()
                idx = batch_rng.integers(0, n, size=bs)  # with replacement, as the textbook's np.random.choice
                if not _step(model, loss, opt, params, *data.batch(idx), cfg.train, hist, i, rec):
                    result.status = "diverged"
                    break
                done = i + 1
                timing["train_s"] += time.perf_counter() - t
                t = time.perf_counter()
                if done % eval_every == 0 or done == steps:
                    evaluator(i, model)
                    timing["eval_s"] += time.perf_counter() - t
                if every and done % every == 0 and done != steps:
                    rec.snapshot(model, done)
                timing["record_s"] += time.perf_counter() - t
                if bar is not None:
                    bar.update(1)
                if on_step is not None:
                    on_step(done)
        except KeyboardInterrupt:
            settle()  # the snapshots kept are complete
            raise
        finally:
            error = None
            try:
                error = evaluator.close()  # every evaluation lent to the helper thread is in the history
            finally:  # even if a second Ctrl-C cuts that wait short
                timing["eval_helper_s"] = evaluator.helper_s
                if bar is not None:
                    bar.close()
                result.metrics["steps_done"] = done
                # History up to the last finite step; metrics say which step broke.
                if result.status == "diverged":
                    result.metrics["diverged_at_step"] = done + 1
                result.history = _cut(hist, done)
        if error is not None:
            raise error
        if steps and result.status != "diverged":
            t = time.perf_counter()
            rec.snapshot(model, done)
            timing["record_s"] += time.perf_counter() - t
        settle()
        t = time.perf_counter()
        rec.close()  # a helper process's last snapshots arrive
        timing["record_s"] += time.perf_counter() - t


def _step(model, loss, opt, params, xb, yb, train_cfg, hist, i, rec=None) -> bool:
    """One training step on a minibatch, its loss and gradient norm logged in row ``i`` of the
    history; False (and no update) when either is non-finite. A snapshot ``rec`` holds pending
    gets this step's per-layer gradient norms (taken before clipping and the update)."""
    value = loss.forward(model.forward(xb, train=True), yb)
    hist["train_loss"][i] = value
    if not np.isfinite(value):
        return False
    model.backward(loss.backward(), input_grad=False)  # dL/dx is never used
    if rec is not None and rec.pending:
        rec.take_step_grads(model)
    clip_norm = train_cfg.clip_norm
    gnorm = clip_grad_norm(params, clip_norm) if clip_norm else grad_norm(params)
    hist["grad_norm"][i] = gnorm
    if not np.isfinite(gnorm):
        return False
    if train_cfg.clip_value:
        clip_grad_value(params, train_cfg.clip_value)
    opt.step(params)
    return True


def _progress_bar(total: int, name: str):
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)


def _analyse(cfg: Config, model: MLP, probe_x, result: Result) -> None:
    """Mean-field prediction and Jacobian spectrum at init; a failure here costs a warning, not the run."""
    from initlab.theory.jacobian import jacobian_summary
    from initlab.theory.measure import predict_for, spectrum_for

    try:
        if cfg.record.theory:  # record.theory: false skips the prediction (and so the figures' overlay)
            result.prediction = predict_for(cfg, probe_x, model).to_dict()
            result.metrics["theory"] = {k: v for k, v in result.prediction.items() if k != "layers"}
    except Exception as e:
        result.metrics.setdefault("warnings", []).append(f"theory: {type(e).__name__}: {e}")
    try:
        result.jacobian = spectrum_for(model, probe_x)
        if result.jacobian is not None:
            result.metrics["jacobian"] = jacobian_summary(result.jacobian)
    except Exception as e:
        result.metrics.setdefault("warnings", []).append(f"jacobian: {type(e).__name__}: {e}")


def _finish_metrics(cfg: Config, result: Result, warnings: int) -> None:
    m = result.metrics
    m.update(
        status=result.status,
        initlab_version=initlab.__version__,
        config_hash=cfg.hash,
        name=cfg.name,
        seed=cfg.seed,
    )
    m.setdefault("steps_done", 0)
    m["schema_version"] = initlab.SCHEMA_VERSION
    m["numpy_warnings"] = warnings
    m["final"] = _final(result)
    if result.snapshots:
        first = result.snapshots[0]
        m["layers"] = [first.layer(i) for i in range(len(first.data["act_std"]))]
        merge_prediction(m["layers"], result.prediction)
        last = result.snapshots[-1]
        m["layers_final"] = [last.layer(i) for i in range(len(last.data["act_std"]))]
    else:
        m["layers"] = []
    if result.error:
        m["error"] = result.error
    # A value that does not apply is null (or empty), never a missing key (docs/FILES.md).
    for key, empty in (("error", None), ("theory", None), ("jacobian", None), ("diverged_at_step", None),
                       ("layers_final", []), ("warnings", [])):
        m.setdefault(key, empty)
    timing = m.setdefault("timing", {})
    for k in ("total_s", "train_s", "record_s"):
        timing.setdefault(k, 0.0)


def final_loss_window(steps: int) -> int:
    """Steps averaged into ``final.train_loss``: at most 100 and at most a tenth of the run (at least 1),
    so a short run reports where it ended, not the mean of its whole curve."""
    return min(100, math.ceil(steps / 10)) if steps > 0 else 0


def _final(result: Result) -> dict:
    h = result.history
    final = dict.fromkeys(("train_loss", "train_acc", "eval_loss", "eval_acc", "train_loss_window"))  # forward only: all null
    if h and len(h.get("step", [])):
        losses = h["train_loss"][np.isfinite(h["train_loss"])]
        done = result.metrics.get("steps_done", 0)
        window = final_loss_window(done)
        tail = losses[-window:] if window else losses[:0]
        final["train_loss"] = float(tail.mean()) if len(tail) else None
        final["train_loss_window"] = window
        for k in ("train_acc", "eval_loss", "eval_acc"):
            col = h[k]
            seen = np.flatnonzero(~np.isnan(col))
            final[k] = float(col[seen[-1]]) if len(seen) else None
        if result.status == "diverged":
            final["train_loss"] = None
    return final
