"""The library as a notebook uses it: failures keep their exception, runtime states have their own
error class, and the CLI's --debug shows the cause of an error."""
import subprocess
import sys

import pytest

import initlab
from initlab.errors import ConfigError, InitlabError, RuntimeStateError

SMALL = {"data": {"kind": "teacher", "samples": 50, "eval_samples": 20, "features": 6},
         "model": {"depth": 2, "width": 8}, "train": {"steps": 3, "batch_size": 10}, "record": {"samples": 20}}


def test_a_failed_run_keeps_its_exception_for_the_notebook(monkeypatch):
    import initlab.experiment as experiment

    def broken_optimizer(*args, **kwargs):
        raise ZeroDivisionError("deliberately broken")

    monkeypatch.setattr(experiment, "make_optimizer", broken_optimizer)
    result = initlab.run(SMALL)
    assert result.status == "failed"
    assert result.error == "ZeroDivisionError: deliberately broken"
    assert isinstance(result.exception, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError, match="deliberately broken") as info:
        result.reraise()
    assert any(frame.name == "build" for frame in info.traceback)  # the original traceback, not a copy


def test_a_completed_run_has_nothing_to_reraise():
    result = initlab.run(SMALL)
    assert result.status == "completed" and result.exception is None
    result.reraise()


def test_train_writes_nothing_and_run_writes_the_same_numbers(tmp_path, monkeypatch):
    import numpy as np

    from initlab.experiment import train

    monkeypatch.chdir(tmp_path)
    in_memory = train(SMALL)
    assert list(tmp_path.iterdir()) == []
    written = initlab.run(SMALL, out=tmp_path / "out")
    assert np.array_equal(in_memory.history["train_loss"], written.history["train_loss"])
    assert in_memory.metrics["final"] == written.metrics["final"]


def test_a_held_sweep_lock_is_a_runtime_state_not_a_config_error(tmp_path):
    from initlab.sweeps.manifest import SweepLock

    first = SweepLock(tmp_path)
    try:
        with pytest.raises(RuntimeStateError, match="another initlab sweep is running") as info:
            SweepLock(tmp_path)
        assert not isinstance(info.value, ConfigError) and isinstance(info.value, InitlabError)
    finally:
        first.release()


def test_debug_shows_the_cause_of_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "initlab", "--debug", "validate", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "direct cause" in proc.stderr  # raise ... from e: the YAML parser's own error is kept
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")
    plain = subprocess.run([sys.executable, "-m", "initlab", "validate", str(bad)], capture_output=True, text=True,
                           timeout=60)
    assert "Traceback" not in plain.stderr and plain.stderr.startswith("Error: ")
