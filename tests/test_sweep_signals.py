"""A real `initlab sweep` process stopped by Ctrl-C, SIGTERM or kill -9, then resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import initlab
from initlab.output.readers import read_manifest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# Point 0 is short, the others take a second or more (10,000 steps: the watcher polls every 0.05 s
# and the manifest is flushed every 0.2 s, so points of 2,500 steps could end unseen). The costliest
# start first (initlab/sweeps/order.py): the signal arrives once point 4 or 3 has completed, while
# later ones run and point 0 (at least) waits. Five points on two workers: fewer than four would all
# start at once, sharing the cores (initlab/sweeps/local.py), and none would wait.
CONFIG = {
    "name": "sig",
    "data": {"kind": "teacher", "samples": 1000, "features": 50, "classes": 5, "eval_samples": 200},
    "model": {"depth": 4, "width": 50, "activation": "relu"},
    "optimizer": {"lr": 0.05},
    "train": {"batch_size": 50, "eval_every": 500},
    "record": {"samples": 200},
    "sweep": {"train.steps": [30, 10000, 10001, 10002, 10003]},
}


def start(tmp_path, new_session=False):
    cfg = tmp_path / "sig.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [sys.executable, "-m", "initlab", "sweep", str(cfg), "--workers", "2", "--out", str(tmp_path / "out"), "--json"]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def wait_until_running(tmp_path, proc, timeout=60):
    """The sweep directory once one point has completed and another is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in (tmp_path / "out").glob("*/sweep-*/manifest.json"):
            try:
                statuses = [p["status"] for p in json.loads(path.read_text())["points"]]
            except (OSError, ValueError):
                continue
            if "completed" in statuses and "running" in statuses:
                return path.parent
        time.sleep(0.05)
    raise AssertionError("the sweep never got going")


def children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def metrics_stamps(d):
    return {p: p.stat().st_mtime_ns for p in d.glob("runs/*/metrics.json")
            if json.loads(p.read_text())["status"] == "completed"}


@pytest.mark.parametrize("sig, group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_sweep_cleanly_and_resume_finishes_it(tmp_path, sig, group):
    proc = start(tmp_path, new_session=group)
    d = wait_until_running(tmp_path, proc)
    if group:  # Ctrl-C on a terminal reaches the whole foreground process group, workers included
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    out = json.loads(stdout)
    statuses = [p["status"] for p in out["points"]]
    assert "completed" in statuses and "interrupted" in statuses and "running" not in statuses
    assert set(statuses) <= {"completed", "interrupted"}
    manifest = read_manifest(d)
    assert manifest["state"] == "interrupted"
    for mp in manifest["points"]:
        if mp["status"] == "interrupted":
            assert "interrupted" in mp["exit_reason"]
    # the costliest points start first (initlab/sweeps/order.py): the shortest was still waiting (point 1
    # too, unless points 4 and 3 ended together and it started just before the signal)
    assert manifest["points"][0]["exit_reason"] == f"interrupted by {signal.Signals(sig).name} before it started"
    assert len(json.loads((d / "summary.json").read_text())) == 5
    done = metrics_stamps(d)
    assert len(done) == statuses.count("completed")

    again = initlab.sweep(resume=d, workers=2)
    assert again.counts["completed"] == 5 and again.exit_code() == 0
    assert {p: p.stat().st_mtime_ns for p in done} == done  # nothing that had completed ran again
    assert sorted(p.name for p in (d / "runs").iterdir()) == sorted(Path(p["run_dir"]).name for p in again.points)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_loses_nothing_and_runs_nothing_twice(tmp_path):
    proc = start(tmp_path)
    d = wait_until_running(tmp_path, proc)
    workers = children(proc.pid)
    assert workers
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "workers outlived the killed parent"

    done = metrics_stamps(d)
    assert done  # one point at least
    again = initlab.sweep(resume=d, workers=2)
    assert again.counts["completed"] == 5
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert len(list((d / "runs").iterdir())) == 5
    manifest = read_manifest(d)
    assert all(mp["status"] == "completed" for mp in manifest["points"])
    assert len(manifest["invocations"]) == 2
