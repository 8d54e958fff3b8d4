"""`initlab sweep`: grid building, bad input, the sweep directory, failures, resume, figures."""
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

import initlab
from initlab.cli import cli
from initlab.output.files import read_history
from initlab.output.readers import read_manifest

# A few milliseconds per point: 2 hidden layers of 8 units on 200 teacher-labelled samples.
TINY = {
    "name": "tiny",
    "data": {"kind": "teacher", "samples": 200, "features": 10, "classes": 3, "eval_samples": 100},
    "model": {"depth": 2, "width": 8, "activation": "relu"},
    "optimizer": {"lr": 0.1},
    "train": {"steps": 20, "batch_size": 20, "eval_every": 10},
    "record": {"samples": 100},
}


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def finals(result):
    return [(p["index"], p["status"], p["final"]) for p in result.points]


# ---------------------------------------------------------------- lists and axes


@pytest.mark.parametrize("args", [
    ["--std", "1,,0.01"],
    ["--std", "abc"],
    ["--std", ""],
    ["--workers", "0"],
    ["--seeds", "0"],
    ["--set", "model.dept=2,3"],
    ["--set", "model.depth"],
    ["--init", "he_nomal,he_normal"],
    ["--resume", "nowhere"],
    ["--resume", "."],
    ["nope.yaml", "--std", "1,2"],
])
def test_usage_errors_print_one_line_exit_2_and_start_nothing(runner, args):
    res = invoke(runner, "sweep", *args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not Path("outputs").exists()


def test_missing_dask_names_the_extra(runner, tiny_yaml, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if it were not installed
    res = invoke(runner, "sweep", tiny_yaml, "--std", "1,0.1", "--scheduler", "tcp://127.0.0.1:8786")
    assert res.exit_code == 2
    assert res.stderr.strip() == "Error: --scheduler needs the optional extra: pip install 'initlab[distributed]'"
    assert not Path("outputs").exists()


# ---------------------------------------------------------------- a sweep end to end


def test_sweep_writes_the_contracted_directory(runner, tiny_yaml):
    res = invoke(runner, "sweep", tiny_yaml, "--std", "1,0.1", "--activation", "relu,tanh", "--workers", "2", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"sweep_dir", "counts", "points"}
    assert out["counts"]["completed"] == 4 and sum(out["counts"].values()) == 4
    d = Path(out["sweep_dir"])
    assert d.parent == Path("outputs/tiny").resolve() and d.name.startswith("sweep-")
    for name in ("manifest.json", "summary.csv", "summary.json", "sweep.png", "sweep.yaml"):
        assert (d / name).is_file(), name
    manifest = read_manifest(d)
    assert set(manifest) >= {"config_hash", "created", "points"}
    for mp in manifest["points"]:
        assert set(mp) >= {"index", "overrides", "seed", "status", "run_dir", "started", "finished", "error"}
        assert mp["status"] == "completed" and mp["error"] is None and mp["duration_s"] > 0
    rows = json.loads((d / "summary.json").read_text())
    assert rows == [{**p, "run_dir": str(Path(p["run_dir"]).relative_to(d))} for p in out["points"]]
    assert [r["run_dir"] for r in rows] == ["runs/0-std1_relu", "runs/1-std1_tanh", "runs/2-std0.1_relu", "runs/3-std0.1_tanh"]
    row = rows[2]
    assert row["overrides"] == {"init.scheme": "normal", "init.std": 0.1, "model.activation": "relu"}
    assert set(row["final"]) >= {"train_loss", "train_acc", "eval_loss", "eval_acc"}
    assert len(row["init_std"]) == 2 and row["seed"] == 0 and row["status"] == "completed"
    header = (d / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["index", "aggregate", "status", "seed", "config.init.scheme", "config.init.std",
                          "config.model.activation"]
    assert {"final.train_loss", "layer1.act_std", "layer2.act_std", "run_dir"} <= set(header)
    # the points' folders are ordinary run directories: `initlab run` on their config reproduces them
    run = d / row["run_dir"]
    for name in ("config.yaml", "metrics.json", "history.csv", "activations.npz"):
        assert (run / name).is_file(), name
    again = initlab.run(run / "config.yaml")
    assert again.metrics["final"] == row["final"]


def test_results_do_not_depend_on_the_worker_count(tmp_path):
    axes = {"init": [{"scheme": "normal", "std": s} for s in (1.0, 0.3, 0.1)], "model.activation": ["relu", "tanh"]}
    one = initlab.sweep(TINY, axes, out=tmp_path / "a", workers=1)
    two = initlab.sweep(TINY, axes, out=tmp_path / "b", workers=2)
    assert finals(one) == finals(two)


def test_library_api(tmp_path):
    import initlab.sweeps.runner  # noqa: F401  (the module shadows the lazy attribute: it must stay callable)

    res = initlab.sweep(TINY, {"model.depth": [2, 3]}, out=tmp_path, workers=1)
    assert res.counts["completed"] == 2 and res.exit_code() == 0 and res.stopped_by is None
    assert res.sweep_dir.is_dir() and len(res.points) == 2
    assert "completed" in repr(res)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "no-data"))  # MNIST is missing: that point fails
    raw = {k: v for k, v in TINY.items() if k != "data"}
    raw["data"] = {"samples": 200, "eval_samples": 100}
    Path("c.yaml").write_text(yaml.safe_dump(raw))
    res = invoke(runner, "sweep", "c.yaml", "--set", "data.kind=mnist,teacher", "--workers", "2")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1].startswith("Error: 1 point(s) failed; first: runs/0-mnist: MNIST file missing")
    d = next(Path("outputs").glob("*/sweep-*"))
    manifest = read_manifest(d)
    assert [p["status"] for p in manifest["points"]] == ["failed", "completed"]
    assert "MNIST file missing" in manifest["points"][0]["error"]
    rows = json.loads((d / "summary.json").read_text())
    assert rows[0]["status"] == "failed" and "MNIST" in rows[0]["error"]


def test_fail_fast_stops_at_the_first_failure(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "no-data"))
    raw = {k: v for k, v in TINY.items() if k != "data"}
    raw["data"] = {"samples": 200, "eval_samples": 100}
    Path("c.yaml").write_text(yaml.safe_dump(raw))
    res = invoke(runner, "sweep", "c.yaml", "--set", "data.kind=mnist,teacher,gaussian", "--workers", "1",
                 "--fail-fast", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert [p["status"] for p in out["points"]] == ["failed", "interrupted", "interrupted"]
    manifest = read_manifest(out["sweep_dir"])
    assert "--fail-fast" in manifest["points"][2]["exit_reason"]
    res = invoke(runner, "sweep", "--resume", out["sweep_dir"], "--json")  # still failing, the rest runs
    assert [p["status"] for p in json.loads(res.stdout)["points"]] == ["failed", "completed", "completed"]


def test_a_diverged_point_is_a_result_not_a_failure(runner):
    exploding = {"data": {"kind": "regression"}, "model": {"depth": 10, "width": 10, "activation": "relu"},
                 "init": {"scheme": "normal", "std": 10.0}, "optimizer": {"lr": 0.1}, "train": {"steps": 5}}
    Path("e.yaml").write_text(yaml.safe_dump(exploding))
    res = invoke(runner, "sweep", "e.yaml", "--set", "train.clip_norm=null,10", "--workers", "2", "--json")
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert [p["status"] for p in out["points"]] == ["diverged", "completed"]
    assert read_manifest(out["sweep_dir"])["points"][0]["exit_reason"] == "the loss became non-finite at step 2"
    res = invoke(runner, "sweep", "e.yaml", "--set", "train.clip_norm=null,10", "--fail-on-diverge")
    assert res.exit_code == 3


# ---------------------------------------------------------------- resume


def test_resume_trusts_metrics_json_over_the_manifest(tmp_path):
    """What kill -9 leaves behind: a manifest saying 'running' for a point that finished, and partial folders."""
    from initlab.output.files import write_json

    res = initlab.sweep(TINY, {"model.depth": [2, 3, 4]}, out=tmp_path, workers=1)
    d = res.sweep_dir
    manifest = read_manifest(d)
    manifest["points"][0]["status"] = "running"  # finished, but the parent died before recording it
    manifest["points"][1]["status"] = "running"  # died mid-run: only a partial folder
    manifest["points"][2]["status"] = "completed"  # said completed, but its folder was lost
    write_json(d / "manifest.json", manifest)
    runs = [d / p["run_dir"] for p in manifest["points"]]
    (runs[1] / "metrics.json").unlink()
    import shutil

    shutil.rmtree(runs[2])
    kept = (runs[0] / "metrics.json").stat().st_mtime_ns
    again = initlab.sweep(resume=d, workers=1)
    assert again.counts["completed"] == 3 and again.sweep_dir == d
    assert (runs[0] / "metrics.json").stat().st_mtime_ns == kept  # not re-run
    assert finals(again) == finals(res)
    assert len(manifest["points"]) == len(list((d / "runs").iterdir()))
    assert len(read_manifest(d)["invocations"]) == 2


def test_resume_of_a_finished_sweep_runs_nothing_and_rewrites_the_summary(runner, tiny_yaml):
    out = json.loads(invoke(runner, "sweep", tiny_yaml, "--depth", "2,3", "--json").stdout)
    d = Path(out["sweep_dir"])
    (d / "summary.csv").unlink()
    res = invoke(runner, "sweep", "--resume", d, "--json")
    assert res.exit_code == 0 and (d / "summary.csv").is_file()
    assert json.loads(res.stdout)["points"] == out["points"]


def test_resume_with_the_same_arguments_is_accepted_and_a_different_config_refused(runner, tiny_yaml):
    out = json.loads(invoke(runner, "sweep", tiny_yaml, "--depth", "2,3", "--json").stdout)
    assert invoke(runner, "sweep", tiny_yaml, "--depth", "2,3", "--resume", out["sweep_dir"]).exit_code == 0
    res = invoke(runner, "sweep", tiny_yaml, "--depth", "2,4", "--resume", out["sweep_dir"])
    assert res.exit_code == 2 and "belongs to a different config" in res.stderr
    res = invoke(runner, "sweep", tiny_yaml, "--depth", "2,3", "--seed", "1", "--resume", out["sweep_dir"])
    assert res.exit_code == 2


# ---------------------------------------------------------------- figures


def test_forward_only_sweep_draws_histogram_rows_and_plot_redraws_it(runner):
    from PIL import Image

    out = json.loads(invoke(runner, "sweep", "--std", "1,0.01", "--set", "data.samples=200", "--json").stdout)
    png = Path(out["sweep_dir"]) / "sweep.png"
    w, h = Image.open(png).size
    assert h > 250 and w > 2.2 * h  # two rows (points) of five panels (layers)
    png.unlink()
    res = invoke(runner, "plot", out["sweep_dir"])
    assert res.exit_code == 0 and png.is_file()


def test_training_sweep_overlays_the_loss_curves(tmp_path):
    from initlab.plots.sweep import plot_sweep

    res = initlab.sweep(TINY, {"model.activation": ["relu", "tanh", "sigmoid"]}, out=tmp_path, workers=2)
    png = res.sweep_dir / "sweep.png"
    assert png.is_file()
    assert plot_sweep(res.sweep_dir) == [png]
    for p in res.points:
        assert len(read_history(res.sweep_dir / p["run_dir"] / "history.csv")["step"]) == 20


def test_one_axis_by_a_boolean_axis_draws_small_multiples(tmp_path):
    from PIL import Image

    axes = {"init.std": [1.0, 0.3, 0.1, 0.03], "model.batchnorm": [False, True]}
    res = initlab.sweep(dict(TINY, init={"scheme": "normal"}), axes, out=tmp_path, workers=2)
    w, h = Image.open(res.sweep_dir / "sweep.png").size
    assert 0.7 < w / h < 1.3  # 2 × 2 panels, not the 2 × 2 overview of a training sweep (wider than tall)
    assert res.counts["completed"] + res.counts["diverged"] == 8


def test_per_point_figures_on_request(tmp_path):
    res = initlab.sweep(TINY, {"model.depth": [2, 3]}, out=tmp_path, workers=1, figures=True)
    run = res.sweep_dir / res.points[0]["run_dir"]
    assert (run / "activations.png").is_file() and (run / "loss.png").is_file()
    res = initlab.sweep(TINY, {"model.depth": [2, 3]}, out=tmp_path, workers=1)
    assert not list((res.sweep_dir / res.points[0]["run_dir"]).glob("*.png"))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux CPU affinity")
def test_default_worker_count_is_the_number_of_usable_cores():
    from initlab.sweeps.local import LocalBackend

    assert LocalBackend().size == len(os.sched_getaffinity(0))


def test_room_lets_a_short_sweep_share_the_cores():
    # More points than workers, fewer than twice as many: all start at once, none waits for a worker.
    from types import SimpleNamespace

    from initlab.sweeps.local import LocalBackend

    two = LocalBackend(2)
    assert [two.room(q) for q in (0, 1, 2, 3, 4, 5)] == [0, 1, 2, 3, 2, 2]
    two.dispatched = 2  # later in the sweep: one point per free worker
    two.workers = [SimpleNamespace(task=0), SimpleNamespace(task=None)]
    assert [two.room(q) for q in (1, 2, 3)] == [1, 1, 1]
    assert [LocalBackend(2, share_cores=False).room(q) for q in (1, 3)] == [1, 2]
    assert [LocalBackend(1).room(q) for q in (1, 2, 5)] == [1, 1, 1]  # --workers 1: one after another
    assert [LocalBackend(3).room(q) for q in (3, 4, 5, 6, 7)] == [3, 4, 5, 3, 3]


def workers_used(result) -> set:
    return {p["worker"] for p in read_manifest(result.sweep_dir)["points"]}


def test_three_points_on_two_workers_run_side_by_side_unless_memory_forbids(tmp_path, monkeypatch):
    from initlab.config import load_config
    from initlab.memory import memory_estimate

    axes = {"model.depth": [2, 3, 4]}
    shared = initlab.sweep(TINY, axes, out=tmp_path / "a", workers=2)
    assert len(workers_used(shared)) == 3 and shared.counts["completed"] == 3
    # Room for two points at once but not three: the sweep runs on two workers, it is not refused.
    biggest = sum(memory_estimate(load_config({**TINY, "model": {**TINY["model"], "depth": 4}})).values())
    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", str(int(2.5 * biggest)))
    apart = initlab.sweep(TINY, axes, out=tmp_path / "b", workers=2)
    assert len(workers_used(apart)) == 2 and apart.counts["completed"] == 3
    assert finals(shared) == finals(apart)


def test_the_costliest_points_start_first_and_keep_their_grid_places(tmp_path):
    from initlab.sweeps.order import costliest_first
    from initlab.sweeps.plan import make_plan

    axes = {"optimizer": [{"name": "sgd"}, {"name": "momentum"}, {"name": "adagrad"}, {"name": "adam"}]}
    plan = make_plan(TINY, axes)
    assert costliest_first(plan, [0, 1, 2, 3]) == [3, 2, 1, 0]  # Adam's update: 13 passes, SGD's 2
    assert costliest_first(make_plan(TINY, {"init.gain": [1.0, 0.1, 0.01]}), [0, 1, 2]) == [0, 1, 2]  # ties: grid order
    assert costliest_first(make_plan(TINY, {"train.steps": [10, 40, 20]}), [0, 1, 2]) == [1, 2, 0]
    lines = []
    res = initlab.sweep(TINY, axes, out=tmp_path, workers=1, log=lines.append)
    finished = [line.split("] ")[1].split(":")[0] for line in lines if line.startswith("[")]
    assert finished == ["3-adam", "2-adagrad", "1-momentum", "0-sgd"]
    assert [p["index"] for p in res.points] == [0, 1, 2, 3]  # the summary keeps the grid's order
