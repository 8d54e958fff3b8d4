"""SIGINT / SIGTERM / SIGKILL against real processes: an interrupted run says so and keeps what it
had; a second Ctrl-C never cuts a result file in half; a killed sweep resumes to every point
completed exactly once."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import initlab
from initlab.cli import cli
from initlab.output.files import read_history, read_json

# Small and fast per step; the step count makes it "forever" — the signal always lands mid-training.
TINY = """\
data: {kind: teacher, samples: 200, features: 8, eval_samples: 100, classes: 3}
model: {depth: 2, width: 16, activation: relu}
init: {scheme: he_normal}
train: {steps: 5000000, batch_size: 16, eval_every: 500}
record: {samples: 100, bins: 10, every: 200}
"""
HEADER = "step,train_loss,grad_norm,eval_loss,eval_acc,train_acc"
needs_sweep = pytest.mark.skipif("sweep" not in cli.commands, reason="the sweep command is not registered")
STARTED: list = []


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """A failing test must not leave a five-million-step run behind."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def start(tmp_path, *args, ignore_sigint=False):
    (tmp_path / "tiny.yaml").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "INITLAB_DEBUG"}

    def child():  # what a shell does to a background job (`initlab run … &`)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "initlab", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=child if ignore_sigint else None)
    STARTED.append(proc)
    return proc


def wait_for(predicate, proc, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}) waiting for {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_dir_of(tmp_path, proc):
    return wait_for(lambda: next(iter(tmp_path.glob("outputs/tiny/2*/config.yaml")), None), proc, what="run dir").parent


def check_interrupted_run(run_dir: Path, every=200):
    m = read_json(run_dir / "metrics.json")
    assert m["status"] == "interrupted"
    done = m["steps_done"]
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == done + 1, "history flushed up to the last finished step"
    h = read_history(run_dir / "history.csv")
    assert list(h["step"]) == list(range(1, done + 1))
    with np.load(run_dir / "activations.npz") as z:
        steps = list(z["steps"])
    expected = list(range(0, done + 1, every))
    # (a signal during the snapshot after step `done` cancels that one snapshot)
    assert steps == expected or (done % every == 0 and steps == expected[:-1]), (steps, done)
    assert not list(run_dir.glob(".*tmp*")), "no temporary file left behind"
    return m


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_training_saves_partial_results(tmp_path, signum):
    proc = start(tmp_path, "run", "tiny.yaml", "--json")
    run_dir = run_dir_of(tmp_path, proc)
    time.sleep(0.5)  # into training
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    printed = json.loads(out)
    m = check_interrupted_run(run_dir)
    assert printed["status"] == "interrupted" and printed["steps_done"] == m["steps_done"]
    assert (run_dir / "activations.png").is_file()


def test_sigint_hammered_at_a_background_job(tmp_path):
    """A shell starts `initlab run … &` with SIGINT ignored: `kill -INT` must still stop it — and an
    impatient user's forty more must not cut a file in half: exit 130, every file whole."""
    proc = start(tmp_path, "run", "tiny.yaml", "-q", ignore_sigint=True)
    run_dir = run_dir_of(tmp_path, proc)
    time.sleep(0.5)
    for _ in range(40):
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    check_interrupted_run(run_dir)


# ---------------------------------------------------------------- in process: the exact moments


def _cfg(steps=30):
    return initlab.load_config({"data": {"kind": "teacher", "samples": 100, "features": 8, "eval_samples": 50},
                                "model": {"depth": 2, "width": 8}, "train": {"steps": steps, "eval_every": 10},
                                "record": {"samples": 50, "every": 10}})


def _ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


def test_second_ctrl_c_while_writing_is_held(tmp_path, monkeypatch):
    """Interrupted at step 15, Ctrl-C again while history.csv is written: all files complete, no exception."""
    import initlab.output.rundir as rundir

    real = rundir.write_history
    monkeypatch.setattr(rundir, "write_history", lambda *a, **k: (_ctrl_c(), real(*a, **k)))
    result = initlab.run(_cfg(), out=tmp_path, on_step=lambda step: step == 15 and _ctrl_c())
    assert result.status == "interrupted"
    m = check_interrupted_run(Path(result.run_dir), every=10)
    assert m["steps_done"] == 15


def test_ctrl_c_while_writing_a_finished_run(tmp_path, monkeypatch):
    """The run finished; Ctrl-C during the write: the files are completed first, then the interrupt."""
    import initlab.output.rundir as rundir

    real = rundir.write_history
    monkeypatch.setattr(rundir, "write_history", lambda *a, **k: (_ctrl_c(), real(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        initlab.run(_cfg(), out=tmp_path)
    [metrics] = list(tmp_path.glob("default/2*/metrics.json"))
    m = read_json(metrics)
    assert m["status"] == "completed" and m["steps_done"] == 30
    assert len(read_history(metrics.parent / "history.csv")["step"]) == 30


def test_ctrl_c_while_creating_the_run_dir(tmp_path, monkeypatch):
    """A signal while config.yaml is written waits for it, then interrupts before the first step."""
    import initlab.output.rundir as rundir

    real = rundir.atomic_write
    monkeypatch.setattr(rundir, "atomic_write", lambda *a, **k: (_ctrl_c(), real(*a, **k)))
    result = initlab.run(_cfg(), out=tmp_path)
    assert result.status == "interrupted" and result.metrics["steps_done"] == 0
    run_dir = Path(result.run_dir)
    assert (run_dir / "config.yaml").read_text().startswith("name: default")
    assert read_json(run_dir / "metrics.json")["status"] == "interrupted"


def test_handlers_are_restored_after_a_run(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    initlab.run(_cfg(steps=3), out=tmp_path)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---------------------------------------------------------------- sweeps


def manifest_of(tmp_path):
    path = next(iter(tmp_path.glob("outputs/tiny/sweep-*/manifest.json")), None)
    if path is None:
        return None
    try:
        return path.parent, json.loads(path.read_text())
    except ValueError:
        raise AssertionError(f"{path} was read half-written")


@needs_sweep
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_sweep_keeps_finished_points(tmp_path, signum):
    proc = start(tmp_path, "sweep", "tiny.yaml", "--set", "train.steps=10,5000000", "--workers", "2", "--json")

    def first_done_second_running():
        found = manifest_of(tmp_path)
        if found and [p["status"] for p in found[1]["points"]] == ["completed", "running"]:
            return found[0]
        return None

    sweep_dir = wait_for(first_done_second_running, proc, what="point 0 completed, point 1 running")
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    printed = json.loads(out)
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    statuses = [p["status"] for p in manifest["points"]]
    assert statuses == ["completed", "interrupted"], statuses
    assert [p["status"] for p in printed["points"]] == statuses
    assert read_json(sweep_dir / "runs" / Path(manifest["points"][0]["run_dir"]).name / "metrics.json")["status"] == "completed"
    check_interrupted_run(sweep_dir / manifest["points"][1]["run_dir"])
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [row["status"] for row in summary] == statuses


KILL_SWEEP = """\
data: {kind: teacher, samples: 200, features: 8, eval_samples: 100, classes: 3}
model: {depth: 2, width: 16, activation: relu}
init: {scheme: he_normal}
train: {steps: 8000, batch_size: 16, eval_every: 2000}
record: {samples: 100, bins: 10, every: 2000}
sweep: {seed: [0, 1, 2, 3, 4, 5, 6, 7]}
"""
# 8 points of ~0.4 s on 2 workers: long enough that a kill 0.2-1.2 s into each attempt lands at
# least twice (with 2,000 steps, once recording got cheaper, a resume could finish before its kill)


@needs_sweep
def test_kill_9_at_random_moments_then_resume(tmp_path):
    (tmp_path / "kill.yaml").write_text(KILL_SWEEP)
    env = {k: v for k, v in os.environ.items() if k != "INITLAB_DEBUG"}
    cmd = [sys.executable, "-m", "initlab", "sweep", "kill.yaml", "--workers", "2", "-q"]
    seed = int(os.environ.get("INITLAB_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)  # the kill moments; INITLAB_TEST_SEED=<seed> replays a failure
    sweep_dir = None
    kills = 0
    finished = {}  # run dir → (inode, text) of a metrics.json that said completed after some kill
    for attempt in range(4):
        args = cmd if sweep_dir is None else [*cmd[:4], "--resume", str(sweep_dir), *cmd[5:]]
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        STARTED.append(proc)
        if sweep_dir is None:
            sweep_dir = wait_for(lambda: next(iter(tmp_path.glob("outputs/kill/sweep-*/manifest.json")), None),
                                 proc, what="the sweep directory").parent
        time.sleep(rng.uniform(0.2, 1.2))
        if proc.poll() is not None:
            break
        proc.kill()  # SIGKILL: no handler runs, no cleanup
        proc.wait(timeout=30)
        kills += 1
        time.sleep(0.2)  # the workers die with their parent
        _assert_nothing_half_written(sweep_dir, seed)
        for metrics in sweep_dir.glob("runs/*/metrics.json"):
            if json.loads(metrics.read_text())["status"] == "completed":
                finished[metrics.parent.name] = (metrics.stat().st_ino, metrics.read_text())
    final = subprocess.run([*cmd[:4], "--resume", str(sweep_dir), *cmd[5:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, (seed, final.stderr)
    assert kills >= 2, "the test should have killed the sweep more than once"
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert [p["status"] for p in manifest["points"]] == ["completed"] * 8
    run_dirs = sorted(p.name for p in (sweep_dir / "runs").iterdir())
    assert len(run_dirs) == 8 and len({name.split("-")[0] for name in run_dirs}) == 8, run_dirs
    for p in manifest["points"]:
        m = read_json(sweep_dir / p["run_dir"] / "metrics.json")
        assert m["status"] == "completed" and m["seed"] == p["seed"] and m["steps_done"] == 8000
        assert len(read_history(sweep_dir / p["run_dir"] / "history.csv")["step"]) == 8000
    for name, (inode, text) in finished.items():  # completed once: never run again by a resume
        metrics = sweep_dir / "runs" / name / "metrics.json"
        assert (metrics.stat().st_ino, metrics.read_text()) == (inode, text), name
    summary = [row for row in json.loads((sweep_dir / "summary.json").read_text()) if not row.get("aggregate")]
    assert [row["index"] for row in summary] == list(range(8)) and {row["status"] for row in summary} == {"completed"}


def _assert_nothing_half_written(sweep_dir: Path, seed):
    """Whatever a reader finds is whole: every JSON parses, every completed run is complete."""
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert isinstance(manifest["points"], list)
    for metrics in sweep_dir.glob("runs/*/metrics.json"):
        m = json.loads(metrics.read_text())
        if m["status"] in ("completed", "diverged"):
            for name in ("config.yaml", "history.csv", "activations.npz"):
                assert (metrics.parent / name).is_file(), (seed, metrics.parent, name)
            assert len(read_history(metrics.parent / "history.csv")["step"]) == m["steps_done"], seed
            with np.load(metrics.parent / "activations.npz") as z:
                assert list(z["steps"])[-1] == m["steps_done"], seed
