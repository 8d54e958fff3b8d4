"""Filesystem faults: an output root that is a file or not writable, a disk that fills up mid-run.
One ``Error:`` line naming the path, exit 1, the run directory (if any) marked ``failed`` — and
never a ``metrics.json`` that says ``completed`` for a run whose files are not all there."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import initlab.output.files
from initlab.cli import cli

TRAIN = ["--set", "train.steps=20", "--set", "data.samples=200", "--set", "train.eval_every=10"]


def one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def no_false_results(root: Path) -> None:
    for metrics in root.rglob("metrics.json"):
        assert json.loads(metrics.read_text())["status"] == "failed", metrics
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name], "temporary files left behind"


@pytest.mark.parametrize("out", ["afile", "afile/deeper"])
def test_output_root_is_a_file(runner, tmp_path, out):
    Path("afile").write_text("not a folder\n")
    res = runner.invoke(cli, ["run", "--out", out], catch_exceptions=False)
    assert res.exit_code == 1, res.stderr
    assert one_error_line(res) == "Error: afile: exists and is not a directory"
    assert Path("afile").read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_output_root_not_writable_simulated(runner, tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "locked" in self.parts:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    res = runner.invoke(cli, ["run", "--out", "locked"], catch_exceptions=False)
    assert res.exit_code == 1
    line = one_error_line(res)
    assert line.startswith("Error: locked") and "Permission denied" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_output_root_not_writable_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "initlab", "run", "--out", str(locked)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: {locked}") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert list(locked.iterdir()) == []


class DiskFull:
    """``open`` for initlab.output.files: writes to the matching files fail with ENOSPC (``times``: how many)."""

    def __init__(self, pattern: str, times: int | None = None):
        self.pattern, self.times, self.failed = pattern, times, []

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        target = Path(path).name  # ".<name>.tmp-<pid>-<tid>"
        if "w" in mode and Path(target.split(".tmp-")[0].lstrip(".")).match(self.pattern) and (
                self.times is None or len(self.failed) < self.times):
            self.failed.append(target)
            f.write = _enospc
        return f


def _enospc(*_):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("pattern", ["config.yaml", "history.csv", "activations.npz", "activations.png", "*"])
def test_disk_full_everywhere_after(runner, tmp_path, monkeypatch, pattern):
    """The disk fills at one file and stays full: exit 1, the path named, nothing claims success."""
    full = DiskFull(pattern)
    monkeypatch.setattr(initlab.output.files, "open", full, raising=False)
    res = runner.invoke(cli, ["run", *TRAIN], catch_exceptions=False)
    assert res.exit_code == 1, res.stderr
    line = one_error_line(res)
    failed_name = full.failed[0].split(".tmp-")[0].lstrip(".")
    assert line.endswith(f"{failed_name}: No space left on device"), line
    assert "outputs/default/" in line
    no_false_results(tmp_path)
    [run_dir] = list(tmp_path.glob("outputs/default/2*"))
    assert not (run_dir / "metrics.json").exists() or json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("pattern", ["config.yaml", "history.csv", "activations.npz", "loss.png", "metrics.json"])
def test_disk_full_once_leaves_the_run_marked_failed(runner, tmp_path, monkeypatch, pattern):
    """One write fails, then space frees up: metrics.json says failed, with the error naming the file."""
    monkeypatch.setattr(initlab.output.files, "open", DiskFull(pattern, times=1), raising=False)
    res = runner.invoke(cli, ["run", *TRAIN, "--json"], catch_exceptions=False)
    assert res.exit_code == 1, res.stderr
    line = one_error_line(res)
    assert line.endswith(f"{pattern}: No space left on device"), line
    [run_dir] = list(tmp_path.glob("outputs/default/2*"))
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].endswith(f"{pattern}: No space left on device")
    assert m["config_hash"] and m["seed"] == 0
    no_false_results(tmp_path)
    assert '"completed"' not in res.stdout


def test_library_raises_output_error_and_marks_the_run(tmp_path, monkeypatch):
    import initlab

    monkeypatch.setattr(initlab.output.files, "open", DiskFull("history.csv", times=1), raising=False)
    with pytest.raises(initlab.output.files.OutputError, match="history.csv: No space left on device"):
        initlab.run({"train": {"steps": 5}, "data": {"samples": 100}}, out=tmp_path)
    [metrics] = list(tmp_path.glob("default/2*/metrics.json"))
    assert json.loads(metrics.read_text())["status"] == "failed"


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    initlab.output.files.write_json(path, {"status": "completed", "n": 1})
    monkeypatch.setattr(initlab.output.files, "open", DiskFull("metrics.json"), raising=False)
    with pytest.raises(initlab.output.files.OutputError):
        initlab.output.files.write_json(path, {"status": "completed", "n": 2})
    assert json.loads(path.read_text()) == {"status": "completed", "n": 1}, "the old file is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.skipif("sweep" not in cli.commands, reason="the sweep command is not registered")
def test_sweep_output_root_is_a_file(runner):
    Path("afile").write_text("x")
    res = runner.invoke(cli, ["sweep", "--std", "1,0.1", "--out", "afile"], catch_exceptions=False)
    assert res.exit_code == 1 and "afile" in one_error_line(res)
