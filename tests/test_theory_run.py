"""Theory beside measurement in runs, the `theory` command and the bundled theory configs."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import initlab
from initlab.cli import cli
from tests.conftest import CONFIGS


def cfg(name, *overrides):
    return initlab.load_config(CONFIGS / name, overrides=list(overrides))


def test_run_metrics_carry_prediction_and_spectrum(tmp_path):
    r = initlab.run({"model": {"activation": "relu", "width": 200}, "init": {"scheme": "he_normal"}}, out=tmp_path)
    m = r.metrics
    assert m["theory"]["phase"] == "critical" and m["theory"]["applies"] is True
    for layer in m["layers"]:
        assert layer["predicted_preact_std"] == pytest.approx(layer["preact_std"], rel=0.25)
        assert layer["predicted_std"] is not None
    assert m["jacobian"]["n_values"] > 0 and m["jacobian"]["mean_sq"] > 0
    run_dir = Path(r.run_dir)
    assert (run_dir / "jacobian.png").is_file() and (run_dir / "jacobian.npz").is_file()
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["theory"] == json.loads(json.dumps(m["theory"]))


def test_meanfield_tanh_spans_the_phases():
    from initlab.report import measure

    chis = {}
    for gain, phase in (("1.0", "ordered"), ("1.224745", "ordered"), ("1.581139", "chaotic")):
        report = measure(cfg("meanfield_tanh.yaml", f"init.gain={gain}", "model.depth=12"))
        chis[gain] = report["theory"]["chi1"]
        assert report["theory"]["phase"] == phase
        # one wide network: the measured spread follows the prediction layer by layer
        for layer in report["layers"]:
            assert layer["std"] == pytest.approx(layer["predicted_std"], rel=0.1)
    assert chis["1.0"] < chis["1.224745"] < 1 < chis["1.581139"]
    assert chis["1.224745"] > 0.9  # the near-critical one


def test_orthogonal_isometry_concentrates_the_spectrum():
    ortho = initlab.run(cfg("orthogonal_isometry.yaml", "init.scheme=orthogonal")).metrics["jacobian"]
    gauss = initlab.run(cfg("orthogonal_isometry.yaml", "init.scheme=lecun_normal")).metrics["jacobian"]
    assert ortho["frac_within_10pct"] > 0.95 and ortho["log10_spread_90"] < 0.1
    assert gauss["log10_spread_90"] > 4


def test_deep_relu_30_xavier_stalls_he_trains():
    short = ()
    xavier = initlab.run(cfg("deep_relu_30.yaml", "init.scheme=xavier_normal", *short)).metrics["final"]
    he = initlab.run(cfg("deep_relu_30.yaml", "init.scheme=he_normal", *short)).metrics["final"]
    assert xavier["train_loss"] > 1.35  # ln 4 = 1.386: stuck at the class prior
    assert he["train_loss"] < xavier["train_loss"] - 0.3
    assert he["train_acc"] > xavier["train_acc"] + 0.2


def test_theory_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["theory", str(CONFIGS / "relu_he.yaml"), "--json", "--phase-diagram"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["theory"]["phase"] == "critical" and len(report["layers"]) == 5
    assert Path(report["phase_diagram"]).is_file()
    text = runner.invoke(cli, ["theory", str(CONFIGS / "tanh_xavier.yaml")])
    assert text.exit_code == 0 and "phase:" in text.stdout and "pred act std" in text.stdout
    # a run directory works too
    run = json.loads(runner.invoke(cli, ["run", "--json"]).stdout)
    assert runner.invoke(cli, ["theory", run["run_dir"]]).exit_code == 0
    bad = runner.invoke(cli, ["theory", "nope.yaml"])
    assert bad.exit_code == 2 and bad.stderr.startswith("Error:")


def test_batchnorm_prediction_is_unit_preactivations():
    r = initlab.run({"model": {"activation": "tanh", "batchnorm": True}})
    assert r.metrics["theory"]["applies"] is False
    for layer in r.metrics["layers"]:
        assert layer["predicted_preact_std"] == pytest.approx(1.0)
        assert layer["preact_std"] == pytest.approx(1.0, rel=0.01)
