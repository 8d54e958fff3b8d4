"""Evaluation in a helper thread (initlab.evaluation): the same numbers as evaluating in place, errors
and interrupts handled, and a sweep's idle cores offered to its running points."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import initlab.evaluation as evaluation
from initlab.experiment import train

HISTORY = ("train_loss", "grad_norm", "eval_loss", "eval_acc", "train_acc")


def cfg(**over) -> dict:
    c = {"data": {"kind": "gaussian", "samples": 600, "features": 20, "eval_samples": 300},
         "model": {"depth": 3, "width": 24, "activation": "tanh"},
         "init": {"scheme": "xavier_normal"},
         "optimizer": {"name": "sgd", "lr": 0.1},
         "train": {"steps": 60, "batch_size": 32, "eval_every": 5},
         "record": {"every": 1000, "samples": 100, "bins": 10}}
    for key, value in over.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def same_history(a, b) -> None:
    for key in HISTORY:
        np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)


@pytest.mark.parametrize("over", [
    {},
    {"model__batchnorm": True},  # evaluation mode uses the running statistics the copy must carry
    {"model__activation": "relu", "model__layernorm": True},
    {"data__kind": "regression"},  # no accuracy: eval_acc and train_acc stay NaN
    {"model__residual": True, "model__activation": "relu"},
])
def test_helper_thread_gives_the_numbers_of_evaluating_in_place(over):
    here = train(cfg(**over), spare_cores=0)
    helper = train(cfg(**over), spare_cores=1)
    assert here.status == helper.status == "completed"
    assert np.isfinite(helper.history["eval_loss"][4::5]).all()
    same_history(here, helper)
    assert here.metrics["final"] == helper.metrics["final"]
    assert here.metrics["timing"]["eval_helper_s"] == 0.0 < helper.metrics["timing"]["eval_helper_s"]


def test_spare_cores_is_asked_at_every_evaluation_and_mixing_changes_nothing():
    asked = []

    def spare():
        asked.append(1)
        return len(asked) % 2  # every other evaluation in the helper

    mixed = train(cfg(model__batchnorm=True), spare_cores=spare)
    assert len(asked) == 60 // 5
    same_history(train(cfg(model__batchnorm=True), spare_cores=0), mixed)


def test_floating_point_warnings_in_the_helper_are_counted_as_in_place():
    # A net that overflows: the run counts NumPy's warnings (np.seterrcall), helper thread included.
    over = {"init__scheme": "normal", "init__std": 30.0, "model__activation": "relu", "optimizer__lr": 1e-9}
    here, helper = train(cfg(**over), spare_cores=0), train(cfg(**over), spare_cores=1)
    assert here.metrics["numpy_warnings"] > 0
    assert helper.metrics["numpy_warnings"] == here.metrics["numpy_warnings"]
    assert helper.metrics["warnings"] == here.metrics["warnings"]
    same_history(here, helper)


def test_an_error_in_the_helper_fails_the_run_with_its_message(monkeypatch):
    real = evaluation.evaluate

    def broken(model, loss, x, y):
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("no room to evaluate")
        return real(model, loss, x, y)

    monkeypatch.setattr(evaluation, "evaluate", broken)
    r = train(cfg(), spare_cores=1)
    assert r.status == "failed" and "no room to evaluate" in r.error
    assert not [t for t in threading.enumerate() if t.name.startswith("initlab-eval")]


def test_interrupt_keeps_every_lent_evaluation_and_leaves_no_thread():
    def stop(step):
        if step == 42:
            raise KeyboardInterrupt

    r = train(cfg(), on_step=stop, spare_cores=1)
    assert r.status == "interrupted" and r.metrics["steps_done"] == 42
    rows = r.history["eval_loss"]
    assert len(rows) == 42 and np.isfinite(rows[4::5]).all()  # steps 5, 10, …, 40: all filled
    full = train(cfg(), spare_cores=0)
    for key in HISTORY:
        np.testing.assert_array_equal(full.history[key][:42], r.history[key], err_msg=key)
    assert not [t for t in threading.enumerate() if t.name.startswith("initlab-eval")]


def test_the_helper_holds_at_most_two_models_then_evaluates_in_place(monkeypatch):
    gate = threading.Event()
    real = evaluation.Evaluator._timed_fill

    def slow(self, i, model, loss):
        gate.wait(5)
        real(self, i, model, loss)

    monkeypatch.setattr(evaluation.Evaluator, "_timed_fill", slow)
    hist = {k: np.full(30, np.nan) for k in HISTORY}
    r = train(cfg(), spare_cores=0)
    from initlab.engine.losses import SoftmaxCrossEntropy

    x, y = np.zeros((10, 20), np.float32), np.zeros(10, np.int64)
    ev = evaluation.Evaluator(hist, SoftmaxCrossEntropy(), x, y, x, y, spare=1)
    for i in range(4):
        ev(i, r.model)
    assert len(ev._lent) == evaluation.COPIES  # rows 0 and 1 lent; 2 and 3 done here meanwhile
    assert np.isnan(hist["eval_loss"][:2]).all() and np.isfinite(hist["eval_loss"][2:4]).all()
    gate.set()
    assert ev.close() is None
    assert np.isfinite(hist["eval_loss"][:4]).all()


@pytest.mark.skipif(__import__("initlab.provenance").provenance.usable_cores() < 2, reason="needs 2 cores")
def test_a_sweep_offers_its_idle_cores_to_the_running_point(tmp_path):
    from initlab.output.readers import read_metrics
    from initlab.sweeps.runner import sweep

    def timing(res):
        (point,) = res.points
        return read_metrics(Path(res.sweep_dir) / point["run_dir"])["timing"]

    assert timing(sweep(cfg(), {"seed": [0]}, out=str(tmp_path), workers=2))["eval_helper_s"] > 0  # a core idled
    assert timing(sweep(cfg(), {"seed": [0]}, out=str(tmp_path / "one"), workers=1))["eval_helper_s"] == 0.0


def test_a_second_interrupt_while_waiting_for_the_helper_still_cuts_the_history(monkeypatch):
    """Ctrl-C twice in a notebook: the second lands while the run waits for its helper; the run is
    still reported as interrupted after the steps it did, its history cut there."""
    real_close = evaluation.Evaluator.close

    def impatient(self):
        real_close(self)
        raise KeyboardInterrupt  # as if the wait had been interrupted

    monkeypatch.setattr(evaluation.Evaluator, "close", impatient)

    def stop(step):
        if step == 42:
            raise KeyboardInterrupt

    r = train(cfg(), on_step=stop, spare_cores=1)
    assert r.status == "interrupted" and r.metrics["steps_done"] == 42
    assert all(len(r.history[key]) == 42 for key in HISTORY)


def test_a_history_that_grows_as_training_goes_holds_the_same_rows(monkeypatch):
    """Rows are allocated HISTORY_ROWS at a time and doubled as steps reach them; evaluations the helper
    thread still holds when the rows run out are all in the grown history."""
    import initlab.experiment as experiment

    whole = train(cfg(), spare_cores=1)
    grown_at = []
    grow = experiment._grow
    monkeypatch.setattr(experiment, "_grow", lambda hist, steps: (grown_at.append(len(hist["step"])), grow(hist, steps)))
    monkeypatch.setattr(experiment, "HISTORY_ROWS", 7)  # 7 → 14 → 28 → 56 → 60: rows cut mid-evaluation-period
    evaluate = evaluation.evaluate

    def slow(*args):  # the helper is still evaluating when the rows run out
        if threading.current_thread() is not threading.main_thread():
            threading.Event().wait(0.05)
        return evaluate(*args)

    monkeypatch.setattr(evaluation, "evaluate", slow)
    grown = train(cfg(), spare_cores=1)
    assert grown_at == [7, 14, 28, 56]
    assert len(grown.history["step"]) == 60 and list(grown.history["step"]) == list(range(1, 61))
    same_history(whole, grown)
    assert np.isfinite(grown.history["eval_loss"][4::5]).all()
