"""A sweep's plan: list parsing, the command-line axes, the grid and its validation (no process runs)."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sweep import TINY

from initlab.errors import ConfigError
from initlab.sweeps.plan import command_axes, make_plan, parse_list, split_list


@pytest.mark.parametrize("text, parts", [
    ("1,0.01", ["1", "0.01"]),
    ("[0,1],[0,2]", ["[0,1]", "[0,2]"]),
    ("{scheme: normal, std: 1},{scheme: he_normal}", ["{scheme: normal, std: 1}", "{scheme: he_normal}"]),
    ("'a,b',c", ["'a,b'", "c"]),
    (" relu , tanh ", ["relu", "tanh"]),
])
def test_split_list_on_top_level_commas(text, parts):
    assert split_list(text) == parts


@given(st.lists(st.one_of(st.integers(-1000, 1000), st.lists(st.integers(0, 9), max_size=3)), min_size=1, max_size=6))
def test_split_then_parse_gives_the_values_back(values):
    text = ",".join(json.dumps(v).replace(" ", "") for v in values)
    if len({json.dumps(v) for v in values}) < len(values):
        with pytest.raises(ConfigError, match="given twice"):
            parse_list(text, "--set x")
    else:
        assert parse_list(text, "--set x") == values


def test_values_are_yaml_scalars():
    assert parse_list("1,0.01,1e-4,true,null,relu", "--set k") == [1, 0.01, 1e-4, True, None, "relu"]


@pytest.mark.parametrize("text, kind, message", [
    ("1,,0.01", "number", "empty value"),
    ("1,0.01,", "number", "empty value"),
    ("", "number", "empty list"),
    ("abc", "number", "'abc' is not a number"),
    ("true", "number", "is not a number"),
    ("5,1.5", "int", "'1.5' is not an integer"),
    ("1,1", None, "given twice"),
])
def test_malformed_lists_are_refused(text, kind, message):
    with pytest.raises(ConfigError, match=message):
        parse_list(text, "--std", kind)


def test_std_means_the_textbooks_randn_times_std():
    (axis,) = command_axes(std="1,0.01")
    assert axis.key == "init" and axis.values == [{"scheme": "normal", "std": 1}, {"scheme": "normal", "std": 0.01}]


def test_init_clears_an_inherited_std_for_schemes_with_their_own_scale():
    (axis,) = command_axes(init="he_normal,uniform")
    assert axis.values == [{"scheme": "he_normal", "std": None}, {"scheme": "uniform"}]
    plan = make_plan({"init": {"scheme": "normal", "std": 0.5}}, [axis])
    assert [p.config.init.std for p in plan.points] == [None, 0.5]


def test_init_and_std_together_sweep_both():
    axes = command_axes(init="normal,truncated_normal", std="1,0.1")
    assert [a.key for a in axes] == ["init", "init.std"]
    plan = make_plan(None, axes)
    assert [(p.config.init.scheme, p.config.init.std) for p in plan.points] == [
        ("normal", 1), ("normal", 0.1), ("truncated_normal", 1), ("truncated_normal", 0.1)]


# ---------------------------------------------------------------- the grid


def test_grid_is_the_product_of_config_and_command_line_axes():
    raw = dict(TINY, sweep={"model.batchnorm": [False, True]})
    plan = make_plan(raw, command_axes(activation="relu,tanh", depth="2,3"))
    assert len(plan.points) == 8
    first, last = plan.points[0], plan.points[-1]
    assert first.overrides == {"model.batchnorm": False, "model.activation": "relu", "model.depth": 2}
    assert (last.config.model.batchnorm, last.config.model.activation, last.config.model.depth) == (True, "tanh", 3)
    assert first.run_dir == "runs/0-no-batchnorm_relu_depth2"
    assert last.label == "batchnorm=true, activation=tanh, depth=3"


def test_a_mapping_value_merges_into_its_section():
    raw = dict(TINY, init={"scheme": "normal", "std": 0.01, "bias_std": 0.1},
               sweep={"init": [{"scheme": "normal", "std": 1.0}, {"scheme": "he_normal", "std": None}]})
    plan = make_plan(raw)
    assert [(p.config.init.scheme, p.config.init.std, p.config.init.bias_std) for p in plan.points] == [
        ("normal", 1.0, 0.1), ("he_normal", None, 0.1)]
    assert plan.points[0].overrides == {"init.scheme": "normal", "init.std": 1.0}


def test_command_line_axes_replace_config_axes_on_the_same_keys():
    raw = dict(TINY, sweep={"init": [{"scheme": "he_normal"}, {"scheme": "lecun_normal"}], "model.depth": [2, 3]})
    plan = make_plan(raw, command_axes(std="1,0.1"))
    assert [a.key for a in plan.axes] == ["model.depth", "init"]
    assert len(plan.points) == 4


def test_one_value_is_an_override_not_an_axis():
    plan = make_plan(TINY, command_axes(std="0.5", activation="relu,tanh"))
    assert [a.key for a in plan.axes] == ["model.activation"]
    assert all(p.config.init.std == 0.5 for p in plan.points)
    assert plan.points[0].overrides == {"model.activation": "relu"}


def test_every_point_keeps_the_base_seed_and_seeds_adds_repetitions():
    plan = make_plan(TINY, command_axes(activation="relu,tanh"), seed=7)
    assert [p.config.seed for p in plan.points] == [7, 7]
    plan = make_plan(TINY, command_axes(activation="relu,tanh"), seed=7, seeds=3)
    assert [p.config.seed for p in plan.points] == [7, 8, 9, 7, 8, 9]
    assert plan.points[1].label == "activation=relu, seed=8"


def test_the_plan_round_trips_through_sweep_yaml(tmp_path):
    plan = make_plan(TINY, command_axes(std="1,0.1", sets=["model.batchnorm=false,true"]), seeds=2)
    path = tmp_path / "sweep.yaml"
    path.write_text(plan.sweep_yaml())
    again = make_plan(path)
    assert again.hash == plan.hash and [p.run_dir for p in again.points] == [p.run_dir for p in plan.points]


@pytest.mark.parametrize("axes, message", [
    (dict(sets=["model.dept=2,3"]), r"point 0 \(model.dept=2\): model.dept: unknown key 'dept' \(did you mean 'depth'\?\)"),
    (dict(init="he_nomal,xavier_normal"), "did you mean 'he_normal'"),
    (dict(init="he_normal", std="1,2"), "computes its own scale"),
    (dict(depth="2,0"), r"point 1 \(model.depth=0\)"),
    (dict(sets=["name=a,b"]), "points 0 and 1 are the same experiment"),
    (dict(depth="2,3", sets=["model.depth=4,5"]), "the same key is set twice"),
    (dict(sets=["sweep.x=1,2"]), "cannot be swept"),
    (dict(sets=["model..depth=1,2"]), "not a dotted key path"),
])
def test_bad_points_are_refused_before_anything_runs(axes, message):
    with pytest.raises(ConfigError, match=message):
        make_plan(TINY, command_axes(**axes))


# ---------------------------------------------------------------- bad input on the command line




# ---------------------------------------------------------------- the `points` axis: partial configs, listed


POINTS = [{"model": {"depth": 3}}, {"model": {"depth": 2}, "optimizer": {"lr": 0.05}}]


def test_points_axis_is_a_list_of_partial_configs_not_a_product():
    plan = make_plan({**TINY, "sweep": {"points": POINTS}})
    assert [p.overrides for p in plan.points] == [{"model.depth": 3}, {"model.depth": 2, "optimizer.lr": 0.05}]
    assert [(p.config.model.depth, p.config.optimizer.lr) for p in plan.points] == [(3, 0.1), (2, 0.05)]
    # with another axis it multiplies like any axis
    grid = make_plan({**TINY, "sweep": {"points": POINTS, "model.activation": ["relu", "tanh"]}})
    assert len(grid.points) == 4
    # sweep.yaml gives the same grid back
    again = make_plan(yaml_load(plan.sweep_yaml()))
    assert [p.config.hash for p in again.points] == [p.config.hash for p in plan.points]


def yaml_load(text):
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize("values, message", [
    ([{"model": {"depth": 3}}, 5], "each value must be a mapping of config sections"),
    ([{"model": {"depth": 3}}, {}], "each value must be a mapping of config sections"),
    ([{"model": {"depth": 3}}, {"modle": {"depth": 2}}], "modle"),
    ([{"model": {"depth": 3}}, {"model": {"depth": -1}}], "point 1"),
])
def test_points_axis_bad_values_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        make_plan({**TINY, "sweep": {"points": values}})


def test_points_axis_and_a_command_line_axis_on_the_same_key_conflict():
    with pytest.raises(ConfigError, match="set twice"):
        make_plan(TINY, axes=command_axes(sets=["points={model: {depth: 3}},{model: {depth: 2}}",
                                                "model.depth=4,5"]))
