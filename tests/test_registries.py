"""The registries that are not covered entry by entry elsewhere: losses per task, data-dependent init
schemes, activation properties. Each test loops over the registry itself, so a new entry is tested
(or fails) the moment it is added."""
import numpy as np
import pytest

from initlab.data.datasets import DATASETS
from initlab.engine.activations import ACTIVATIONS
from initlab.engine.initializers import INITIALIZERS
from initlab.engine.losses import LOSSES, TASK_LOSSES
from initlab.engine.lsuv import DATA_DEPENDENT
from initlab.engine.model import InitSpec, build_mlp
from initlab.engine.residual import STRUCTURAL
from initlab.errors import EngineError

# What each activation's histogram should say about its floor (SPEC: dead = relu and leaky_relu).
DEAD_UNITS = {"relu": True, "leaky_relu": True}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_has_dead_units_only_where_spec_counts_dead_units(name):
    act = ACTIVATIONS[name]
    assert act.has_dead_units is DEAD_UNITS.get(name, False)
    if act.has_dead_units:
        assert act.dead(np.array([0.0]))[0] and not act.dead(np.array([1.0]))[0]


@pytest.mark.parametrize("task", sorted(TASK_LOSSES))
def test_every_task_has_a_registered_loss(task):
    loss = LOSSES[TASK_LOSSES[task]]()
    assert loss.name == TASK_LOSSES[task]
    assert loss.classifies is (task == "classification")


def test_every_data_kind_declares_a_task_with_a_loss():
    import initlab

    for kind in DATASETS:
        if kind == "mnist":
            continue  # covered by tests/test_mnist.py when the files are present
        cfg = initlab.load_config({"data": {"kind": kind, "samples": 20, "eval_samples": 10, "features": 4}
                                   if kind != "regression" else {"kind": kind}})
        from initlab.experiment import build

        data, *_ = build(cfg)
        assert data.task in TASK_LOSSES


@pytest.mark.parametrize("name", sorted(DATA_DEPENDENT))
def test_data_dependent_scheme_starts_data_free_then_adjusts_on_data(name):
    entry = DATA_DEPENDENT[name]
    assert entry.start in INITIALIZERS and name not in INITIALIZERS
    rng = np.random.default_rng(0)
    model = build_mlp(30, 3, [40, 40], "tanh", InitSpec(scheme=entry.start), rng)
    before = [b.linear.W.data.copy() for b in model.blocks]
    x = rng.standard_normal((200, 30))
    info = entry.apply(model, x, rng=None, tol=0.05)
    assert info is not None
    assert any(not np.array_equal(b0, b.linear.W.data) for b0, b in zip(before, model.blocks))
    # the adjusted net gives each hidden layer's Linear output unit variance on that data (LSUV's goal)
    h = x
    for b in model.blocks:
        z = h @ b.linear.W.data + (b.linear.b.data if b.linear.b is not None else 0)
        assert np.var(z) == pytest.approx(1.0, abs=0.05 * 1.5)
        h = b.act.forward(z, True)


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_structural_scheme_starts_data_free_then_adjusts_the_residual_net(name):
    from initlab.config import INIT_SCHEMES
    from initlab.registry import registries

    entry = STRUCTURAL[name]
    assert entry.start in INITIALIZERS and name not in INITIALIZERS and name not in DATA_DEPENDENT
    assert name in INIT_SCHEMES and name in registries()["init schemes"]
    model = build_mlp(6, 3, [8, 8, 8], "relu", InitSpec(scheme=entry.start), np.random.default_rng(0),
                      residual=True, branch_scale=entry.branch_scale)
    entry.apply(model)
    x = np.random.default_rng(1).standard_normal((5, 6))
    model.forward(x)
    # both schemes start every residual block as the identity: the last hidden output is the stem's
    np.testing.assert_array_equal(model.blocks[-1].preact, model.blocks[0].output)
    with pytest.raises(EngineError, match="residual"):
        entry.apply(build_mlp(6, 3, [8, 8], "relu", InitSpec(scheme=entry.start)))
