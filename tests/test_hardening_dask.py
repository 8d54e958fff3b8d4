"""Issue 16, Dask: every network step has a deadline, and losing the scheduler never guesses a status.

Real processes throughout: `initlab sweep` as a subprocess, a real `dask scheduler` and `dask worker`
(the scheduler killed mid-sweep), and a TCP server on 127.0.0.1 that accepts and never answers.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import initlab
from initlab.output.readers import read_manifest
from tests.test_hardening import assert_one_error, env_for

pytest.importorskip("distributed", reason="needs the optional extra initlab[distributed]")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
# Points of 8,000 steps take a second or so on one Dask thread: the scheduler dies while they run.
# (1,500 steps were too short once the engine got faster and the costliest points began to go
# first: the three left after the first one finished could all end before the cluster was killed.)
SLOW = {
    "name": "dk",
    "data": {"kind": "teacher", "samples": 1000, "features": 50, "classes": 5, "eval_samples": 200},
    "model": {"depth": 4, "width": 50, "activation": "relu"},
    "optimizer": {"lr": 0.05},
    "train": {"batch_size": 50, "eval_every": 500},
    "record": {"samples": 200},
    "sweep": {"train.steps": [30, 8000, 8001, 8002]},
}


@pytest.fixture
def silent_port():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


def start_scheduler(tmp_path):
    """A real `dask scheduler` on 127.0.0.1; returns (process, address)."""
    info = tmp_path / "scheduler.json"
    proc = subprocess.Popen(DASK + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                    "--scheduler-file", str(info)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return proc, json.loads(info.read_text())["address"]
        except (OSError, ValueError, KeyError):
            assert proc.poll() is None, "dask scheduler exited"
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("dask scheduler did not start")


def sweep_cmd(tmp_path, *args):
    return [sys.executable, "-m", "initlab", "sweep", *map(str, args), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("address", ["SILENT", "foo://", "not a url", "tcp://127.0.0.1:9", "tcp://[::1"])
def test_a_bad_scheduler_address_is_one_error_line_within_the_deadline(tmp_path, silent_port, address):
    address = address.replace("SILENT", f"tcp://127.0.0.1:{silent_port}")
    t0 = time.monotonic()
    res = subprocess.run(sweep_cmd(tmp_path, "--std", "1,2", "--scheduler", address), capture_output=True,
                         text=True, timeout=120, env=env_for(INITLAB_DASK_TIMEOUT="1"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    line = assert_one_error(res.stderr)
    assert "--scheduler" in line
    assert "__del__" not in res.stderr
    assert not (tmp_path / "out").exists()  # nothing was written
    assert time.monotonic() - t0 < 60  # imports on a loaded machine; the connection itself waits 1 s


def test_a_cluster_without_workers_warns_then_errors(tmp_path):
    sched, address = start_scheduler(tmp_path)
    try:
        res = subprocess.run(sweep_cmd(tmp_path, "--std", "1,2", "--scheduler", address), capture_output=True,
                             text=True, timeout=120, env=env_for(INITLAB_DASK_WORKER_WAIT="1"), cwd=tmp_path)
    finally:
        sched.kill()
        sched.wait()
    assert res.returncode == 2, res.stderr
    assert "warning: the Dask cluster" in res.stderr and "no workers" in res.stderr
    assert "has no workers (waited 1 s" in assert_one_error(res.stderr)


def test_losing_the_scheduler_mid_sweep_records_true_statuses_and_resume_finishes(tmp_path):
    sched, address = start_scheduler(tmp_path)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--nworkers", "1", "--no-dashboard", "--death-timeout", "5"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "w"), cwd=tmp_path,
                              env=env_for(OMP_NUM_THREADS="1"))
    import distributed

    with distributed.Client(address, timeout="30s") as client:
        client.wait_for_workers(1, timeout=120)
    cfg = tmp_path / "dk.yaml"
    cfg.write_text(yaml.safe_dump(SLOW))
    proc = subprocess.Popen(sweep_cmd(tmp_path, cfg, "--scheduler", address, "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env_for())
    try:
        d = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and d is None:  # point 0 done, another one running
            assert proc.poll() is None, proc.communicate()
            for path in (tmp_path / "out").glob("*/sweep-*/manifest.json"):
                try:
                    statuses = [p["status"] for p in json.loads(path.read_text())["points"]]
                except (OSError, ValueError):
                    continue
                if "completed" in statuses and "running" in statuses:
                    d = path.parent
            time.sleep(0.05)
        assert d is not None, "the sweep never got going"
        # The whole cluster dies: its worker first (so no task can still write after the sweep
        # has looked at the files), then the scheduler, which the sweep notices.
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        sched.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        for p in (proc, worker, sched):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert proc.returncode == 1, stderr
    line = assert_one_error(stderr)
    assert "lost the Dask scheduler" in line
    manifest = read_manifest(d)
    assert manifest["state"] != "running" and "lost the Dask scheduler" in manifest["error"]
    for mp in manifest["points"]:
        metrics = d / mp["run_dir"] / "metrics.json"
        on_disk = json.loads(metrics.read_text())["status"] if metrics.is_file() else None
        assert mp["status"] in ("completed", "interrupted"), mp
        if on_disk in ("completed", "diverged"):
            assert mp["status"] == on_disk  # never "failed" when its own files say it finished
    assert len(json.loads((d / "summary.json").read_text())) == 4
    done = {p: p.stat().st_mtime_ns for p in d.glob("runs/*/metrics.json")
            if json.loads(p.read_text())["status"] == "completed"}

    again = initlab.sweep(resume=d, workers=2)
    assert again.counts["completed"] == 4 and again.exit_code() == 0
    assert {p: p.stat().st_mtime_ns for p in done} == done  # nothing that had completed ran again
    assert len(list((d / "runs").iterdir())) == 4
    assert not Path(d / "manifest.jsonl").exists()
    assert os.path.isfile(d / "summary.csv")
