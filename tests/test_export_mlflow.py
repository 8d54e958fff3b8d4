"""``initlab export mlflow`` against real MLflow stores, read back with MLflow's own client.

A real ``mlflow server`` (SQLite backend, artifact folder, both in a temp dir) is started on
127.0.0.1 by a fixture and stopped after the module; it boots while the tests of the local stores
(MLflow's default ``sqlite:///mlflow.db`` in the working directory, and a file store) run.
Expected values come from the run's own files read here independently (yaml, csv).
"""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from initlab.cli import cli
from tests.conftest import export_fixture_runs, strict_json

BASE = {"data": {"kind": "teacher", "samples": 200, "features": 20, "eval_samples": 200},
        "model": {"depth": 3, "width": 16, "activation": "tanh"},
        "train": {"steps": 60, "eval_every": 20, "batch_size": 50}, "record": {"every": 20, "samples": 200}}
BOOT_DEADLINE_S = 120  # a cold `mlflow server` imports a lot; on a busy 2-core machine it can take 30 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``mlflow server`` process; ``url`` waits (with a deadline) until it answers /health."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.log = open(root / "server.log", "wb")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
             str(root / "artifacts"), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=root)
        self.root = root
        self.started = time.monotonic()
        self._ready = False

    @property
    def url(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.port}"
        while not self._ready:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({self.proc.returncode}): {self._tail()}")
            if time.monotonic() - self.started > BOOT_DEADLINE_S:
                pytest.fail(f"mlflow server not ready after {BOOT_DEADLINE_S}s: {self._tail()}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    self._ready = r.status == 200
            except OSError:
                time.sleep(0.25)
        return url

    def _tail(self) -> str:
        self.log.flush()
        return (self.root / "server.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        # The server runs uvicorn as a child: stop the whole process group this fixture created.
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return export_fixture_runs(tmp_path_factory.mktemp("mlflow-runs"), BASE)


@pytest.fixture
def mlflow_env(monkeypatch, tmp_path):
    """A clean MLflow environment in a fresh working directory."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(runner, *args):
    return runner.invoke(cli, ["export", "mlflow", *map(str, args)])


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_runs(c, name="initlab"):
    exp = c.get_experiment_by_name(name)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_params(params: dict, run_dir: Path):
    config = flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert set(params) == set(config)
    for key, value in config.items():
        assert (params[key] if isinstance(value, str) else json.loads(params[key])) == value, key


def check_metric_histories(c, run_id, run_dir: Path):
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for column in ("train_loss", "grad_norm", "eval_loss", "eval_acc", "train_acc"):
        want = [(int(r["step"]), float(r[column])) for r in rows if r[column]]
        got = sorted((m.step, m.value) for m in c.get_metric_history(run_id, column))
        assert got == want, column


def artifact_names(c, run_id):
    return sorted(a.path for a in c.list_artifacts(run_id))


def single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- local stores, no server (these run while the server boots) ---------------------------------------

def test_default_store_is_mlflows_own_default(runner, runs, mlflow_env):
    result = invoke(runner, runs["trained"])
    assert result.exit_code == 0, result.output
    import mlflow

    default = mlflow.get_tracking_uri()  # MLflow's own default here (MLflow 3: sqlite:///mlflow.db)
    assert str(mlflow_env) in default and any(mlflow_env.iterdir())  # written in the working directory
    c = client(default)
    [run] = experiment_runs(c)
    assert result.stdout.strip() == run.info.run_id
    check_params(run.data.params, runs["trained"])
    check_metric_histories(c, run.info.run_id, runs["trained"])


def test_tracking_uri_from_the_environment_and_a_file_store(runner, runs, mlflow_env, monkeypatch, tmp_path_factory):
    store = tmp_path_factory.mktemp("file-store") / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind this switch
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    result = invoke(runner, runs["sweep"])
    assert result.exit_code == 0, result.output
    assert not (mlflow_env / "mlflow.db").exists()
    c = client(store.as_uri())
    found = experiment_runs(c, "from-env")
    assert len(found) == 3  # the sweep's parent and its two points
    assert len([r for r in found if "mlflow.parentRunId" in r.data.tags]) == 2


# -- a real mlflow server over HTTP --------------------------------------------------------------------

def test_run_over_http_params_metrics_tags_artifacts(runner, runs, server, mlflow_env):
    run_dir = runs["trained"]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = invoke(runner, run_dir, "--tracking-uri", server.url, "--experiment", "http-run")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing added or changed
    c = client(server.url)
    [run] = experiment_runs(c, "http-run")
    run_id = run.info.run_id
    assert result.stdout.strip() == run_id
    again = invoke(runner, run_dir, "--tracking-uri", server.url, "--experiment", "http-run", "--json")
    [row] = strict_json(again.stdout)["exported"]  # a run's row: every key there, null where it does not apply
    assert row == {"kind": "run", "action": "skipped", "run_id": run_id, "run_dir": str(run_dir.resolve()),
                   "reason": "already exported, unchanged", "sweep_dir": None, "points": None,
                   "tracking_uri": server.url, "experiment": "http-run", "experiment_id": run.info.experiment_id}
    check_params(run.data.params, run_dir)
    check_metric_histories(c, run_id, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key, value in metrics["final"].items():
        assert run.data.metrics[f"final/{key}"] == value
    steps = [m.step for m in c.get_metric_history(run_id, "layer1/activation_std")]
    assert steps == [0, 20, 40, 60]
    tags = run.data.tags
    assert tags["initlab.status"] == "completed" and tags["initlab.config_hash"] == metrics["config_hash"]
    assert tags["initlab.seed"] == str(metrics["seed"]) and tags["initlab.version"] == metrics["initlab_version"]
    assert tags["initlab.export_state"] == "complete" and run.info.status == "FINISHED"
    assert artifact_names(c, run_id) == sorted(p.name for p in run_dir.iterdir())  # every file of the run
    assert {"activations.png", "metrics.json", "activations.npz", "config.yaml"} <= set(artifact_names(c, run_id))

    again = invoke(runner, run_dir, "--tracking-uri", server.url, "--experiment", "http-run")
    assert again.exit_code == 0 and "skipped" in again.stderr
    assert [r.info.run_id for r in experiment_runs(c, "http-run")] == [run_id]

    # a changed run (as a resumed point re-runs in place) replaces its MLflow run: still one
    moved = mlflow_env / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, moved)
    changed = json.loads((moved / "metrics.json").read_text())
    changed["timing"]["total_s"] += 1
    (moved / "metrics.json").write_text(json.dumps(changed))
    third = invoke(runner, moved, "--tracking-uri", server.url, "--experiment", "http-run")
    assert third.exit_code == 0 and "replaced" in third.stderr
    [new] = experiment_runs(c, "http-run")
    assert new.info.run_id != run_id and new.data.tags["initlab.run_key"] == tags["initlab.run_key"]


def test_sweep_over_http_is_a_parent_with_nested_points(runner, runs, server, mlflow_env):
    sweep = runs["sweep"]
    result = invoke(runner, sweep, "--tracking-uri", server.url, "--experiment", "http-sweep")
    assert result.exit_code == 0, result.output
    c = client(server.url)
    found = experiment_runs(c, "http-sweep")
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and result.stdout.strip() == parents[0].info.run_id
    parent = parents[0]
    children = {r.info.run_name: r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    points = json.loads((sweep / "manifest.json").read_text())["points"]
    assert len(found) == 1 + len(points) == 3 and sorted(children) == sorted(p["label"] for p in points)
    for point in points:
        child = children[point["label"]]
        assert child.data.params["model.activation"] == point["overrides"]["model.activation"]
        check_params(child.data.params, sweep / point["run_dir"])
        check_metric_histories(c, child.info.run_id, sweep / point["run_dir"])
    assert parent.data.params["sweep.model.activation"] == '["tanh", "relu"]'
    assert {"manifest.json", "summary.csv", "summary.json"} <= set(artifact_names(c, parent.info.run_id))
    assert parent.data.tags["initlab.count.completed"] == "2"

    again = invoke(runner, sweep, "--tracking-uri", server.url, "--experiment", "http-sweep")
    assert again.exit_code == 0, again.output
    assert "2 skipped" in again.stderr and again.stdout.strip() == parent.info.run_id
    assert sorted(r.info.run_id for r in experiment_runs(c, "http-sweep")) == sorted(r.info.run_id for r in found)

    as_json = invoke(runner, sweep, "--tracking-uri", server.url, "--experiment", "http-sweep", "--json")
    assert as_json.exit_code == 0, as_json.output
    [row] = strict_json(as_json.stdout)["exported"]  # stdout holds the one object, nothing else
    assert row["run_id"] == parent.info.run_id and row["experiment"] == "http-sweep" and row["kind"] == "sweep"
    assert row["run_dir"] is None and Path(row["sweep_dir"]).is_absolute()
    assert [p["action"] for p in row["points"]] == ["skipped", "skipped"]
    assert all(Path(p["run_dir"]).is_absolute() and p["reason"] for p in row["points"])


def test_diverged_failed_interrupted_runs(runner, runs, server, mlflow_env):
    c = client(server.url)
    for key, status in (("diverged", "FINISHED"), ("failed", "FAILED"), ("interrupted", "KILLED")):
        result = invoke(runner, runs[key], "--tracking-uri", server.url, "--experiment", "bad-runs")
        assert result.exit_code == 0, result.output
        run = c.get_run(result.stdout.strip())
        assert run.info.status == status and run.data.tags["initlab.status"] == key
        for name in run.data.metrics:
            values = [m.value for m in c.get_metric_history(run.info.run_id, name)]
            assert all(abs(v) < 1e300 for v in values), name  # finite (MLflow would store inf as ±1.8e308)
    diverged = c.get_run(invoke(runner, runs["diverged"], "--tracking-uri", server.url,
                                "--experiment", "bad-runs").stdout.strip())
    assert diverged.data.tags["initlab.diverged_at_step"] == "3"
    assert [m.step for m in c.get_metric_history(diverged.info.run_id, "train_loss")] == [1, 2]
    failed = [r for r in experiment_runs(c, "bad-runs") if r.data.tags["initlab.status"] == "failed"]
    assert "boom" in failed[0].data.tags["initlab.error"]


def test_half_written_run_is_refused_before_anything_is_sent(runner, runs, server, mlflow_env):
    result = invoke(runner, runs["trained"], runs["half"], "--tracking-uri", server.url, "--experiment", "half")
    assert result.exit_code == 2
    assert "incomplete run" in single_error_line(result)
    assert client(server.url).get_experiment_by_name("half") is None


def test_unreachable_tracking_uri_is_one_error_line_within_seconds(runner, runs, mlflow_env):
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t = time.monotonic()
    result = invoke(runner, runs["trained"], "--tracking-uri", closed)
    assert time.monotonic() - t < 5
    assert result.exit_code == 2
    assert "cannot be reached" in single_error_line(result)

    # a server that accepts the connection but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t = time.monotonic()
        result = invoke(runner, runs["trained"], "--tracking-uri", f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert time.monotonic() - t < 8
    assert result.exit_code == 2
    assert "no answer within" in single_error_line(result)


def test_export_broken_off_midway_is_marked_partial_and_finished_by_the_next(runner, runs, server, mlflow_env,
                                                                           monkeypatch):
    import requests
    from mlflow.tracking import MlflowClient

    uploads = []
    real = MlflowClient.log_artifact

    def flaky(self, run_id, local_path, artifact_path=None):
        uploads.append(local_path)
        if len(uploads) == 3:  # the connection drops during the third upload
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", flaky)
    args = (runs["trained"], "--tracking-uri", server.url, "--experiment", "partial")
    result = invoke(runner, *args)
    assert result.exit_code == 1
    assert "initlab.export_state=partial" in single_error_line(result)
    c = client(server.url)
    [broken] = experiment_runs(c, "partial")
    assert broken.data.tags["initlab.export_state"] == "partial" and broken.info.status == "RUNNING"

    monkeypatch.setattr(MlflowClient, "log_artifact", real)
    again = invoke(runner, *args)
    assert again.exit_code == 0 and "replaced" in again.stderr
    [fixed] = experiment_runs(c, "partial")
    assert fixed.info.run_id != broken.info.run_id and fixed.data.tags["initlab.export_state"] == "complete"


def test_without_the_extra_one_error_line_naming_it(runner, runs, mlflow_env, monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    result = invoke(runner, runs["trained"])
    assert result.exit_code == 2
    assert "pip install 'initlab[mlflow]'" in single_error_line(result)
    assert not (mlflow_env / "mlflow.db").exists()


def _config_file(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": name, "train": {**BASE["train"], "steps": 20}}))
    return path


def test_sweep_with_mlflow_flag_logs_when_done(runner, server, mlflow_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "flag")
    result = runner.invoke(cli, ["sweep", str(_config_file(mlflow_env, "flagged")), "--std", "1,0.01",
                                 "--workers", "1", "--out", "out", "--mlflow"])
    assert result.exit_code == 0, result.output
    found = experiment_runs(client(server.url), "flag")
    assert len(found) == 3 and len([r for r in found if "mlflow.parentRunId" in r.data.tags]) == 2


def test_mlflow_flag_with_an_unreachable_server_fails_before_anything_runs(runner, mlflow_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    result = runner.invoke(cli, ["run", str(_config_file(mlflow_env, "flagged")), "--out", "out", "--mlflow"])
    assert result.exit_code == 2
    assert "cannot be reached" in single_error_line(result)
    assert not (mlflow_env / "out").exists()
