"""`--scheduler`: the same sweep on a Dask LocalCluster of 2 worker processes gives the same results."""
import json
import os

import pytest
import yaml
from click.testing import CliRunner

import initlab
from initlab.cli import cli
from initlab.output.readers import read_manifest
from tests.test_sweep import TINY

distributed = pytest.importorskip("distributed", reason="needs the optional extra initlab[distributed]")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def test_a_dask_cluster_gives_the_same_results_as_local_workers(tmp_path, cluster):
    axes = {"model.activation": ["relu", "tanh"], "init.scheme": ["xavier_normal", "he_normal"]}
    remote = initlab.sweep(TINY, axes, out=tmp_path / "dask", scheduler=cluster.scheduler_address)
    local = initlab.sweep(TINY, axes, out=tmp_path / "local", workers=2)
    assert remote.counts["completed"] == 4
    assert [p["final"] for p in remote.points] == [p["final"] for p in local.points]  # bit for bit
    assert [p["init_std"] for p in remote.points] == [p["init_std"] for p in local.points]
    manifest = read_manifest(remote.sweep_dir)
    assert "Dask" in manifest["invocations"][0]["on"]
    assert (remote.sweep_dir / "sweep.png").is_file()


def test_the_scheduler_comes_from_the_environment_too(tmp_path, cluster, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INITLAB_DASK_SCHEDULER", cluster.scheduler_address)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli, ["sweep", "t.yaml", "--depth", "2,3", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert "Dask" in read_manifest(out["sweep_dir"])["invocations"][0]["on"]
    assert out["counts"]["completed"] == 2


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INITLAB_DASK_SCHEDULER", raising=False)
    monkeypatch.setenv("INITLAB_DASK_TIMEOUT", "1")
    res = CliRunner().invoke(cli, ["sweep", "--std", "1,2", "--scheduler", "tcp://127.0.0.1:9"], catch_exceptions=False)
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: --scheduler tcp://127.0.0.1:9: cannot connect")
    assert not os.path.exists("outputs")
