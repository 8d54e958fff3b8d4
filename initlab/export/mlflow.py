"""MLflow runs from run and sweep directories (the ``mlflow`` extra: mlflow-skinny's client).

A run becomes an MLflow run: params are the flattened resolved config (``model.depth`` …), metrics
the history per step (``train_loss``, ``grad_norm``, ``eval_loss``, ``eval_acc``, ``train_acc``),
the per-layer snapshot statistics (``layer1/activation_std`` …) and the final values
(``final/train_loss`` …); tags carry status, ``config_hash``, seed and versions; artifacts are the
run's PNGs, JSON, CSV and NPZ files. A sweep is a parent run with one nested run per point.

Exports are idempotent: every MLflow run carries ``initlab.run_key`` (the run's place and config,
stable across exports) and ``initlab.content`` (a digest of its ``metrics.json``). A second export
of an unchanged run is skipped; a changed one (a resumed sweep point) or one whose earlier export
broke off (``initlab.export_state`` still ``partial``) is replaced: MLflow params cannot be
changed and metrics can only be appended, so the old MLflow run is deleted and a new one made.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Callable, Optional
from urllib.parse import urlsplit

import initlab
from initlab.errors import ConfigError, RuntimeStateError
from initlab.export.rundata import ExportError, MissingExtra, Run, Sweep, finite, history_points, layer_points
from initlab.keys import flatten

DEFAULT_EXPERIMENT = "initlab"
PROBE_TIMEOUT_S = 3.0
# MLflow's own defaults retry a dead server for minutes; a command line should say so in seconds.
# A user's own settings of these variables win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
QUIET_STDOUT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"  # MLflow's "View run at ..." lines
RUN_STATUS = {"completed": "FINISHED", "diverged": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
POINT_STATUSES = ("completed", "diverged", "failed", "interrupted", "pending", "running")
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
BATCH = 1000  # MLflow's limit on metrics per log_batch call


def _client_api():
    try:
        from mlflow.entities import Metric, Param, RunTag, ViewType
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise MissingExtra("mlflow", "MLflow export", str(e)) from e
    return MlflowClient, Metric, Param, RunTag, ViewType


def param_value(v) -> str:
    """A config value as an MLflow param (a string): strings as they are, the rest as JSON
    (``null``, ``true``, ``0.01``, ``[0, 1]``), so that a param reads back as the value it was."""
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 1] + "…"


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """For an HTTP tracking URI, check that something answers within ``timeout`` seconds, before
    anything is sent (any HTTP answer counts: the server decides the rest)."""
    import http.client
    import ssl

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
        host = parts.hostname or "localhost"
    except ValueError as e:
        raise ConfigError(f"tracking URI {uri}: {e}") from e
    if https:  # only "does anything answer?": certificates are MLflow's business when it connects
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/health")
        conn.getresponse().read(256)
    except (OSError, http.client.HTTPException) as e:
        reason = "no answer within %gs" % timeout if isinstance(e, TimeoutError) else (
            getattr(e, "strerror", None) or str(e) or type(e).__name__)
        raise RuntimeStateError(f"MLflow tracking server {uri} cannot be reached ({reason}); nothing exported") from e
    finally:
        conn.close()


@contextlib.contextmanager
def _quiet_and_bounded():
    """MLflow's INFO chatter (database migrations) off, and HTTP retries bounded, for one export."""
    saved = {k: os.environ.get(k) for k in (*HTTP_DEFAULTS, QUIET_STDOUT)}
    for k, v in HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ[QUIET_STDOUT] = "true"  # stdout is the command's own: one run id per line
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _message(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:1000]


class Exporter:
    """One MLflow client and experiment for one command; :meth:`export_run` / :meth:`export_sweep`."""

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None, log=None):
        self.MlflowClient, self.Metric, self.Param, self.RunTag, self.ViewType = _client_api()
        import mlflow

        self.uri = tracking_uri or mlflow.get_tracking_uri()  # respects MLFLOW_TRACKING_URI
        self.experiment_name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.log = log or (lambda msg: None)
        self.client = None
        self.experiment_id = None

    def connect(self) -> None:
        probe(self.uri)
        try:
            self.client = self.MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(self.experiment_name)
                except Exception:  # created meanwhile by another export: use it
                    exp = self.client.get_experiment_by_name(self.experiment_name)
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise ConfigError(f"MLflow experiment '{self.experiment_name}' is deleted; restore it or "
                                      f"choose another --experiment")
                self.experiment_id = exp.experiment_id
        except (ConfigError, MissingExtra):
            raise
        except ImportError as e:  # e.g. the sqlite store without SQLAlchemy
            raise MissingExtra("mlflow", f"the tracking URI {self.uri}", str(e)) from e
        except Exception as e:
            raise RuntimeStateError(f"MLflow at {self.uri}: {_message(e)}; nothing exported") from e

    # -- lookups ---------------------------------------------------------------------------------
    def _search(self, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                           run_view_type=self.ViewType.ACTIVE_ONLY, max_results=1000,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # -- one run -----------------------------------------------------------------------------------
    def export_run(self, run: Run, parent_id: Optional[str] = None, sweep_key: Optional[str] = None,
                   existing: Optional[list] = None) -> dict:
        """Create (or skip, or replace) the MLflow run of ``run``; returns ``{"action", "run_id", ...}``."""
        if existing is None:
            existing = self._search(f"tags.`initlab.run_key` = '{run.key}'")
        done = [r for r in existing if r.data.tags.get("initlab.content") == run.content
                and r.data.tags.get("initlab.export_state") == "complete"
                and r.data.tags.get("mlflow.parentRunId") == parent_id]  # a point under a deleted parent is redone
        if done:
            return {"action": "skipped", "run_id": done[0].info.run_id, "run_dir": str(run.path),
                    "reason": "already exported, unchanged"}
        for old in existing:
            self.client.delete_run(old.info.run_id)
        action = "replaced" if existing else "created"
        start = int(run.started() * 1000)
        tags = self._run_tags(run, parent_id, sweep_key)
        mlrun = self.client.create_run(self.experiment_id, start_time=start, tags=tags, run_name=run.label)
        run_id = mlrun.info.run_id
        try:
            self._log_contents(run_id, run, start)
            self.client.set_tag(run_id, "initlab.export_state", "complete")
            duration = run.duration()
            self.client.set_terminated(run_id, status=RUN_STATUS.get(run.status, "FINISHED"),
                                       end_time=start + int(duration * 1000) if duration is not None else None)
        except Exception as e:
            raise ExportError(f"{run.label}: export to {self.uri} broke off ({_message(e)}); MLflow run "
                              f"{run_id} is tagged initlab.export_state=partial and is replaced by the next "
                              f"export") from e
        return {"action": action, "run_id": run_id, "run_dir": str(run.path)}

    def _run_tags(self, run: Run, parent_id, sweep_key) -> dict:
        m = run.metrics
        tags = {
            "initlab.run_key": run.key, "initlab.content": run.content, "initlab.export_state": "partial",
            "initlab.status": run.status, "initlab.config_hash": str(m.get("config_hash")),
            "initlab.seed": str(m.get("seed", run.config.get("seed"))),
            "initlab.version": str(m.get("initlab_version")), "initlab.exported_by": initlab.__version__,
            "initlab.run_dir": str(run.path), "initlab.steps_done": str(m.get("steps_done")),
        }
        if m.get("diverged_at_step") is not None:
            tags["initlab.diverged_at_step"] = str(m["diverged_at_step"])
        if m.get("error"):
            tags["initlab.error"] = str(m["error"])[:4000]
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
            tags["initlab.sweep_key"] = sweep_key
        return tags

    def _log_contents(self, run_id: str, run: Run, timestamp: int) -> None:
        Metric, Param = self.Metric, self.Param
        params = [Param(k, param_value(v)) for k, v in flatten("", run.config).items()]
        metrics = [Metric(col, v, timestamp, step) for col, step, v in history_points(run)]
        metrics += [Metric(f"layer{layer}/{series}", v, timestamp, step)
                    for series, layer, step, v in layer_points(run)]
        final_step = int(run.metrics.get("steps_done") or 0)
        for k, v in (run.metrics.get("final") or {}).items():
            if finite(v) is not None:
                metrics.append(Metric(f"final/{k}", finite(v), timestamp, final_step))
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + BATCH])
        for f in run.artifacts():
            self.client.log_artifact(run_id, str(f))

    # -- a sweep -----------------------------------------------------------------------------------
    def export_sweep(self, sweep: Sweep) -> dict:
        found = self._search(f"tags.`initlab.sweep_parent_key` = '{sweep.key}'")
        counts = {**dict.fromkeys(POINT_STATUSES, 0), **sweep.counts()}  # zeros too: an update clears old counts
        tags = {"initlab.sweep_parent_key": sweep.key, "initlab.sweep_dir": str(sweep.path),
                "initlab.config_hash": str(sweep.manifest.get("config_hash")),
                "initlab.version": str(sweep.manifest.get("initlab_version")),
                "initlab.exported_by": initlab.__version__, "initlab.state": str(sweep.manifest.get("state")),
                "initlab.points": str(len(sweep.points)),
                **{f"initlab.count.{k}": str(n) for k, n in counts.items()}}
        if found:
            parent_id, action = found[0].info.run_id, "updated"
            self.client.set_tag(parent_id, "initlab.export_state", "partial")
        else:
            start = int(_sweep_start(sweep) * 1000)
            parent = self.client.create_run(self.experiment_id, start_time=start, run_name=sweep.label,
                                            tags={**tags, "initlab.export_state": "partial"})
            parent_id, action = parent.info.run_id, "created"
        try:
            self.client.log_batch(parent_id, tags=[self.RunTag(k, v) for k, v in tags.items()])
            if action == "created":  # params never change (and MLflow refuses a changed value)
                params = [self.Param(k, param_value(v)) for k, v in flatten("", _sweep_params(sweep)).items()]
                for i in range(0, len(params), 100):
                    self.client.log_batch(parent_id, params=params[i:i + 100])
            children = {}
            for r in self._search(f"tags.`initlab.sweep_key` = '{sweep.key}'"):
                children.setdefault(r.data.tags.get("initlab.run_key"), []).append(r)
            points = []
            for p in sweep.points:
                if p.run is None:
                    self.log(f"{sweep.label}: point {p.index} ({p.label}) skipped: {p.skipped}")
                    continue
                row = self.export_run(p.run, parent_id, sweep.key, children.get(p.run.key, []))
                self.log(f"{sweep.label}: point {p.index} ({p.label}) {row['action']}")
                points.append(row)
            for f in sweep.artifacts():
                self.client.log_artifact(parent_id, str(f))
            self.client.set_tag(parent_id, "initlab.export_state", "complete")
            status = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
            self.client.set_terminated(parent_id, status=status.get(str(sweep.manifest.get("state")), "FINISHED"))
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{sweep.label}: export to {self.uri} broke off ({_message(e)}); MLflow run "
                              f"{parent_id} is tagged initlab.export_state=partial; export again to finish it") from e
        return {"action": action, "run_id": parent_id, "sweep_dir": str(sweep.path), "points": points}


def _sweep_start(sweep: Sweep) -> float:
    starts = [p.run.started() for p in sweep.points if p.run is not None]
    return min(starts) if starts else sweep.path.stat().st_mtime


def _sweep_params(sweep: Sweep) -> dict:
    """The sweep's base config and axes (``sweep.yaml``), else the axes from the manifest."""
    from initlab.yamlio import read_yaml

    params = read_yaml(sweep.path / "sweep.yaml") if (sweep.path / "sweep.yaml").is_file() else None
    if isinstance(params, dict):
        return params
    return {"sweep": {a.get("key"): a.get("values") for a in sweep.manifest.get("axes") or [] if isinstance(a, dict)}}


def export(targets, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
           log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Export runs and sweeps (read by :func:`initlab.export.rundata.read_targets`) to MLflow.

    One row per target: ``action`` (``created``, ``replaced``, ``skipped``; ``updated`` for a sweep
    exported before), ``run_id`` and, for a sweep, its ``points``.
    """
    log = log or (lambda msg: None)
    _client_api()  # imported first: MLflow sets its loggers' levels when imported
    with _quiet_and_bounded():
        exporter = Exporter(tracking_uri, experiment, log)
        exporter.connect()
        rows = []
        for target in targets:
            if isinstance(target, Sweep):
                row = exporter.export_sweep(target)
                acts = {}
                for p in row["points"]:
                    acts[p["action"]] = acts.get(p["action"], 0) + 1
                shown = ", ".join(f"{n} {a}" for a, n in acts.items()) or "no points with results"
                log(f"{target.label}: MLflow parent run {row['run_id']} {row['action']}; points: {shown}")
            else:
                row = exporter.export_run(target)
                log(f"{target.label}: MLflow run {row['run_id']} {row['action']}"
                    + (f" ({row['reason']})" if row.get("reason") else ""))
            row.update(tracking_uri=exporter.uri, experiment=exporter.experiment_name,
                       experiment_id=exporter.experiment_id)
            rows.append(row)
        return rows
