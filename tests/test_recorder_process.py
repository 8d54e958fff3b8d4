"""Snapshots in a helper process: the same numbers as in the run's own process, bit for bit; nothing lost
when the helper dies; no helper outlives its run (real fork, real signals)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import initlab
import initlab.recorder_process
from initlab.experiment import build, train
from initlab.output.files import read_json
from initlab.recorder import FIELDS, Recorder
from initlab.recorder_process import SLOTS, BackgroundRecorder, worth_a_helper

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the helper process is forked")

BASE = {"data": {"kind": "teacher", "samples": 400, "features": 12},
        "model": {"depth": 3, "width": 24, "activation": "tanh"}, "train": {"steps": 60, "batch_size": 32},
        "record": {"every": 3, "samples": 300}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_same_snapshots(a, b):
    assert [s.step for s in a] == [s.step for s in b]
    for x, y in zip(a, b):
        assert set(x.data) == set(FIELDS)
        for k in FIELDS:
            np.testing.assert_array_equal(x.data[k], y.data[k], err_msg=f"step {x.step}: {k}")


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("grad_from", ["step", "probe"])
def test_a_run_records_the_same_numbers_with_or_without_the_helper(batchnorm, grad_from):
    cfg = {**BASE, "model": {**BASE["model"], "batchnorm": batchnorm}, "record": {**BASE["record"], "grad_from": grad_from}}
    helped, alone = train(cfg, record_helper=True), train(cfg, record_helper=False)
    assert helped.status == alone.status == "completed"
    assert len(helped.snapshots) == 21
    _assert_same_snapshots(helped.snapshots, alone.snapshots)
    for k in ("train_loss", "grad_norm"):
        np.testing.assert_array_equal(helped.history[k], alone.history[k])


def _model_and_recorders():
    cfg = initlab.load_config({**BASE, "model": {**BASE["model"], "batchnorm": True}})
    data, model, loss, *_ = build(cfg)
    x, y = data.x_train[:300], data.y_train[:300]
    return model, loss, data, BackgroundRecorder(x, y, loss, grad_from="probe"), Recorder(x, y, loss, grad_from="probe")


def _train_a_little(model, loss, data, k):
    i = 32 * k % 320
    xb, yb = data.x_train[i:i + 32], data.y_train[i:i + 32]
    loss.forward(model.forward(xb, train=True), yb)
    model.backward(loss.backward(), input_grad=False)
    for p in model.params():
        p.data -= 0.05 * p.grad


def test_the_helper_is_another_process_that_measures_while_the_run_trains():
    model, loss, data, bg, plain = _model_and_recorders()
    with bg:
        for k in range(2 * SLOTS + 3):  # more snapshots than slots: the oldest is waited for
            bg.snapshot(model, k)
            plain.snapshot(model, k)
            if k == 0:
                pid = bg._pid
                assert pid is not None and pid != os.getpid() and _alive(pid)
            _train_a_little(model, loss, data, k)
    assert bg._pid is None and bg._conn is None  # closed: the helper was told to stop and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    _assert_same_snapshots(bg.snapshots, plain.snapshots)


def test_a_helper_that_dies_loses_no_snapshot_and_leaves_the_weights_alone():
    model, loss, data, bg, plain = _model_and_recorders()
    for k in range(6):
        if k == 1:  # the helper stops answering: snapshots 1 and 2 stay in their slots...
            os.kill(bg._pid, signal.SIGSTOP)
        if k == 3:  # ...and it dies with them in flight: they are measured here, from the slots
            assert len(bg._waiting) >= 2
            os.kill(bg._pid, signal.SIGKILL)
        bg.snapshot(model, k)
        plain.snapshot(model, k)
        _train_a_little(model, loss, data, k)
    weights = [p.data.copy() for p in model.params()]
    bg.close()
    for p, w in zip(model.params(), weights):
        np.testing.assert_array_equal(p.data, w)
    _assert_same_snapshots(bg.snapshots, plain.snapshots)


def test_closing_never_waits_for_ever_on_a_helper_that_does_not_leave(monkeypatch):
    import time

    import initlab.recorder_process as rp

    model, loss, data, bg, plain = _model_and_recorders()
    bg.snapshot(model, 0)
    bg.collect()
    while bg._waiting:  # its answer is in: nothing in flight
        bg._receive_one()
    pid = bg._pid
    os.kill(pid, signal.SIGSTOP)  # it cannot read "stop" any more
    monkeypatch.setattr(rp, "REAP_S", 0.3)
    t = time.monotonic()
    bg.close()
    assert time.monotonic() - t < 5 and bg._pid is None
    with pytest.raises(ChildProcessError):  # killed and reaped: no zombie, no stray process
        os.waitpid(pid, os.WNOHANG)


def test_which_runs_get_a_helper(monkeypatch):
    """Runs whose snapshots are worth more than starting a process (the benchmark's), on two or more cores."""
    big = {"data": {"kind": "teacher", "samples": 2000, "features": 784},
           "model": {"depth": 5, "width": 100, "activation": "relu"}, "train": {"steps": 3000},
           "record": {"every": 100, "samples": 1000}}
    many = initlab.load_config(big)
    few = initlab.load_config({**big, "record": {"every": 1000, "samples": 1000}})  # 3 snapshots
    small = initlab.load_config(BASE)  # 20 snapshots of a 12-24-24-24 net: microseconds each
    none = initlab.load_config({**big, "record": {"every": None}})
    monkeypatch.delenv("INITLAB_RECORD_HELPER", raising=False)
    monkeypatch.setattr(initlab.recorder_process, "usable_cores", lambda: 2)
    assert [worth_a_helper(c) for c in (many, few, small, none)] == [True, False, False, False]
    monkeypatch.setattr(initlab.recorder_process, "usable_cores", lambda: 1)  # one core: nowhere to go
    assert not worth_a_helper(many)
    monkeypatch.setenv("INITLAB_RECORD_HELPER", "1")
    assert worth_a_helper(none)
    monkeypatch.setenv("INITLAB_RECORD_HELPER", "0")
    monkeypatch.setattr(initlab.recorder_process, "usable_cores", lambda: 2)
    assert not worth_a_helper(many)


# -- real processes and signals -----------------------------------------------------------------

LONG = """\
data: {kind: teacher, samples: 200, features: 8, classes: 3}
model: {depth: 2, width: 16, activation: relu}
train: {steps: 5000000, batch_size: 16, eval_every: 1000}
record: {samples: 100, bins: 10, every: 20}
"""


def _processes_of(run_dir_marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (the run and its forked helper share it)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if run_dir_marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _start(tmp_path):
    (tmp_path / "long.yaml").write_text(LONG)
    out = tmp_path / "out-helper-test"
    env = {k: v for k, v in os.environ.items() if k not in ("INITLAB_DEBUG", "INITLAB_RECORD_HELPER")}
    env["INITLAB_RECORD_HELPER"] = "1"
    # a session of its own: Ctrl-C is a SIGINT to the whole group, the run and its helper alike
    proc = subprocess.Popen([sys.executable, "-m", "initlab", "run", "long.yaml", "--out", str(out)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    marker = str(out)
    deadline = time.monotonic() + 60
    seen: set = set()
    while True:  # the helper the run forks at its first snapshot: a child that stays (a child that
        # runs git for the provenance shares the command line only until it execs)
        helpers = {pid for pid in _processes_of(marker) if pid != proc.pid}
        if helpers & seen:
            break
        seen = helpers
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no helper process appeared"
        time.sleep(0.3)
    time.sleep(0.5)  # well into training, with snapshots in flight
    return proc, out, marker


def _gone(marker, timeout=10.0):
    deadline = time.monotonic() + timeout
    while _processes_of(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _processes_of(marker)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds processes through /proc")
@pytest.mark.parametrize("how", ["ctrl-c to the group", "SIGTERM to the run"])
def test_a_signal_stops_the_run_with_every_snapshot_complete_and_no_helper_left(tmp_path, how):
    proc, out, marker = _start(tmp_path)
    try:
        if how == "ctrl-c to the group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_dir = next(out.glob("long/2*"))
    m = read_json(run_dir / "metrics.json")
    assert m["status"] == "interrupted" and m["steps_done"] > 0
    with np.load(run_dir / "activations.npz") as z:
        steps = z["steps"]
        assert len(steps) >= 2 and np.all(np.diff(steps) > 0)
        for k in ("act_mean", "act_std", "preact_std", "grad_norm"):
            assert np.all(np.isfinite(z[k])), k  # nothing half-measured
    assert _gone(marker), "a helper outlived its run"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds processes through /proc")
def test_the_helper_dies_with_a_killed_run(tmp_path):
    proc, out, marker = _start(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(marker), "the helper outlived a run killed with SIGKILL"
