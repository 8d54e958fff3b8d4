"""Provenance: every run and sweep says how it was made, and that is enough to make it again bit for bit."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from initlab.output.files import read_npz
from initlab.provenance import collect, git_commit
from tests.conftest import CONFIGS, strict_json

ARGS = ["run", str(CONFIGS / "relu_he.yaml"), "--set", "model.depth=3", "--set", "model.width=16",
        "--set", "data.samples=80", "--set", "data.eval_samples=20", "--set", "record.samples=80",
        "--set", "train.steps=6", "--set", "train.eval_every=3", "--seed", "7"]


def initlab(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "initlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_run_is_remade_bit_for_bit_from_its_provenance(tmp_path):
    first = Path(initlab([*ARGS, "--out", "first"], tmp_path).stdout.strip())
    prov = strict_json((first / "provenance.json").read_text())
    assert prov["command"] == ["initlab", *ARGS, "--out", "first"]
    assert prov["config_path"] == str((CONFIGS / "relu_he.yaml").resolve())
    assert prov["overrides"] == [a for a, before in zip(ARGS[1:], ARGS) if before == "--set"]
    assert prov["seed"] == 7 and prov["kind"] == "run" and prov["axes"] is None
    assert prov["versions"]["numpy"] == np.__version__ and prov["versions"]["python"]
    assert prov["platform"]["system"] and isinstance(prov["blas"], list)

    # Re-make it from nothing but what the directory holds: the command line, in the recorded cwd.
    command = prov["command"][1:]
    command[command.index("--out") + 1] = "again"
    again = Path(initlab(command, prov["cwd"]).stdout.strip())
    assert again != first
    for name in ("history.csv", "config.yaml"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    a, b = read_npz(first / "activations.npz"), read_npz(again / "activations.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    assert ma["final"] == mb["final"] and ma["layers"] == mb["layers"]

    # And from the resolved config alone (the overrides are in it).
    third = Path(initlab(["run", str(first / "config.yaml"), "--out", "third"], tmp_path).stdout.strip())
    assert (third / "history.csv").read_bytes() == (first / "history.csv").read_bytes()


def test_git_commit_inside_and_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert git_commit() is None and collect()["git_commit"] is None
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    try:
        subprocess.run([*git, "init", "-q"], check=True, timeout=10)
        (tmp_path / "f").write_text("x")
        subprocess.run([*git, "add", "f"], check=True, timeout=10)
        subprocess.run([*git, "commit", "-q", "-m", "m"], check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return  # no git on this machine: the null case above is the whole test
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
    prov = collect()
    assert prov["git_commit"] == head and prov["git_dirty"] is False
    (tmp_path / "f").write_text("changed")
    assert collect()["git_dirty"] is True


def test_no_git_at_all_is_null(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to find
    assert git_commit() is None


def test_a_library_run_and_a_sweep_record_provenance(tmp_path):
    import initlab as lib

    small = {"data": {"samples": 40, "eval_samples": 10}, "model": {"width": 6, "depth": 1},
             "record": {"samples": 40}, "init": {"scheme": "normal", "std": 0.5}}
    res = lib.run(small, out=tmp_path)
    prov = strict_json((Path(res.run_dir) / "provenance.json").read_text())
    assert prov["kind"] == "run" and prov["config_path"] is None
    sw = lib.sweep(small, {"init.std": [1.0, 0.1]}, workers=1, out=tmp_path)
    sprov = strict_json((sw.sweep_dir / "provenance.json").read_text())
    assert sprov["kind"] == "sweep" and sprov["axes"] == {"init.std": [1.0, 0.1]}
