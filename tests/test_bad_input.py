"""Every bad input — config file or command line — is exit 2, one ``Error:`` line on stderr, no
traceback, and nothing written that looks like a result."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from initlab.cli import cli

LAUGHS = "".join(
    f"  {k}: &{k} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n"
    for p, k in zip([None, *"abcdefg"], "abcdefgh")
)
NESTED_MAPPING = "model:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(1, 60)) + "  " * 60 + "  1\n"

# id: (command line, config file text or bytes (None: no file), expected fragment of the message or None)
CASES = {
    # --- YAML and the shape of the document
    "yaml-syntax": (["run", "bad.yaml"], "model: {depth: 3\n", "YAML error"),
    "yaml-tab-indent": (["run", "bad.yaml"], "model:\n\tdepth: 3\n", "YAML error"),
    "yaml-two-documents": (["run", "bad.yaml"], "seed: 1\n---\nseed: 2\n", "YAML error"),
    "yaml-duplicate-key": (["run", "bad.yaml"], "model:\n  depth: 3\n  width: 10\n  depth: 4\n", "'depth' is given twice"),
    "top-level-list": (["run", "bad.yaml"], "- 1\n- 2\n", "mapping"),
    "top-level-scalar": (["run", "bad.yaml"], "42\n", "mapping"),
    "top-level-string": (["run", "bad.yaml"], "just some words\n", "mapping"),
    "non-utf8": (["run", "bad.yaml"], b"model: {depth: 3}\n# caf\xe9 \xff\xfe\n", "UTF-8"),
    "python-object-tag": (["run", "bad.yaml"], '!!python/object/apply:os.system ["touch pwned"]\n', "tag"),
    "python-name-tag": (["run", "bad.yaml"], "model: {activation: !!python/name:os.system ''}\n", "tag"),
    "deeply-nested-flow": (["run", "bad.yaml"], "[" * 100_000, "nested too deeply"),
    "deeply-nested-block": (["run", "bad.yaml"], NESTED_MAPPING, "nested too deeply"),
    "self-referencing-alias": (["run", "bad.yaml"], "sweep: {model.depth: &a [*a]}\n", "nested too deeply"),
    "billion-laughs": (["run", "bad.yaml"], "sweep:\n" + LAUGHS + "  model.depth: [*h]\n", "too many values"),
    "over-1MiB": (["run", "bad.yaml"], "# padding\n" * 110_000, "1 MiB"),
    "missing-file": (["run", "nope.yaml"], None, "nope.yaml"),
    "config-is-a-directory": (["validate", "."], None, None),
    # --- unknown keys at every level, misspelled names with the right suggestion
    "unknown-section": (["run", "bad.yaml"], "modle: {depth: 3}\n", "did you mean 'model'"),
    "unknown-top-key": (["run", "bad.yaml"], "sed: 3\n", "did you mean 'seed'"),
    "unknown-key-model": (["run", "bad.yaml"], "model: {dept: 3}\n", "did you mean 'depth'"),
    "unknown-key-data": (["run", "bad.yaml"], "data: {sample: 10}\n", "did you mean 'samples'"),
    "unknown-key-init": (["run", "bad.yaml"], "init: {sheme: he_normal}\n", "did you mean 'scheme'"),
    "unknown-key-train": (["run", "bad.yaml"], "train: {step: 10}\n", "did you mean 'steps'"),
    "unknown-key-record": (["run", "bad.yaml"], "record: {bin: 10}\n", "did you mean 'bins'"),
    "misspelled-scheme": (["run", "bad.yaml"], "init: {scheme: he_nomal}\n", "did you mean 'he_normal'"),
    "misspelled-activation": (["run", "bad.yaml"], "model: {activation: sigmiod}\n", "did you mean 'sigmoid'"),
    "misspelled-optimizer": (["run", "bad.yaml"], "optimizer: {name: adma}\n", "did you mean 'adam'"),
    "misspelled-data-kind": (["run", "bad.yaml"], "data: {kind: gausian}\n", "did you mean 'gaussian'"),
    # --- wrong types
    "string-for-int": (["run", "bad.yaml"], "model: {depth: three}\n", "model.depth"),
    "float-for-int": (["run", "bad.yaml"], "model: {depth: 2.5}\n", "model.depth"),
    "bool-for-int": (["run", "bad.yaml"], "train: {steps: true}\n", "train.steps"),
    "scalar-for-section": (["run", "bad.yaml"], "model: 5\n", "model: must be a mapping"),
    "list-for-bool": (["run", "bad.yaml"], "model: {batchnorm: [true]}\n", "model.batchnorm"),
    "width-list-wrong-length": (["run", "bad.yaml"], "model: {depth: 3, width: [10, 10]}\n", "model.width"),
    # --- numbers where they make no sense
    "zero-depth": (["run", "bad.yaml"], "model: {depth: 0}\n", "model.depth"),
    "negative-width": (["run", "bad.yaml"], "model: {width: -5}\n", "model.width"),
    "zero-lr": (["run", "bad.yaml"], "optimizer: {lr: 0}\n", "optimizer.lr"),
    # null sizes mean "all the images": MNIST only (a synthetic set has no "all"; found by hypothesis,
    # it used to end in "TypeError: unsupported operand")
    "null-samples-synthetic": (["run", "bad.yaml"], "data: {samples: null}\n", "applies to mnist only"),
    "null-eval-samples-synthetic": (["run", "bad.yaml"], "data: {eval_samples: null}\n", "applies to mnist only"),
    "nan-lr": (["run", "bad.yaml"], "optimizer: {lr: .nan}\n", "optimizer.lr"),
    "inf-std": (["run", "bad.yaml"], "init: {scheme: normal, std: .inf}\n", "init.std"),
    "negative-std": (["run", "bad.yaml"], "init: {scheme: normal, std: -0.01}\n", "init.std"),
    "zero-batch": (["run", "bad.yaml"], "train: {batch_size: 0}\n", "train.batch_size"),
    "zero-bins": (["run", "bad.yaml"], "record: {bins: 0}\n", "record.bins"),
    "nan-noise": (["run", "bad.yaml"], "data: {kind: regression, noise: .nan}\n", "data.noise"),
    "inverted-range": (["run", "bad.yaml"], "record: {range: [1, 0]}\n", "record.range"),
    "negative-seed-in-file": (["run", "bad.yaml"], "seed: -3\n", "seed"),
    "std-with-computed-scheme": (["run", "bad.yaml"], "init: {scheme: he_normal, std: 0.1}\n", "init.std"),
    "normal-without-std": (["run", "bad.yaml"], "init: {scheme: normal}\n", "init.std"),
    "name-with-slash": (["run", "bad.yaml"], "name: ../../etc\n", "name"),
    "name-with-newline": (["run", "bad.yaml"], 'name: "ok\\n"\n', "name"),
    # --- more memory than the machine has, refused before anything is allocated
    "memory-data": (["run", "--set", "data.samples=10000000", "--set", "data.features=1000000"], None, "memory"),
    "memory-params": (["run", "--set", "model.width=100000", "--set", "model.depth=1000"], None, "memory"),
    # --- the command line
    "set-without-equals": (["run", "--set", "model.depth"], None, "KEY=VALUE"),
    "set-unknown-path": (["run", "--set", "model.dpth=3"], None, "did you mean 'depth'"),
    "set-unknown-section": (["run", "--set", "modle.depth=3"], None, "did you mean 'model'"),
    "set-through-a-value": (["run", "--set", "model.depth.x=3"], None, "model.depth"),
    "set-bad-key-syntax": (["run", "--set", "model..depth=3"], None, "dotted key path"),
    "set-unparsable-value": (["run", "--set", "model.width=[1,2"], None, "--set model.width"),
    "set-nan": (["run", "--set", "optimizer.lr=.nan"], None, "optimizer.lr"),
    "seed-negative": (["run", "--seed", "-1"], None, "--seed"),
    "seed-not-a-number": (["run", "--seed", "abc"], None, "--seed"),
    "seed-too-big": (["run", "--seed", str(2**64)], None, "seed"),
    "unknown-option": (["run", "--bogus"], None, "--bogus"),
    "unknown-command": (["rnu"], None, None),
    "validate-bad-config": (["validate", "bad.yaml"], "model: {depth: -1}\n", "model.depth"),
    # --- sweeps: malformed lists and bad points (nothing starts)
    "sweep-empty-item": (["sweep", "--std", "1,,0.01"], None, "empty value"),
    "sweep-not-a-number": (["sweep", "--std", "abc,1"], None, "not a number"),
    "sweep-not-an-int": (["sweep", "--depth", "3,x"], None, "not an integer"),
    "sweep-unbalanced-bracket": (["sweep", "--set", "model.width=[1,2"], None, "cannot parse"),
    "sweep-set-without-equals": (["sweep", "--set", "model.depth"], None, "KEY="),
    "sweep-one-bad-point": (["sweep", "--depth", "3,-1"], None, "point 1"),
    "sweep-misspelled-value": (["sweep", "--activation", "relu,rleu"], None, "did you mean 'relu'"),
    "sweep-unknown-axis-key": (["sweep", "bad.yaml"], "sweep: {model.dpth: [1, 2]}\n", "did you mean 'depth'"),
    "sweep-axis-not-a-list": (["sweep", "bad.yaml"], "sweep: {model.depth: 3}\n", "sweep"),
    "sweep-workers-zero": (["sweep", "--std", "1,0.1", "--workers", "0"], None, "--workers"),
    "sweep-resume-missing": (["sweep", "--resume", "nothere"], None, "nothere"),
    "sweep-memory": (["sweep", "--std", "1,0.1", "--set", "data.samples=10000000",
                      "--set", "data.features=1000000"], None, "memory"),
}

XFAIL: dict = {}  # known bugs, kept visible: strict, so a fix turns them red until unmarked


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[case])] if case in XFAIL else []
        yield pytest.param(case, id=case, marks=marks)


@pytest.fixture
def runner(runner, monkeypatch):
    monkeypatch.delenv("INITLAB_MEMORY_LIMIT", raising=False)
    return runner


def _results_written(root: Path) -> list[Path]:
    names = {"metrics.json", "manifest.json", "summary.json", "summary.csv", "history.csv", "activations.npz"}
    return [p for p in root.rglob("*") if p.name in names or p.name.startswith("sweep-")]


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert sum(1 for args, _, _ in CASES.values() if args[0] == "sweep") >= 5


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_is_one_error_line_and_exit_2(runner, tmp_path, case):
    if CASES[case][0][0] == "sweep" and "sweep" not in cli.commands:
        pytest.skip("the sweep command is not registered")
    args, text, fragment = CASES[case]
    if text is not None:
        Path("bad.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    res = runner.invoke(cli, args, catch_exceptions=False)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines[0]) < 400, "the message should be one readable line"
    if fragment is not None:
        assert fragment in lines[0], lines[0]
    assert not _results_written(tmp_path), _results_written(tmp_path)
    assert not Path("outputs").exists()
    assert not Path("pwned").exists()


def test_memory_limit_is_overridable(runner, monkeypatch):
    """The limit comes from INITLAB_MEMORY_LIMIT when set: the default run (tens of MiB) is refused under 1 MiB."""
    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", "1M")
    res = runner.invoke(cli, ["run"], catch_exceptions=False)
    assert res.exit_code == 2 and res.stderr.startswith("Error: memory:") and "1.0 MiB" in res.stderr
    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", "lots")
    res = runner.invoke(cli, ["run"], catch_exceptions=False)
    assert res.exit_code == 2 and "INITLAB_MEMORY_LIMIT" in res.stderr
    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", "4G")
    res = runner.invoke(cli, ["validate", "--set", "data.samples=20"], catch_exceptions=False)
    assert res.exit_code == 0
    assert not Path("outputs").exists()


def test_memory_estimate_scales_with_the_config():
    from initlab.config import load_config
    from initlab.memory import check_memory, memory_estimate

    small = sum(memory_estimate(load_config({})).values())
    assert 1 << 20 < small < 1 << 30
    big = memory_estimate(load_config({"data": {"samples": 10**7, "features": 10**6}}))
    assert big["data"] > 10**13 * 4  # samples × features × 4 bytes at least
    wide = memory_estimate(load_config({"model": {"width": 10**5, "depth": 1000}}))
    assert wide["parameters"] > 10**13
    assert check_memory(load_config({}), limit=small) == small
    with pytest.raises(Exception, match="memory"):
        check_memory(load_config({}), limit=small - 1)


def test_library_run_refuses_before_allocating(tmp_path, monkeypatch):
    """initlab.run checks too: a ConfigError, and no run directory is created."""
    import initlab

    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", "1K")
    with pytest.raises(initlab.ConfigError, match="memory"):
        initlab.run({"seed": 1}, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


REAL_PROCESS = ["python-object-tag", "deeply-nested-flow", "memory-data"]


@pytest.mark.parametrize("case", REAL_PROCESS)
def test_bad_input_in_a_real_process(tmp_path, case):
    """The same through ``python -m initlab``: the real entry point, the real recursion limit."""
    args, text, fragment = CASES[case]
    if text is not None:
        (tmp_path / "bad.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    env = {k: v for k, v in os.environ.items() if k not in ("INITLAB_MEMORY_LIMIT", "INITLAB_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "initlab", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "pwned").exists()
