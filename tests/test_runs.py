"""``initlab runs`` on a synthetic tree (every status, half-written and unreadable entries), and the
``latest`` link under concurrent runs of one name."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from initlab.cli import cli
from initlab.listing import parse_since, scan, select
from tests.conftest import strict_json


def metrics(status, steps=10, train_loss=0.5, eval_acc=0.9, name="net"):
    final = {"train_loss": train_loss, "train_acc": None, "eval_loss": None, "eval_acc": eval_acc,
             "train_loss_window": 1}
    return {"status": status, "initlab_version": "0.1.0", "config_hash": "x", "name": name, "seed": 0,
            "steps_done": steps, "final": final, "layers": [], "timing": {}, "schema_version": 1}


def make_run(root, name, stamp, m=None, overrides=(), config=True, raw_metrics=None):
    d = Path(root) / name / stamp
    d.mkdir(parents=True)
    if config:
        (d / "config.yaml").write_text(f"name: {name}\n")
    if m is not None:
        (d / "metrics.json").write_text(json.dumps(m))
    if raw_metrics is not None:
        (d / "metrics.json").write_text(raw_metrics)
    (d / "provenance.json").write_text(json.dumps({"overrides": list(overrides), "seed": None}))
    return d


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "outputs"
    make_run(root, "xavier", "2026-01-01_10-00-00", metrics("completed", 100, 0.30, 0.91), ["model.depth=5"])
    make_run(root, "xavier", "2026-01-01_10-00-00-1", metrics("completed", 100, 0.20, 0.95), ["model.depth=10"])
    make_run(root, "xavier", "2026-01-02_09-00-00", metrics("diverged", 7, None, None))
    make_run(root, "he", "2026-01-03_12-00-00", metrics("failed", 0, None, None))
    make_run(root, "he", "2026-01-03_12-30-00", metrics("interrupted", 42, 0.7, 0.5))
    make_run(root, "he", "2026-01-04_08-00-00")  # half-written: config, no metrics.json
    make_run(root, "he", "2026-01-04_09-00-00", raw_metrics='{"status": "compl')  # cut in half: unreadable
    make_run(root, "he", "2026-01-04_10-00-00", raw_metrics="[1, 2]")  # not an object: unreadable
    make_run(root, "odd", "2026-01-05_00-00-00", config=False)  # no config.yaml: not a run
    sweep = root / "xavier" / "sweep-2026-01-02_11-00-00"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "config_hash": "h", "name": "xavier", "axes": [{"key": "init.std", "values": [1, 0.01]}],
        "points": [{"index": 0, "status": "completed", "run_dir": "runs/0"},
                   {"index": 1, "status": "failed", "run_dir": "runs/1"}]}))
    os.symlink("2026-01-01_10-00-00-1", root / "xavier" / "latest")
    (root / "xavier" / "notes.txt").write_text("not a run")
    (root / "compare" / "2026-01-06_00-00-00").mkdir(parents=True)  # compare output: not listed
    (root / "compare" / "2026-01-06_00-00-00" / "compare.json").write_text("{}")
    return root


def test_scan_lists_every_status_and_skips_unreadable_entries(tree):
    entries, skipped = scan(tree)
    got = {(e.name, e.path.name, e.kind): e.status for e in entries}
    assert got == {
        ("xavier", "2026-01-01_10-00-00", "run"): "completed",
        ("xavier", "2026-01-01_10-00-00-1", "run"): "completed",  # two runs of one second: both listed
        ("xavier", "2026-01-02_09-00-00", "run"): "diverged",
        ("he", "2026-01-03_12-00-00", "run"): "failed",
        ("he", "2026-01-03_12-30-00", "run"): "interrupted",
        ("he", "2026-01-04_08-00-00", "run"): "incomplete",
        ("xavier", "sweep-2026-01-02_11-00-00", "sweep"): "failed",
    }
    assert len(entries) == 7
    assert [e.stamp for e in entries][:2] == ["2026-01-04_08-00-00", "2026-01-03_12-30-00"]  # newest first
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"2026-01-04_09-00-00", "2026-01-04_10-00-00", "2026-01-05_00-00-00"}
    assert "metrics.json" in reasons["2026-01-04_09-00-00"] and "no config.yaml" in reasons["2026-01-05_00-00-00"]
    latest = [e for e in entries if e.latest]
    assert len(latest) == 1 and latest[0].path.name == "2026-01-01_10-00-00-1"
    sweep = next(e for e in entries if e.kind == "sweep")
    assert sweep.steps == 2 and sweep.overrides == ["init.std=1,0.01"]
    assert next(e for e in entries if e.path.name.endswith("-1")).overrides == ["model.depth=10"]


def test_filters_sort_and_limit(tree):
    entries, _ = scan(tree)
    assert {e.status for e in select(entries, name="he")} == {"failed", "interrupted", "incomplete"}
    assert {e.name for e in select(entries, name="x*")} == {"xavier"}
    assert [e.status for e in select(entries, status="failed,diverged")] == ["failed", "failed", "diverged"]
    assert select(entries, kind="sweep")[0].kind == "sweep" and len(select(entries, kind="sweep")) == 1
    by_loss = select(entries, sort="train_loss")
    assert [e.final["train_loss"] for e in by_loss[:3]] == [0.20, 0.30, 0.7]
    assert by_loss[-1].final["train_loss"] is None  # missing values last
    assert [e.final["eval_acc"] for e in select(entries, sort="eval_acc", reverse=True)[:2]] == [0.95, 0.91]
    assert [e.stamp for e in select(entries, reverse=True, limit=2)] == ["2026-01-01_10-00-00"] * 2
    assert len(select(entries, limit=3)) == 3
    since = parse_since("2026-01-03")
    assert {e.stamp[:10] for e in select(entries, since=since)} == {"2026-01-03", "2026-01-04"}
    from datetime import datetime

    assert parse_since("2h", now=datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 10)


def test_the_command(runner, tree):
    res = runner.invoke(cli, ["runs", str(tree)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "stamp", "kind", "status"] and len(lines) == 8
    assert any(line.startswith("xavier*") for line in lines)
    assert res.stderr.count("skipped ") == 3
    res = runner.invoke(cli, ["runs", str(tree), "--json", "--status", "completed", "--sort", "train_loss"])
    obj = strict_json(res.stdout)
    assert [r["final"]["train_loss"] for r in obj["runs"]] == [0.20, 0.30]
    assert all(Path(r["path"]).is_absolute() for r in obj["runs"]) and len(obj["skipped"]) == 3
    from tests.test_json_contract import DOCS

    assert set(obj) == DOCS["runs"] and all(set(r) == DOCS["runs entry"] for r in obj["runs"])


def test_empty_and_missing_roots(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(cli, ["runs", str(tmp_path / "empty")])
    assert res.exit_code == 0 and res.stdout == "" and "no runs" in res.stderr
    res = runner.invoke(cli, ["runs", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and "no such output directory" in res.stderr
    res = runner.invoke(cli, ["runs", str(tmp_path / "missing"), "--json"])
    assert strict_json(res.stdout)["status"] == "error" and res.exit_code == 2
    res = runner.invoke(cli, ["runs", str(tmp_path / "empty"), "--since", "yesterday"])
    assert res.exit_code == 2 and "--since" in res.stderr


# ------------------------------------------------------------------------------------------ latest

SMALL = ["--set", "data.samples=50", "--set", "data.eval_samples=20", "--set", "model.width=10",
         "--set", "model.depth=1", "--set", "record.samples=50"]


def test_latest_always_points_at_a_complete_run(tmp_path):
    """Four runs of one name at once, `latest` watched throughout: whenever it exists it names a
    directory whose metrics.json is there, and at the end it is one of the four."""
    procs = [subprocess.Popen([sys.executable, "-m", "initlab", "run", "--seed", str(s), "--out", "o", *SMALL],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in range(4)]
    link = tmp_path / "o" / "default" / "latest"
    seen = set()
    while any(p.poll() is None for p in procs):
        if link.is_symlink():
            target = link.resolve()
            assert (target / "metrics.json").is_file(), f"latest -> {target} before it was complete"
            seen.add(target.name)
        time.sleep(0.005)
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    made = {Path(o[0].strip()).name for o in outs}
    assert len(made) == 4 and seen <= made
    assert os.readlink(link) in made and not Path(os.readlink(link)).is_absolute()
    assert not list(link.parent.glob(".latest.tmp-*"))


def test_latest_is_accepted_where_a_run_or_sweep_is(runner):
    import initlab

    run_dir = Path(runner.invoke(cli, ["run", *SMALL]).stdout.strip())
    latest = Path("outputs/default/latest")
    assert latest.resolve() == run_dir
    assert runner.invoke(cli, ["plot", str(latest)]).exit_code == 0
    assert initlab.load_run(latest).path == run_dir
    res = runner.invoke(cli, ["theory", "--json", str(latest)])
    assert res.exit_code == 0, res.output
    sweep_dir = Path(runner.invoke(cli, ["sweep", "--workers", "1", "--std", "1,0.1", *SMALL]).stdout.strip())
    assert latest.resolve() == sweep_dir
    assert initlab.load_sweep(latest).path == sweep_dir
    res = runner.invoke(cli, ["sweep", "--resume", str(latest)])
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------------------------------ load_run


def test_load_run_and_load_sweep_read_back_what_was_written(tmp_path, monkeypatch):
    import sys

    import numpy as np

    import initlab

    small = {"data": {"samples": 40, "eval_samples": 10}, "model": {"width": 6, "depth": 2}, "record": {"samples": 40}}
    res = initlab.run(small, out=tmp_path, figures=False)
    run = initlab.load_run(tmp_path / "default" / "latest")
    assert run.path == Path(res.run_dir).resolve() and run.status == "completed" and run.depth == 2
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    assert set(run.history) >= {"step", "train_loss", "grad_norm"} and len(run.history["step"]) == 0  # forward only
    assert np.array_equal(run.snapshots["act_std"][0], [layer["std"] for layer in res.metrics["layers"]])
    assert run.provenance["kind"] == "run" and run.config["model"]["depth"] == 2
    frames = run.to_pandas()
    assert list(frames["layers"]["layer"]) == [1, 2] and "act_std" in frames["layers"]
    assert sorted(run.figures("activations")) == ["activations"] and run.plot_loss() is None
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        run.to_pandas()


def test_load_run_refuses_what_is_not_a_finished_run(tmp_path):
    import initlab

    (tmp_path / "foreign").mkdir()
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("name: x\n")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "manifest.json").write_text(json.dumps({"config_hash": "h", "points": []}))
    for path, message in ((tmp_path / "foreign", "not an initlab run directory"), (half, "incomplete run"),
                          (sweep, "a sweep directory"), (tmp_path / "nowhere", "no such directory")):
        with pytest.raises(initlab.ConfigError, match=message):
            initlab.load_run(path)
    with pytest.raises(initlab.ConfigError, match="not a sweep directory"):
        initlab.load_sweep(tmp_path / "foreign")


def test_a_sweep_read_back_never_follows_a_manifest_out_of_its_folder(tmp_path):
    import initlab

    small = {"data": {"samples": 40, "eval_samples": 10}, "model": {"width": 6, "depth": 2}, "record": {"samples": 40}}
    outside = Path(initlab.run(small, out=tmp_path / "elsewhere", figures=False).run_dir)
    res = initlab.sweep(small, {"model.depth": [1, 2]}, out=tmp_path / "o", workers=1)
    manifest = json.loads((res.sweep_dir / "manifest.json").read_text())
    manifest["points"][1]["run_dir"] = str(Path("..") / ".." / ".." / outside.relative_to(tmp_path))
    assert (res.sweep_dir / manifest["points"][1]["run_dir"] / "metrics.json").is_file()  # a real run, elsewhere
    (res.sweep_dir / "manifest.json").write_text(json.dumps(manifest))
    runs = initlab.load_sweep(res.sweep_dir).runs()
    assert [r.path for r in runs] == [(res.sweep_dir / manifest["points"][0]["run_dir"]).resolve()]
