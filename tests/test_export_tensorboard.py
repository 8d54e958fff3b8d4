"""``initlab export tensorboard``, read back with TensorBoard's own reader (EventAccumulator).

Every check compares what TensorBoard loads with the run's own files, read here independently
(csv and numpy, not initlab's readers): histogram counts and edges per layer and snapshot, scalars
against history.csv, step numbers. Runs are small real runs (completed, forward-only, diverged,
interrupted, failed) and a real two-point sweep.
"""
import csv
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from initlab.cli import cli
from tests.conftest import export_fixture_runs, strict_json

BASE = {"data": {"kind": "teacher", "samples": 200, "features": 20, "eval_samples": 200},
        "model": {"depth": 3, "width": 16, "activation": "tanh"},
        "train": {"steps": 60, "eval_every": 20, "batch_size": 50}, "record": {"every": 20, "samples": 200}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return export_fixture_runs(tmp_path_factory.mktemp("tb-runs"), BASE, forward={"model": {"activation": "sigmoid"}, "train": {"steps": 0}})


@pytest.fixture
def fresh(runs, tmp_path):
    """Copies of the runs, so that each test starts without a tensorboard/ folder."""
    copies = {}
    for key, path in runs.items():
        copies[key] = tmp_path / key / path.name
        shutil.copytree(path, copies[key])
    return copies


def invoke(runner, *args):
    return runner.invoke(cli, ["export", "tensorboard", *map(str, args)])


def accumulator(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0,
                                                       "compressedHistograms": 0})
    acc.Reload()
    return acc


def history_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def file_digests(run_dir):
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and "tensorboard" not in p.relative_to(run_dir).parts}


def check_histograms(acc, arrays):
    """Every layer's activation and pre-activation histogram at every snapshot: the run's bins."""
    steps = [int(s) for s in arrays["steps"]]
    for kind, prefix in (("activations", "act"), ("preactivations", "preact")):
        counts, edges = arrays[f"{prefix}_counts"], arrays[f"{prefix}_edges"]
        for layer in range(counts.shape[1]):
            events = acc.Histograms(f"{kind}/{layer + 1}-layer")
            assert [e.step for e in events] == steps
            for s, event in enumerate(events):
                h = event.histogram_value
                c, e = counts[s, layer], edges[s, layer]
                assert list(h.bucket) == [float(x) for x in c]
                assert list(h.bucket_limit) == [float(x) for x in e[1:]]
                nz = np.flatnonzero(c)
                assert (h.min, h.max) == (float(e[nz[0]]), float(e[nz[-1] + 1]))
                assert h.num == c.sum()


def scalar_series(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_run_histograms_scalars_and_text_equal_the_run_files(runner, fresh):
    run = fresh["trained"]
    before = file_digests(run)
    result = invoke(runner, run)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "tensorboard")
    assert file_digests(run) == before  # the run's own files untouched; only tensorboard/ added
    acc = accumulator(run / "tensorboard")
    arrays = npz(run / "activations.npz")
    assert [int(s) for s in arrays["steps"]] == [0, 20, 40, 60]
    check_histograms(acc, arrays)

    rows = history_csv(run / "history.csv")
    for column, tag in (("train_loss", "loss/train"), ("grad_norm", "grad_norm/global"), ("eval_loss", "loss/eval"),
                        ("eval_acc", "accuracy/eval"), ("train_acc", "accuracy/train")):
        want = [(int(r["step"]), float(r[column])) for r in rows if r[column]]
        got = scalar_series(acc, tag)
        assert [s for s, _ in got] == [s for s, _ in want], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)  # float32 in the proto
    assert [s for s, _ in scalar_series(acc, "loss/train")] == list(range(1, 61))
    assert [s for s, _ in scalar_series(acc, "loss/eval")] == [20, 40, 60]

    for field, name in (("act_std", "activation_std"), ("saturated_frac", "saturated_frac"),
                        ("grad_norm", "weight_grad_norm"), ("preact_std", "preactivation_std")):
        for layer in range(3):
            got = scalar_series(acc, f"{name}/{layer + 1}-layer")
            assert [s for s, _ in got] == [0, 20, 40, 60]
            np.testing.assert_allclose([v for _, v in got], arrays[field][:, layer], rtol=1e-6)
    assert not any(t.startswith("dead_frac/") for t in acc.Tags()["scalars"])  # tanh: no dead units (null)

    config_text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    config_lines = (run / "config.yaml").read_text().rstrip("\n").splitlines()
    assert [line[4:] for line in config_text.splitlines()] == config_lines  # a markdown code block
    status = acc.Tensors("status")[0].tensor_proto.string_val[0].decode()
    assert "status: completed" in status


def test_exporting_twice_replaces_the_events(runner, fresh):
    run = fresh["trained"]
    assert invoke(runner, run).exit_code == 0
    assert invoke(runner, run).exit_code == 0
    files = [p.name for p in (run / "tensorboard").iterdir()]
    assert len(files) == 1 and files[0].startswith("events.out.tfevents."), files
    acc = accumulator(run / "tensorboard")
    assert [s for s, _ in scalar_series(acc, "loss/eval")] == [20, 40, 60]  # not twice


def test_forward_only_run_has_histograms_at_step_0(runner, fresh):
    run = fresh["forward"]
    assert invoke(runner, run).exit_code == 0
    acc = accumulator(run / "tensorboard")
    arrays = npz(run / "activations.npz")
    check_histograms(acc, arrays)
    # sigmoid's bins are fixed to [0, 1]; min/max hug the occupied bins so TensorBoard does not
    # stretch the outermost bar across the empty part of the range
    assert not any(t.startswith("loss/") for t in acc.Tags()["scalars"])
    assert scalar_series(acc, "saturated_frac/1-layer")[0][0] == 0


def test_sweep_gives_one_tensorboard_run_per_point_named_by_overrides(runner, fresh, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    sweep = fresh["sweep"]
    logdir = tmp_path / "tb"
    result = invoke(runner, sweep, "--logdir", logdir)
    assert result.exit_code == 0, result.output
    assert not (sweep / "tensorboard").exists()  # --logdir: nothing added to the sweep
    mux = EventMultiplexer(size_guidance={"histograms": 0, "scalars": 0})
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    points = json.loads((sweep / "manifest.json").read_text())["points"]
    names = [f"sw/{sweep.name}/{p['index']}-{p['label']}" for p in points]
    assert names == [f"sw/{sweep.name}/0-activation=tanh", f"sw/{sweep.name}/1-activation=relu"]
    assert sorted(mux.Runs()) == sorted(names)
    for name, point in zip(names, points):
        check_histograms(mux.GetAccumulator(name), npz(sweep / point["run_dir"] / "activations.npz"))
    # without --logdir, the sweep gets one tensorboard/ folder with a subfolder per point
    assert invoke(runner, sweep).exit_code == 0
    assert sorted(p.name for p in (sweep / "tensorboard").iterdir()) == ["0-activation=tanh", "1-activation=relu"]
    # --json: one strict object, every path absolute, one row per point
    as_json = invoke(runner, sweep, "--logdir", tmp_path / "tb-json", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = strict_json(as_json.stdout)["exported"]
    assert [Path(r["logdir"]).name for r in rows] == ["0-activation=tanh", "1-activation=relu"]
    assert all(Path(r[k]).is_absolute() for r in rows for k in ("run_dir", "logdir", "file"))
    assert all(Path(r["file"]).is_file() and r["status"] == "completed" for r in rows)


def test_diverged_failed_and_interrupted_runs_export_what_they_have(runner, fresh):
    for key, status in (("diverged", "diverged"), ("failed", "failed"), ("interrupted", "interrupted")):
        run = fresh[key]
        before = file_digests(run)
        result = invoke(runner, run)
        assert result.exit_code == 0, (key, result.output)
        assert file_digests(run) == before
        acc = accumulator(run / "tensorboard")
        status_text = acc.Tensors("status")[0].tensor_proto.string_val[0].decode()
        assert f"status: {status}" in status_text
        values = [e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values)
        if (run / "activations.npz").exists():
            check_histograms(acc, npz(run / "activations.npz"))
    acc = accumulator(fresh["diverged"] / "tensorboard")
    text = acc.Tensors("status")[0].tensor_proto.string_val[0].decode()
    assert "diverged_at_step: 3" in text
    assert [s for s, _ in scalar_series(acc, "loss/train")] == [1, 2]  # the finite steps; step 3 was not finite
    interrupted = accumulator(fresh["interrupted"] / "tensorboard")
    assert scalar_series(interrupted, "loss/train")[-1][0] == 30


def single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_half_written_run_is_refused_and_nothing_is_written(runner, fresh):
    result = invoke(runner, fresh["trained"], fresh["half"])
    assert result.exit_code == 2
    assert "incomplete run (no metrics.json" in single_error_line(result)
    assert not (fresh["trained"] / "tensorboard").exists()  # checked before the first run was written
    assert not (fresh["half"] / "tensorboard").exists()


def test_not_a_run_directory(runner, tmp_path):
    result = invoke(runner, tmp_path)
    assert result.exit_code == 2
    assert "not a run directory" in single_error_line(result)


def test_logdir_that_is_a_file(runner, fresh, tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = invoke(runner, fresh["trained"], "--logdir", target)
    assert result.exit_code == 1
    assert "exists and is not a directory" in single_error_line(result)
    assert target.read_text() == "x"


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into: chmod for a user; for root (CI), which ignores modes, the
    immutable attribute."""
    import os

    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        pytest.skip("running as root without a working chattr: no way to make a read-only folder")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


def test_read_only_logdir_is_one_error_line(runner, fresh, read_only_dir):
    result = invoke(runner, fresh["trained"], "--logdir", read_only_dir)
    assert result.exit_code == 1
    line = single_error_line(result)
    assert str(read_only_dir) in line and ("cannot" in line)
    assert list(read_only_dir.iterdir()) == []


def test_without_the_extra_one_error_line_naming_it(runner, fresh, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    result = invoke(runner, fresh["trained"])
    assert result.exit_code == 2
    assert "pip install 'initlab[tensorboard]'" in single_error_line(result)
    assert not (fresh["trained"] / "tensorboard").exists()


def test_import_and_help_load_neither_tensorboard_nor_mlflow():
    code = (
        "import sys\n"
        "import initlab, initlab.cli\n"
        "from click.testing import CliRunner\n"
        "for args in (['--help'], ['export', '--help'], ['export', 'tensorboard', '--help'],\n"
        "             ['export', 'mlflow', '--help']):\n"
        "    assert CliRunner().invoke(initlab.cli.cli, args).exit_code == 0, args\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'tensorboardX', 'mlflow')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _config_file(tmp_path, name="flagged"):
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": name}))
    return path


def test_run_and_sweep_with_tensorboard_flag(runner, tmp_path):
    result = runner.invoke(cli, ["run", str(_config_file(tmp_path)), "--out", "out", "--tensorboard"])
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip())  # stdout is still the run directory alone
    check_histograms(accumulator(run_dir / "tensorboard"), npz(run_dir / "activations.npz"))
    result = runner.invoke(cli, ["sweep", str(_config_file(tmp_path, "flagsweep")), "--std", "1,0.01",
                                 "--set", "train.steps=20", "--workers", "1", "--out", "out", "--tensorboard"])
    assert result.exit_code == 0, result.output
    [sweep] = (tmp_path / "out" / "flagsweep").glob("sweep-*")
    assert sorted(p.name for p in (sweep / "tensorboard").iterdir()) == ["0-std=1", "1-std=0.01"]


def test_flag_without_the_extra_fails_before_anything_runs(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = runner.invoke(cli, ["run", str(_config_file(tmp_path)), "--out", "out", "--tensorboard"])
    assert result.exit_code == 2
    assert "initlab[tensorboard]" in single_error_line(result)
    assert not (tmp_path / "out").exists()
