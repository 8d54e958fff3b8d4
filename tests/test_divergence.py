"""A net that overflows finishes as ``diverged``: history up to the last finite step, figures drawn,
NumPy warnings counted in metrics.json instead of printed, exit 0 (3 with --fail-on-diverge)."""
import math
import os
import subprocess
import sys
import warnings

import pytest
from conftest import strict_json

import initlab
from initlab.output.files import read_history

# ReLU, randn·10 weights, SGD lr 10: the loss overflows after a step or two.
EXPLODE = ["--set", "model.activation=relu", "--set", "init.scheme=normal", "--set", "init.std=10",
           "--set", "optimizer.lr=10", "--set", "train.steps=50", "--set", "data.samples=200",
           "--set", "train.eval_every=5", "--set", "record.every=1"]
# randn·1000 over 20 ReLU layers: the very first forward pass is already inf.
AT_ONCE = ["--set", "model.activation=relu", "--set", "init.scheme=normal", "--set", "init.std=1000",
           "--set", "model.depth=20", "--set", "train.steps=20", "--set", "data.samples=200"]


def initlab_cli(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("INITLAB_DEBUG", "PYTHONWARNINGS")}
    return subprocess.run([sys.executable, "-m", "initlab", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def invoke(tmp_path, monkeypatch, *args):
    """In process (faster); Click's runner captures sys.stderr, where a Python warning would go."""
    from click.testing import CliRunner

    from initlab.cli import cli

    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)




def test_divergence_is_recorded_not_spammed(tmp_path):
    proc = initlab_cli(tmp_path, "run", *EXPLODE, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"nothing on the terminal but progress/summary, got: {proc.stderr!r}"
    m = strict_json(proc.stdout)
    run_dir = tmp_path / m["run_dir"]
    assert m["status"] == "diverged"
    assert m["numpy_warnings"] > 0, "overflow warnings are counted in metrics"
    assert m["diverged_at_step"] == m["steps_done"] + 1 <= 50
    assert m["final"]["train_loss"] is None
    on_disk = strict_json((run_dir / "metrics.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["steps_done"] == m["steps_done"]
    h = read_history(run_dir / "history.csv")
    assert len(h["step"]) == m["steps_done"], "history ends at the last finite step"
    assert list(h["step"]) == list(range(1, m["steps_done"] + 1))
    assert all(math.isfinite(x) for x in h["train_loss"])
    for name in ("activations.png", "gradients.png", "loss.png", "activations.npz", "config.yaml"):
        assert (run_dir / name).is_file(), name


def test_fail_on_diverge_exits_3_and_still_records(tmp_path, monkeypatch):
    res = invoke(tmp_path, monkeypatch, "run", *EXPLODE, "--fail-on-diverge")
    assert res.exit_code == 3, res.stderr
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr
    [metrics] = list(tmp_path.glob("outputs/default/2*/metrics.json"))
    assert strict_json(metrics.read_text())["status"] == "diverged"


def test_fail_on_diverge_is_silent_when_nothing_diverges(tmp_path, monkeypatch):
    res = invoke(tmp_path, monkeypatch, "run", "--set", "train.steps=5", "--set", "data.samples=200",
                 "--fail-on-diverge", "-q")
    assert res.exit_code == 0 and res.stderr == "", res.stderr


def test_divergence_at_the_first_step(tmp_path, monkeypatch):
    """Nothing finite to show: an empty history (header only), and still the init figures."""
    res = invoke(tmp_path, monkeypatch, "run", *AT_ONCE, "--json")
    assert res.exit_code == 0 and res.stderr == "", res.stderr
    m = strict_json(res.stdout)
    assert m["status"] == "diverged" and m["steps_done"] == 0 and m["diverged_at_step"] == 1
    run_dir = tmp_path / m["run_dir"]
    assert (run_dir / "history.csv").read_text().splitlines() == ["step,train_loss,grad_norm,eval_loss,eval_acc,train_acc"]
    assert (run_dir / "activations.png").is_file() and (run_dir / "gradients.png").is_file()
    assert "NaN" not in (run_dir / "metrics.json").read_text() and "Infinity" not in (run_dir / "metrics.json").read_text()


def test_library_run_raises_no_warnings(capfd):
    cfg = initlab.load_config({"model": {"activation": "relu"}, "init": {"scheme": "normal", "std": 10},
                               "optimizer": {"lr": 10}, "train": {"steps": 30}, "data": {"samples": 200}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = initlab.run(cfg)
    assert result.status == "diverged"
    assert caught == []
    assert capfd.readouterr().err == ""
    assert result.metrics["numpy_warnings"] > 0
    assert len(result.history["step"]) == result.metrics["steps_done"]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_bounded_activations_on_regression_also_diverge_cleanly(tmp_path, monkeypatch, activation):
    res = invoke(tmp_path, monkeypatch, "run", "--set", f"model.activation={activation}", "--set", "data.kind=regression",
                 "--set", "init.scheme=normal", "--set", "init.std=10", "--set", "optimizer.lr=10",
                 "--set", "train.steps=100", "--json")
    assert res.exit_code == 0 and res.stderr == "", res.stderr
    m = strict_json(res.stdout)
    assert m["status"] == "diverged" and m["numpy_warnings"] > 0
