"""The engine benchmark's ``--floor`` engine must do initlab's arithmetic, or its ratios mean nothing."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_ends_bit_identical_to_the_engine(bench, capsys):
    assert bench.main(["--no-torch", "--floor", "--steps", "30", "--rounds", "3", "--warmup", "2"]) == 0
    out = capsys.readouterr().out
    assert "floor / initlab step time" in out
    assert "floor weights bit-identical to initlab's after the same steps: yes" in out


def test_floor_notices_other_arithmetic(bench, capsys, monkeypatch):
    # A floor whose update uses another learning rate computes other numbers: the check must say so.
    floor_trainer = bench.floor_trainer

    def other_rate(model, batches):
        saved = bench.LR  # read once, when the step is built
        bench.LR = saved * 1.0001
        try:
            return floor_trainer(model, batches)
        finally:
            bench.LR = saved

    monkeypatch.setattr(bench, "floor_trainer", other_rate)
    assert bench.main(["--no-torch", "--floor", "--steps", "10", "--rounds", "2", "--warmup", "0"]) == 1
    assert "bit-identical to initlab's after the same steps: NO" in capsys.readouterr().out


def test_floor_is_for_the_plain_network_only(bench):
    with pytest.raises(SystemExit) as e:
        bench.main(["--no-torch", "--floor", "--batchnorm"])
    assert e.value.code == 2
