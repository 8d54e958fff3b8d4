import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Property tests explore new random examples on every local run (two real bugs were found that
# way), but a CI gate must not fail on the day a fresh example happens to turn up an old bug:
# .ci/run sets HYPOTHESIS_PROFILE=ci, the same examples every time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """Never write into the user's cache; keep INITLAB_DATA_DIR as CI sets it (real MNIST)."""
    if "INITLAB_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("INITLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "initlab-cache"))
    monkeypatch.delenv("INITLAB_DEBUG", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Small matrix products: one BLAS thread is as fast and far steadier on a shared 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """Click's test runner, in a fresh working directory (so ``outputs/`` lands in tmp_path)."""
    from click.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    return CliRunner()


def strict_json(text: str):
    """``json.loads`` that refuses NaN and Infinity, as a strict consumer of initlab's JSON would."""
    import json

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def configs_dir() -> Path:
    return CONFIGS


def has_mnist() -> bool:
    root = os.environ.get("INITLAB_DATA_DIR")
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return bool(root) and all((Path(root) / "mnist" / n).is_file() for n in names)


needs_mnist = pytest.mark.skipif(not has_mnist(), reason="real MNIST not found under INITLAB_DATA_DIR/mnist")


def run_named(out, base: dict, name: str, figures=False, on_step=None, **sections):
    """``initlab.run`` of ``base`` named ``name`` into ``out``, each keyword a section merged over base's."""
    from pathlib import Path

    import initlab

    cfg = {**base, "name": name}
    for key, value in sections.items():
        cfg[key] = {**base.get(key, {}), **value}
    return Path(initlab.run(initlab.load_config(cfg), out=out, on_step=on_step, figures=figures).run_dir)


def raise_at(step: int, exc: BaseException):
    """An ``on_step`` callback that raises ``exc`` once training reaches ``step``."""
    def on_step(done):
        if done == step:
            raise exc
    return on_step


def export_fixture_runs(out, base: dict, **extra) -> dict:
    """The runs the export tests read: trained (with figures), diverged, interrupted, failed, a
    half-written copy (no metrics.json) and a two-point sweep; ``extra``: more runs by name → sections."""
    import shutil
    from pathlib import Path

    import initlab

    r = {
        "trained": run_named(out, base, "trained", figures=True),
        **{name: run_named(out, base, name, **sections) for name, sections in extra.items()},
        "diverged": run_named(out, base, "diverged", model={"activation": "relu"},
                              init={"scheme": "normal", "std": 10.0}, optimizer={"lr": 10.0}),
        "interrupted": run_named(out, base, "interrupted", on_step=raise_at(30, KeyboardInterrupt)),
        "failed": run_named(out, base, "failed", on_step=raise_at(30, RuntimeError("boom"))),
    }
    half = out / "half" / "2026-01-01_00-00-00"  # killed before metrics.json, which is written last
    shutil.copytree(r["trained"], half)
    (half / "metrics.json").unlink()
    r["half"] = half
    sweep = initlab.sweep({**base, "name": "sw", "train": {**base["train"], "steps": 40}},
                          {"model.activation": ["tanh", "relu"]}, out=out, workers=1)
    r["sweep"] = Path(sweep.sweep_dir)
    return r
