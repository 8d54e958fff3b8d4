"""Sweeps: a grid of experiments run in parallel, one manifest, one summary, one comparative figure.

    import initlab
    res = initlab.sweep("configs/xavier_vs_kaiming.yaml", workers=2)
    res.sweep_dir, res.counts, res.points[0]["final"]["train_loss"]

The grid is the Cartesian product of axes, each a dotted key and a list of values (a mapping
value merges into its section, so one axis can set ``scheme`` and ``std`` together): the
config's ``sweep:`` section first, then the given axes, which replace config axes that set the
same keys. A one-value axis is an ordinary override. Every point keeps the base seed, so every
point sees the same data, the same random draws for its weights and the same minibatches: the
axes are the only difference. ``seeds=N`` adds a last axis ``seed: [s, s+1, …, s+N-1]``.

The parent process is the only writer of ``manifest.json`` and the summaries. Points run in
worker processes (one BLAS thread each, so results do not depend on the worker count) or on a
Dask cluster, and each writes its own run directory, ``metrics.json`` last. A point is done when
its ``metrics.json`` says ``completed`` or ``diverged``; ``resume`` re-runs every other point into
a fresh directory under the same number.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from initlab.errors import ConfigError, describe, short
from initlab.output.readers import read_manifest
from initlab.output.rundir import link_latest
from initlab.sweeps.backends import make_backend
from initlab.sweeps.dask_backend import BackendLostError
from initlab.sweeps.local import WORKERS_PER_CORE, WorkerStartError, default_workers
from initlab.sweeps.manifest import (
    DONE,
    ManifestWriter,
    SweepLock,
    count_statuses,
    new_manifest,
    now_iso,
    reconcile,
    write_manifest,
)
from initlab.sweeps.order import costliest_first
from initlab.sweeps.plan import load_plan, make_plan
from initlab.sweeps.summary import write_summary

GRACE_S = 10.0  # how long interrupted workers get to save their partial run directory


@dataclass
class SweepResult:
    sweep_dir: Path
    counts: dict
    points: list = field(default_factory=list)  # the rows of summary.json
    stopped_by: Optional[str] = None  # "SIGINT", "SIGTERM", "--fail-fast" or "error"
    error: Optional[str] = None  # why the sweep itself stopped (stopped_by "error")

    @property
    def interrupted(self) -> bool:
        return self.stopped_by in ("SIGINT", "SIGTERM")

    def exit_code(self, fail_on_diverge: bool = False) -> int:
        """SPEC's worst outcome: 130 interrupted, 1 any failed, 3 any diverged (with the flag), else 0."""
        if self.interrupted:
            return 130
        if self.counts.get("failed") or self.stopped_by:
            return 1
        if self.counts.get("interrupted") or self.counts.get("pending"):
            return 130  # a worker was interrupted on its own: the sweep is incomplete
        if fail_on_diverge and self.counts.get("diverged"):
            return 3
        return 0

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.counts.items() if v}
        return f"SweepResult(sweep_dir={str(self.sweep_dir)!r}, counts={shown})"


def sweep(config=None, axes=None, *, overrides=(), seed=None, seeds=None, out="outputs", workers=None,
          fail_fast=False, resume=None, scheduler=None, figures=False, progress=False,
          log: Optional[Callable[[str], None]] = None, provenance: Optional[dict] = None) -> SweepResult:
    """Run every point of a grid and write the sweep directory; see the module docstring.

    ``config``: a path, a mapping, a Config or None (the embedded default). ``axes``: a mapping of
    dotted key → list of values (or :class:`Axis` objects, e.g. from :func:`command_axes`).
    ``overrides``: ``"key=value"`` strings or pairs applied to every point. ``resume``: an existing
    sweep directory; only its unfinished points run (the other arguments, when given, must
    describe the same grid). ``scheduler``: a Dask scheduler address (default
    ``$INITLAB_DASK_SCHEDULER``); otherwise ``workers`` local processes (default: one per core).
    ``figures``: also draw each point's own PNGs. Ctrl-C or SIGTERM stops the sweep cleanly:
    the result then has ``stopped_by`` set and ``exit_code()`` 130. ``provenance``: what
    :func:`initlab.provenance.collect` gathered (the CLI passes its command line); a new sweep
    directory gets ``provenance.json`` (one is collected when none is given).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be an integer ≥ 1, got {workers!r}")
    scheduler = scheduler or os.environ.get("INITLAB_DASK_SCHEDULER") or None
    if not scheduler and workers is not None and workers > WORKERS_PER_CORE * default_workers():
        # Local workers only compete for the cores (each holds its own copy of the data): past a
        # few per core a sweep gets slower, not faster, and the memory adds up.
        cores = default_workers()
        raise ConfigError(f"--workers {workers}: at most {WORKERS_PER_CORE * cores} local workers "
                          f"({WORKERS_PER_CORE} per core, {cores} core{'s' if cores != 1 else ''} here)")
    log = log or (lambda msg: None)
    if resume is not None:
        sweep_dir, manifest, plan = _resumed(Path(resume), config, axes, overrides, seed, seeds)
    else:
        plan = make_plan(config, axes, overrides, seed, seeds)
    share_cores = False
    if not scheduler:
        from initlab.memory import check_concurrent_memory, fits_side_by_side

        size, configs = workers or default_workers(), [p.config for p in plan.points]
        check_concurrent_memory(configs, size)
        # a short sweep shares the cores: up to 2·size − 1 points at once (sweeps/local.py), where they fit
        share_cores = size > 1 and fits_side_by_side(configs, 2 * size - 1)
    from initlab.config import ignored_settings

    for note in dict.fromkeys(n for p in plan.points for n in ignored_settings(p.config)):
        log(f"warning: {note}")  # once per distinct message; each point's metrics.json keeps its own
    backend = make_backend(scheduler, workers, log, share_cores)
    lock = None
    try:
        backend.ready()
        if resume is not None:
            lock = SweepLock(sweep_dir)
            todo = reconcile(sweep_dir, manifest, plan)
            done = len(plan.points) - len(todo)
            log(f"resuming {sweep_dir}: {done} of {len(plan.points)} points done, {len(todo)} to run")
        else:
            sweep_dir, lock, manifest = _new_sweep_dir(out, plan, provenance, config)
            todo = [p.index for p in plan.points]
            log(f"{sweep_dir}: {len(plan.points)} point{'s' if len(plan.points) != 1 else ''} on {backend.describe}")
        runner = _Runner(sweep_dir, manifest, plan, backend, fail_fast, figures, progress, log)
        stopped_by = runner.run(costliest_first(plan, todo))
        backend.dismiss()  # the workers exit while the summary and sweep.png are written, not before
        rows = write_summary(sweep_dir, manifest)
        _draw(sweep_dir, log)
    finally:
        backend.close()
        if lock:
            lock.release()
    link_latest(sweep_dir)
    return SweepResult(sweep_dir, count_statuses(manifest), rows, stopped_by, runner.error)


def _resumed(sweep_dir: Path, config, axes, overrides, seed, seeds):
    """The manifest and plan of a sweep to resume; the other arguments, when given, must describe it."""
    plan = load_plan(sweep_dir)
    if sweep_dir.is_dir() and not (sweep_dir / "manifest.json").exists():
        # A start cut short between sweep.yaml and manifest.json: the grid is known, and each point's
        # own files say what ran (reconcile), so the manifest is rebuilt rather than refused.
        manifest = new_manifest(plan)
    else:
        manifest = read_manifest(sweep_dir)
    if plan.hash != manifest["config_hash"]:
        import initlab

        made_by = manifest.get("initlab_version")
        if isinstance(made_by, str) and made_by != initlab.__version__:
            # configs gain keys between versions (each with a default), and the hashes follow them
            raise ConfigError(f"{sweep_dir}: made by initlab {short(made_by)}, whose configs this version "
                              f"({initlab.__version__}) resolves differently; start the sweep again to re-run it")
        raise ConfigError(f"{sweep_dir}: sweep.yaml does not match manifest.json (edited by hand?)")
    if config is not None or axes or overrides or seed is not None or seeds is not None:
        other = make_plan(config, axes, overrides, seed, seeds)
        if other.hash != plan.hash:
            raise ConfigError(f"{sweep_dir}: belongs to a different config (its hash {plan.hash}, this command's "
                              f"{other.hash}); `initlab sweep --resume {sweep_dir}` alone resumes it as it was")
    return sweep_dir, manifest, plan


def _new_sweep_dir(out, plan, provenance=None, config=None):
    """``<out>/<name>/sweep-<timestamp>/`` with its lock held, ``sweep.yaml``, ``provenance.json``,
    ``runs/`` and a new manifest."""
    import initlab
    from initlab.output.files import atomic_write, make_unique_dir, timestamp, write_json
    from initlab.provenance import collect

    if provenance is None:
        provenance = collect(config_path=config if isinstance(config, (str, os.PathLike)) else None,
                             axes={a.key: a.values for a in plan.axes}, kind="sweep")
    sweep_dir = make_unique_dir(Path(out) / plan.name, f"sweep-{timestamp()}")
    lock = SweepLock(sweep_dir)
    try:
        atomic_write(sweep_dir / "sweep.yaml", plan.sweep_yaml())
        write_json(sweep_dir / "provenance.json", {**provenance, "schema_version": initlab.SCHEMA_VERSION})
        (sweep_dir / "runs").mkdir()
        manifest = new_manifest(plan)
        write_manifest(sweep_dir, manifest)
    except BaseException:
        lock.release()
        raise
    return sweep_dir, lock, manifest


def _import_plotting() -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

        import initlab.plots.sweep  # noqa: F401
    except Exception:  # the real import, when drawing, reports any problem
        pass


def _draw(sweep_dir: Path, log) -> None:
    try:
        from initlab.plots.sweep import plot_sweep

        plot_sweep(sweep_dir)
    except KeyboardInterrupt:
        log("sweep.png skipped (interrupted); `initlab plot` draws it later")
    except Exception as e:  # the numbers are saved; a figure is not worth failing for
        log(f"warning: sweep.png not drawn ({getattr(e, 'strerror', None) or short(str(e), 200) or 'no reason given'})")


class _Runner:
    """The parent's loop: dispatch points, record outcomes in the manifest, stop cleanly on a signal."""

    def __init__(self, sweep_dir, manifest, plan, backend, fail_fast, figures, progress, log):
        self.sweep_dir, self.manifest, self.plan, self.backend = Path(sweep_dir), manifest, plan, backend
        self.fail_fast, self.figures, self.log = fail_fast, figures, log
        self.progress = progress
        self.stop: Optional[str] = None
        self.error: Optional[str] = None
        self.force = False
        self.writer = ManifestWriter(self.sweep_dir, manifest)
        self.bar = None
        self.finished = 0

    # signals: the handlers only set flags; the loop notices within a poll interval
    def _on_signal(self, signum, frame):
        if self.stop is None:
            self.stop = signal.Signals(signum).name
        else:
            self.force = True  # a second Ctrl-C: stop waiting for workers to save

    def _install(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._on_signal)
        return old

    def _save(self, force=False):
        self.writer.save(force)

    def run(self, todo: list[int]) -> Optional[str]:
        m = self.manifest
        m["state"] = "running"
        m.setdefault("invocations", []).append({"started": now_iso(), "points": len(todo), "on": self.backend.describe})
        old = self._install()
        try:
            self._save(force=True)
            self._open_bar(len(todo))
            self._loop(deque(todo))
        except BaseException as e:
            # Whatever stopped the loop (a full disk, a bug), the manifest must not say "running":
            # record it, best effort (the disk may refuse this write too), and let the error go on.
            m["state"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            m["error"] = self.error or ("interrupted" if isinstance(e, KeyboardInterrupt) else describe(e))
            for mp in m["points"]:
                if mp["status"] == "running":
                    mp.update(status="interrupted", exit_reason=f"the sweep stopped: {m['error']}")
            m["invocations"][-1].update(finished=now_iso(), stopped_by="error")
            try:
                self._save(force=True)
                self.writer.close()
            except Exception:
                pass
            raise
        finally:
            if old:
                for s, h in old.items():
                    signal.signal(s, h)
            self._close_bar()
        c = count_statuses(m)
        m["state"] = "interrupted" if self.stop else ("failed" if c["failed"] else "completed")
        if self.error:
            m["error"] = self.error
        m["invocations"][-1].update(finished=now_iso(), stopped_by=self.stop)
        self._save(force=True)
        self.writer.close()
        return self.stop

    def _loop(self, queue: deque) -> None:
        points = self.manifest["points"]
        warm = None
        try:
            if queue:
                self.backend.start(len(queue))
            while (queue or self.backend.busy()) and self.stop is None:
                room = self.backend.room(len(queue))
                while queue and room > 0 and self.stop is None:
                    self._start(queue[0])
                    queue.popleft()  # only once it is out: a point whose submission failed stays queued
                    room -= 1
                if not queue and warm is None:
                    # Every point is out: a core frees up as the last ones finish. Import matplotlib now, in
                    # the background, so that drawing sweep.png at the end does not wait for it.
                    warm = threading.Thread(target=_import_plotting, daemon=True)
                    warm.start()
                outcomes = self.backend.poll(0.2)
                self.writer.flush()  # a start or finish not yet in manifest.json gets there within the interval
                for outcome in outcomes:
                    self._finish(outcome)
                    if self.fail_fast and outcome["status"] == "failed" and self.stop is None:
                        self.stop = "--fail-fast"
                        self.fail_index = outcome["index"]
        except (WorkerStartError, BackendLostError) as e:
            self.stop, self.error = "error", str(e)
            self.stop_reason = f"stopped: {e}" if isinstance(e, BackendLostError) else \
                "stopped: the worker processes could not start"
            busy = self.backend.running()
            lost = [i for i, mp in enumerate(points) if mp["status"] == "running" and i not in busy]
            queue.extendleft(sorted(set(lost) - set(queue), reverse=True))
        if self.stop is None:
            return
        if self.stop == "--fail-fast":
            reason = f"stopped by --fail-fast (point {self.fail_index} failed)"
        elif self.stop == "error":
            reason = self.stop_reason
        else:
            reason = f"interrupted by {self.stop}"
        self.log(f"{reason}: stopping {self.backend.busy()} running point(s)…" if self.backend.busy() else reason)
        for outcome in self.backend.interrupt(f"{reason} while running", GRACE_S, lambda: self.force):
            self._finish(outcome)
        for index in queue:
            points[index].update(status="interrupted", exit_reason=f"{reason} before it started",
                                 started=None, worker=None)
        self._save(force=True)

    def _start(self, index: int) -> None:
        p = self.plan.points[index]
        run_dir = self.sweep_dir / p.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        task = {"index": index, "config": p.config.to_dict(), "run_dir": str(run_dir.resolve()),
                "figures": self.figures, "limit_threads": self.backend.limit_threads}
        worker = self.backend.submit(task)
        self.manifest["points"][index].update(status="running", started=now_iso(), finished=None, error=None,
                                              exit_reason=None, duration_s=None, worker=worker)
        self._save()

    def _finish(self, outcome: dict) -> None:
        mp = self.manifest["points"][outcome["index"]]
        mp.update(status=outcome["status"], finished=now_iso(), error=outcome.get("error"),
                  exit_reason=outcome.get("exit_reason"), duration_s=outcome.get("duration_s"))
        if outcome.get("worker"):
            mp["worker"] = outcome["worker"]
        self.writer.record(outcome["index"])  # at once, in the journal; manifest.json follows (see ManifestWriter)
        self.finished += 1
        self._report(mp)

    # progress: one bar on a terminal, one line per point otherwise
    def _open_bar(self, total: int) -> None:
        if self.progress and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.plan.name, unit="point", file=sys.stderr, dynamic_ncols=True)
        self.total = total

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _report(self, mp: dict) -> None:
        line = f"[{self.finished}/{self.total}] {Path(mp['run_dir']).name}: {mp['status']}"
        if mp.get("duration_s") is not None:
            line += f" ({mp['duration_s']:.1f} s)"
        if mp["status"] == "failed" and mp.get("error"):
            line += f": {mp['error']}"
        elif mp["status"] == "diverged" and mp.get("exit_reason"):
            line += f": {mp['exit_reason']}"
        if self.bar is not None:
            self.bar.update(1)
            c = count_statuses(self.manifest)
            self.bar.set_postfix_str(" ".join(f"{k} {c[k]}" for k in ("completed", "diverged", "failed") if c[k]))
            if mp["status"] not in DONE:
                self.bar.write(line, file=sys.stderr)
        else:
            self.log(line)
