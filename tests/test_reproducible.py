"""The same config and seed give bit-identical results: run twice, re-run from the saved
config.yaml, inside a sweep with 1 or 2 workers, and after an interrupted sweep is resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import initlab
from initlab.cli import cli
from initlab.output.files import read_json, read_npz
from initlab.sweeps.manifest import apply_journal

CONFIG = """\
data: {kind: teacher, samples: 300, features: 12, eval_samples: 100, classes: 4}
model: {depth: 3, width: 24, activation: tanh}
init: {scheme: xavier_normal}
optimizer: {name: adam, lr: 0.003}
train: {steps: 1000, batch_size: 32, eval_every: 250, clip_norm: 5.0}
record: {samples: 150, bins: 12, every: 250}
"""
AXES = ["--set", "model.activation=tanh,relu", "--set", "init.scheme=xavier_normal,he_normal"]
VOLATILE = ("timing", "run_dir")  # wall-clock seconds and where the files went: everything else must match


def canonical(metrics: dict) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k not in VOLATILE}, sort_keys=True)


def same_run(a: Path, b: Path) -> None:
    """Bit-identical results: metrics (but timing), history.csv byte for byte, every snapshot array."""
    assert canonical(read_json(a / "metrics.json")) == canonical(read_json(b / "metrics.json"))
    assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()
    za, zb = read_npz(a / "activations.npz"), read_npz(b / "activations.npz")
    assert za.keys() == zb.keys()
    for k in za:
        assert za[k].dtype == zb[k].dtype and za[k].tobytes() == zb[k].tobytes(), k


def test_library_run_twice_is_identical():
    cfg = initlab.load_config({"model": {"depth": 2, "width": 16, "batchnorm": True}, "data": {"samples": 200},
                               "train": {"steps": 60, "eval_every": 20}, "record": {"every": 20}})
    a, b = initlab.run(cfg), initlab.run(cfg)
    assert canonical(a.metrics) == canonical(b.metrics)
    for k in a.history:
        assert a.history[k].tobytes() == b.history[k].tobytes(), k
    for sa, sb in zip(a.snapshots, b.snapshots, strict=True):
        assert all(sa.data[k].tobytes() == sb.data[k].tobytes() for k in sa.data)
    c = initlab.run(cfg.model_copy(update={"seed": 1}))
    assert canonical(a.metrics) != canonical(c.metrics), "the seed matters (the comparison can fail)"


def test_cli_run_twice_and_from_its_saved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("exp.yaml").write_text(CONFIG)
    runner = CliRunner()
    dirs = []
    for args in (["exp.yaml", "--seed", "7"], None):
        if args is None:  # again, from the saved resolved config: bit for bit the same
            args = [str(dirs[0] / "config.yaml")]
        res = runner.invoke(cli, ["run", *args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        dirs.append(Path(json.loads(res.stdout)["run_dir"]))
    assert len(set(dirs)) == 2
    same_run(dirs[0], dirs[1])
    assert read_json(dirs[1] / "metrics.json")["seed"] == 7


needs_sweep = pytest.mark.skipif("sweep" not in cli.commands, reason="the sweep command is not registered")


def sweep_cmd(tmp_path, *args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "INITLAB_DEBUG"}
    return [sys.executable, "-m", "initlab", "sweep", *args], dict(cwd=tmp_path, env=env, text=True, **kwargs)


def sweep(tmp_path, out, *args):
    cmd, kw = sweep_cmd(tmp_path, "exp.yaml", *AXES, "--out", out, "--json", *args)
    proc = subprocess.run(cmd, capture_output=True, timeout=180, **kw)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    sweep_dir = tmp_path / result["sweep_dir"]
    assert [p["status"] for p in result["points"]] == ["completed"] * 4
    return sweep_dir, [sweep_dir / p["run_dir"] for p in result["points"]]


@needs_sweep
def test_sweep_points_match_with_1_or_2_workers_and_after_resume(tmp_path):
    """Two workers, uninterrupted; one worker, interrupted after point 0 and resumed: the same numbers."""
    (tmp_path / "exp.yaml").write_text(CONFIG)
    _, two = sweep(tmp_path, "w2", "--workers", "2")

    # Interrupt a one-worker sweep once point 0 is done, then resume it.
    cmd, kw = sweep_cmd(tmp_path, "exp.yaml", *AXES, "--out", "resumed", "--workers", "1", "-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("resumed/*/sweep-*/manifest.json"))
            try:
                points = []
                if found:
                    manifest = json.loads(found[0].read_text())
                    apply_journal(found[0].parent, manifest)  # outcomes since the last manifest.json rewrite
                    points = manifest["points"]
            except ValueError:
                points = []
            if points and points[0]["status"] == "completed":
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, err
    sweep_dir = found[0].parent
    before = [p["status"] for p in json.loads((sweep_dir / "manifest.json").read_text())["points"]]
    assert before[0] == "completed" and "completed" in before and before != ["completed"] * 4, before
    resumed, one = sweep(tmp_path, "unused", "--resume", str(sweep_dir), "--workers", "1")
    assert resumed == sweep_dir

    for a, b in zip(one, two, strict=True):
        same_run(a, b)
    # And a point equals the same experiment run on its own from the point's saved config.
    res = CliRunner().invoke(cli, ["run", str(one[3] / "config.yaml"), "--out", str(tmp_path / "alone"), "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    same_run(one[3], Path(json.loads(res.stdout)["run_dir"]))
