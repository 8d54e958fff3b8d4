"""The CLI end to end with Click's runner, in a temporary directory."""
import json
from pathlib import Path

import pytest
import yaml

from initlab.cli import cli
from tests.conftest import CONFIGS, has_mnist


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def run_dirs(root="outputs"):
    return [p for p in Path(root).glob("*/*") if p.is_dir() and not p.is_symlink()]


def bundled():
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        kind = (yaml.safe_load(path.read_text()) or {}).get("data", {}).get("kind")
        marks = [pytest.mark.skipif(not has_mnist(), reason="needs real MNIST")] if kind == "mnist" else []
        out.append(pytest.param(path, marks=marks, id=path.stem))
    return out


@pytest.mark.parametrize("path", bundled())
def test_every_bundled_config_runs(runner, path):
    raw = yaml.safe_load(path.read_text()) or {}
    extra = []
    if raw.get("train", {}).get("steps", 0) > 200 or raw.get("data", {}).get("kind") == "mnist":
        extra = ["--set", "train.steps=20", "--set", "data.samples=500", "--set", "train.eval_every=10"]
    res = invoke(runner, "run", str(path), "--json", *extra)
    assert res.exit_code == 0, res.stderr
    metrics = json.loads(res.stdout)
    assert metrics["status"] in ("completed", "diverged")
    run_dir = Path(metrics["run_dir"])
    assert run_dir.parent.name == path.stem
    for name in ("config.yaml", "metrics.json", "activations.npz", "activations.png", "gradients.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "history.csv").exists() == (metrics["steps_done"] > 0 or metrics["status"] == "diverged")


def test_default_run_writes_the_contracted_files(runner):
    res = invoke(runner, "run", "--json")
    assert res.exit_code == 0
    m = json.loads(res.stdout)
    assert set(["status", "initlab_version", "config_hash", "seed", "steps_done", "final", "layers", "timing"]) <= set(m)
    assert Path(m["run_dir"]).parent.name == "default"
    assert len(m["layers"]) == 5
    assert set(m["layers"][0]) >= {"mean", "std", "saturated_frac", "dead_frac", "preact_std", "grad_norm"}
    assert set(m["timing"]) >= {"total_s", "train_s", "record_s"}
    saved = yaml.safe_load((Path(m["run_dir"]) / "config.yaml").read_text())
    assert saved["model"]["activation"] == "sigmoid" and saved["init"]["scheme"] == "xavier_normal"


def test_training_run_history_columns(runner):
    res = invoke(runner, "run", "--json", "--set", "train.steps=25", "--set", "train.eval_every=10",
                 "--set", "data.kind=teacher")
    m = json.loads(res.stdout)
    lines = (Path(m["run_dir"]) / "history.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss,grad_norm,eval_loss,eval_acc,train_acc"
    assert len(lines) == 26
    assert lines[10].split(",")[3] != "" and lines[9].split(",")[3] == ""  # eval at step 10 only
    assert lines[25].split(",")[3] != ""  # and at the end
    assert (Path(m["run_dir"]) / "loss.png").is_file()
    assert set(m["final"]) >= {"train_loss", "train_acc", "eval_loss", "eval_acc"}


def test_two_runs_in_the_same_second_get_distinct_dirs(runner):
    a = json.loads(invoke(runner, "run", "--json").stdout)["run_dir"]
    b = json.loads(invoke(runner, "run", "--json").stdout)["run_dir"]
    assert a != b and Path(a).parent == Path(b).parent


def _command_paths(group, prefix=()):
    """Every command and sub-command Click knows, as argument lists (the group itself first)."""
    import click

    yield list(prefix)
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))
        else:
            yield [*prefix, name]


@pytest.mark.parametrize("path", list(_command_paths(cli)), ids=lambda p: " ".join(p) or "initlab")
def test_every_command_has_help_with_an_example(runner, path):
    res = invoke(runner, *path, "--help")
    assert res.exit_code == 0
    assert "Usage: " in res.output and "Options:" in res.output
    assert "Example" in res.output or path == []


def test_the_help_walk_sees_nested_commands():
    paths = [" ".join(p) for p in _command_paths(cli)]
    assert {"run", "sweep", "data", "data mnist", "theory"} <= set(paths)


def test_version(runner):
    res = invoke(runner, "--version")
    assert res.exit_code == 0 and "initlab" in res.output


def test_list_prints_every_registry(runner):
    from initlab.registry import registries

    res = invoke(runner, "list", "--json")
    listed = json.loads(res.stdout)
    assert listed.pop("schema_version") == 1
    schemes = listed.pop("schemes")  # name → formula and truncation convention, for every scheme
    assert set(schemes) == set(listed["init_schemes"]) and all(schemes.values())
    assert "not truncated" in schemes["he_normal"] and "VarianceScaling" in schemes["truncated_normal"]
    assert listed == {title.replace(" ", "_"): names for title, names in registries().items()}
    assert "he_normal" in invoke(runner, "list").stdout


def test_validate_prints_the_resolved_config(runner):
    res = invoke(runner, "validate", str(CONFIGS / "relu_he.yaml"), "--set", "model.depth=7")
    assert res.exit_code == 0
    text = res.stdout.split("\n", 1)[1]
    assert yaml.safe_load(text)["model"]["depth"] == 7


def test_plot_redraws_from_saved_files(runner):
    m = json.loads(invoke(runner, "run", "--json", "--set", "train.steps=5").stdout)
    png = Path(m["run_dir"]) / "activations.png"
    png.unlink()
    res = invoke(runner, "plot", m["run_dir"])
    assert res.exit_code == 0 and png.is_file()


BAD = {
    "missing file": (["run", "nope.yaml"], None),
    "yaml syntax": (["run", "bad.yaml"], "model: {depth: 3\n"),
    "top-level list": (["run", "bad.yaml"], "- 1\n- 2\n"),
    "top-level scalar": (["run", "bad.yaml"], "42\n"),
    "unknown key": (["run", "bad.yaml"], "model: {dept: 3}\n"),
    "unknown section": (["run", "bad.yaml"], "modle: {depth: 3}\n"),
    "unknown name": (["run", "bad.yaml"], "init: {scheme: he_nomal}\n"),
    "out of range": (["run", "bad.yaml"], "model: {depth: 0}\n"),
    "wrong type": (["run", "bad.yaml"], "model: {depth: three}\n"),
    "bad --set": (["run", "--set", "model.depth"], None),
    "--set unknown path": (["run", "--set", "model.dpth=3"], None),
    "--set bad value": (["run", "--set", "model.depth=-1"], None),
    "negative seed": (["run", "--seed", "-1"], None),
    "unknown option": (["run", "--bogus"], None),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_error_line_and_exit_2(runner, case):
    args, text = BAD[case]
    if text is not None:
        Path("bad.yaml").write_text(text)
    res = invoke(runner, *args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert not list(Path(".").glob("outputs/*/*/metrics.json"))


def test_unknown_name_suggests_the_right_one(runner):
    Path("bad.yaml").write_text("init: {scheme: he_nomal}\n")
    res = invoke(runner, "run", "bad.yaml")
    assert "init.scheme" in res.stderr and "did you mean 'he_normal'" in res.stderr


def test_registry_listing_matches_what_configs_accept():
    from initlab.config import INIT_SCHEMES
    from initlab.data.datasets import DATASETS
    from initlab.registry import registries

    regs = registries()
    assert regs["init schemes"] == list(INIT_SCHEMES)
    assert sorted(regs["data kinds"]) == sorted(DATASETS)


def test_data_mnist_unreachable_mirror_is_one_error_line(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "data"))
    res = invoke(runner, "data", "mnist", "--url", "http://127.0.0.1:9/")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "127.0.0.1" in lines[0]
    assert not list((tmp_path / "data").rglob("*.gz"))


def test_missing_mnist_names_the_fixing_command(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "empty"))
    res = invoke(runner, "run", "--set", "data.kind=mnist", "--set", "model.width=10")
    assert res.exit_code == 1
    assert "initlab data mnist" in res.stderr and res.stderr.startswith("Error:")


def test_the_console_command_ends_deaf_to_signals_and_freezes_the_heap(monkeypatch, capsys):
    # The installed `initlab` is cli.main(), then SIGINT/SIGTERM ignored and gc.freeze(), whatever the
    # exit code; `cli.main` alone (what tests and notebooks call) must not freeze a process that lives on.
    import gc
    import signal

    import initlab.cli as cli_module

    assert 'initlab = "initlab.cli:main"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for argv, code in ((["initlab", "--version"], 0), (["initlab", "run", "--set", "nonsense=1"], 2)):
            monkeypatch.setattr("sys.argv", argv)
            with pytest.raises(SystemExit) as exc:
                cli_module.main()
            assert exc.value.code == code
            # a late Ctrl-C or SIGTERM cannot turn the decided exit code into a death by signal
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in saved)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert frozen == [True, True]
    assert "unknown key 'nonsense'" in capsys.readouterr().err
    frozen.clear()
    CliRunner = pytest.importorskip("click.testing").CliRunner
    assert CliRunner().invoke(cli, ["--version"]).exit_code == 0
    assert frozen == []
