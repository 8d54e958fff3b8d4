"""The JSON contract: with --json every command prints exactly one strict JSON object on stdout,
on success and on each class of error, and its keys are exactly those docs/FILES.md documents."""
import re
from pathlib import Path

import pytest

from initlab.cli import cli
from tests.conftest import CONFIGS, ROOT, has_mnist, strict_json

SMALL = ["--set", "data.samples=60", "--set", "data.eval_samples=20", "--set", "model.width=8",
         "--set", "model.depth=2", "--set", "record.samples=60"]
TRAIN = [*SMALL, "--set", "data.kind=teacher", "--set", "train.steps=4", "--set", "train.eval_every=2"]


def documented() -> dict[str, set[str]]:
    """``### heading`` → the backticked key names at the start of each ``- `key` …`` bullet below it."""
    text = (ROOT / "docs" / "FILES.md").read_text()
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            current = out.setdefault(line[4:].strip(), set())
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("- `"):
            head = line[2:].split(" — ")[0]
            current.update(re.findall(r"`([^`]+)`", head))
    return out


DOCS = documented()


def schema(name: str) -> set[str]:
    if name == "run":
        return DOCS["metrics.json"] | DOCS["run"]
    return DOCS[name]


def one_object(res) -> dict:
    """stdout is one JSON object and nothing else (strict: NaN and Infinity refused)."""
    obj = strict_json(res.stdout)
    assert isinstance(obj, dict), res.stdout
    assert obj["schema_version"] == 1
    return obj


def check_paths_absolute(obj, keys):
    for key in keys:
        value = obj[key]
        for v in value if isinstance(value, list) else [value]:
            assert v is None or Path(v).is_absolute(), (key, v)


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_the_documentation_has_every_object():
    for name in ("metrics.json", "final", "provenance.json", "manifest.json", "summary.json row", "error", "run",
                 "sweep", "validate", "list", "theory", "plot", "data mnist", "runs", "runs entry", "compare", "export tensorboard", "export mlflow"):
        assert DOCS.get(name), name


def test_run_forward_only(runner):
    res = invoke(runner, "run", "--json", *SMALL)
    assert res.exit_code == 0, res.output
    m = one_object(res)
    assert set(m) == schema("run")
    assert m["final"] == dict.fromkeys(DOCS["final"])  # forward only: every final metric null, none missing
    assert m["error"] is None and m["diverged_at_step"] is None
    assert m["exit_code"] == 0
    check_paths_absolute(m, ["run_dir"])
    on_disk = strict_json((Path(m["run_dir"]) / "metrics.json").read_text())
    assert set(on_disk) == DOCS["metrics.json"]
    assert set(strict_json((Path(m["run_dir"]) / "provenance.json").read_text())) == DOCS["provenance.json"]


def test_run_with_training_and_a_skipped_jacobian(runner, monkeypatch):
    import initlab.theory.measure

    # No Jacobian spectrum (as for a config where it is not computed): the key stays, as null.
    monkeypatch.setattr(initlab.theory.measure, "spectrum_for", lambda model, x: None)
    res = invoke(runner, "run", "--json", *TRAIN)
    assert res.exit_code == 0, res.output
    m = one_object(res)
    assert set(m) == schema("run")
    assert set(m["final"]) == DOCS["final"]
    assert m["final"]["train_loss"] is not None and m["steps_done"] == 4
    assert m["jacobian"] is None and not (Path(m["run_dir"]) / "jacobian.npz").exists()


def test_plain_run_prints_only_its_directory_on_stdout(runner):
    res = invoke(runner, "run", *SMALL)
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and Path(lines[0]).is_absolute() and (Path(lines[0]) / "metrics.json").is_file()
    assert lines[0] in res.stderr  # the human summary names it too, on stderr


def test_sweep(runner):
    res = invoke(runner, "sweep", "--json", "--workers", "1", "--std", "1,0.01", *SMALL)
    assert res.exit_code == 0, res.output
    s = one_object(res)
    assert set(s) == DOCS["sweep"]
    assert s["status"] == "completed" and s["exit_code"] == 0 and s["error"] is None
    check_paths_absolute(s, ["sweep_dir"])
    for p in s["points"]:
        assert set(p) == DOCS["summary.json row"]
        assert Path(p["run_dir"]).is_absolute() and (Path(p["run_dir"]) / "metrics.json").is_file()
    d = Path(s["sweep_dir"])
    assert set(strict_json((d / "manifest.json").read_text())) == DOCS["manifest.json"]
    for row in strict_json((d / "summary.json").read_text()):
        assert set(row) == DOCS["summary.json row"] and not Path(row["run_dir"]).is_absolute()
    assert strict_json((d / "provenance.json").read_text())["kind"] == "sweep"

    plain = invoke(runner, "sweep", "--workers", "1", "--std", "1", *SMALL)
    assert plain.exit_code == 0 and len(plain.stdout.splitlines()) == 1
    assert (Path(plain.stdout.strip()) / "manifest.json").is_file()


@pytest.mark.parametrize("args, name", [
    (["validate", "--json"], "validate"),
    (["list", "--json"], "list"),
    (["theory", "--json", str(CONFIGS / "tanh_xavier.yaml")], "theory"),
])
def test_info_commands(runner, args, name):
    res = invoke(runner, *args)
    assert res.exit_code == 0, res.output
    obj = one_object(res)
    assert set(obj) == DOCS[name]
    assert all(" " not in key for key in obj)


def test_plot(runner):
    run_dir = one_object(invoke(runner, "run", "--json", *SMALL))["run_dir"]
    res = invoke(runner, "plot", "--json", run_dir)
    assert res.exit_code == 0, res.output
    obj = one_object(res)
    assert set(obj) == DOCS["plot"]
    check_paths_absolute(obj, ["path", "written"])
    assert obj["written"] and all(Path(p).is_file() for p in obj["written"])


@pytest.mark.skipif(not has_mnist(), reason="needs MNIST already in INITLAB_DATA_DIR (no network in tests)")
def test_data_mnist_when_present(runner):
    res = invoke(runner, "data", "mnist", "--json")
    assert res.exit_code == 0, res.output
    obj = one_object(res)
    assert set(obj) == DOCS["data mnist"] and len(obj["files"]) == 4


ERRORS = {
    "unknown option": (["run", "--json", "--no-such-option"], 2),
    "bad config value": (["run", "--json", "--set", "model.depth=-1"], 2),
    "missing config file": (["validate", "--json", "no-such.yaml"], 2),
    "bad sweep axis": (["sweep", "--json", "--std", "1,banana"], 2),
    "not a run directory": (["plot", "--json", "."], 2),
    "output root is a file": (["run", "--json", "--out", "afile"], 1),
    "theory of a foreign directory": (["theory", "--json", "."], 2),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_class_of_error_is_one_error_object(runner, case):
    args, code = ERRORS[case]
    Path("afile").write_text("in the way")
    res = invoke(runner, *args)
    assert res.exit_code == code, res.output
    obj = one_object(res)
    assert set(obj) == DOCS["error"]
    assert obj["status"] == "error" and obj["exit_code"] == code
    assert res.stderr.startswith("Error: ") and obj["error"] in res.stderr
    assert "Traceback" not in res.output


def test_an_interrupted_command_is_an_error_object(runner, monkeypatch):
    import initlab.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(initlab.experiment, "run", interrupted)
    res = invoke(runner, "run", "--json", *SMALL)
    assert res.exit_code == 130
    obj = one_object(res)
    assert obj == {"status": "error", "error": "interrupted", "exit_code": 130, "schema_version": 1}


def test_a_failed_run_prints_its_metrics_once(runner, monkeypatch):
    """The run's own object (status failed, exit_code 1), not a second error object after it."""
    import initlab.experiment

    def broken(*args):
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(initlab.experiment, "_train", broken)
    res = invoke(runner, "run", "--json", *SMALL)
    assert res.exit_code == 1
    m = one_object(res)  # a second object would make this parse fail
    assert set(m) == schema("run")
    assert m["status"] == "failed" and m["exit_code"] == 1 and "the engine broke" in m["error"]


def test_seeds_add_one_aggregate_row_per_grid_point(runner):
    import csv
    import io
    import statistics

    res = invoke(runner, "sweep", "--json", "--workers", "1", "--std", "1,0.1", "--seeds", "3", *TRAIN)
    assert res.exit_code == 0, res.output
    d = Path(one_object(res)["sweep_dir"])
    rows = strict_json((d / "summary.json").read_text())
    points, aggregates = [r for r in rows if not r["aggregate"]], [r for r in rows if r["aggregate"]]
    assert len(points) == 6 and len(aggregates) == 2 and rows[-2:] == aggregates
    for agg in aggregates:
        assert set(agg) == DOCS["summary.json row"] and agg["index"] is None and agg["run_dir"] is None
        members = [p for p in points if p["overrides"]["init.std"] == agg["overrides"]["init.std"]]
        assert "seed" not in agg["overrides"] and agg["seed"] == [p["seed"] for p in members] == [0, 1, 2]
        losses = [p["final"]["train_loss"] for p in members]
        assert agg["final"]["train_loss"] == pytest.approx(statistics.mean(losses))
        assert agg["final"]["train_loss.std"] == pytest.approx(statistics.stdev(losses))
        assert agg["final"]["train_loss.n"] == 3
    table = list(csv.DictReader(io.StringIO((d / "summary.csv").read_text())))
    header = list(table[0])
    assert "config.init.std" in header and "layer1.act_std" in header and "final.train_loss.std" in header
    assert not [h for h in header if h.startswith("init")], "no unprefixed config or result columns"
    assert [r["aggregate"] for r in table] == ["false"] * 6 + ["true"] * 2
    assert table[-1]["seed"] == "0 1 2" and table[-1]["final.train_loss.n"] == "3"
