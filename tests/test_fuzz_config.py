"""Fuzzing: on any input the config loader and the ``--set`` parser return a valid config or raise
ConfigError — never another exception (no TypeError, RecursionError, UnicodeError, …)."""
import math

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from initlab.config import NAME_RE, Config, dump_yaml, load_config, parse_override, validate
from initlab.errors import ConfigError
from initlab.memory import memory_estimate
from initlab.yamlio import parse_saved_yaml, parse_yaml

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTIONS = {
    "data": ["kind", "samples", "features", "eval_samples", "standardize", "classes", "noise", "scale"],
    "model": ["depth", "width", "activation", "slope", "bias", "batchnorm", "layernorm", "bn_momentum", "dtype"],
    "init": ["scheme", "std", "gain", "bias_std", "value", "mode", "lsuv_tol"],
    "optimizer": ["name", "lr", "weight_decay", "momentum", "beta1", "beta2", "alpha", "eps"],
    "train": ["steps", "batch_size", "clip_norm", "clip_value", "eval_every"],
    "record": ["bins", "range", "every", "samples"],
}
NAMES = ["gaussian", "mnist", "regression", "teacher", "sigmoid", "relu", "tanh", "he_normal", "normal",
         "xavier_uniform", "lsuv", "orthogonal", "adam", "sgd", "float32", "float64", "fan_in", "auto", "he_nomal"]
KEYS = [*SECTIONS, *(k for keys in SECTIONS.values() for k in keys), "name", "seed", "sweep", "model.depth"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, 2.0]),
    st.text(max_size=12), st.sampled_from(NAMES),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-2, 2), st.none(), st.booleans())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


@st.composite
def plausible_configs(draw):
    """Mostly-known sections and keys with arbitrary values: gets past the shape checks into the validators."""
    raw = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)), unique=True, max_size=6)):
        fields = draw(st.lists(st.sampled_from(SECTIONS[section]), unique=True, max_size=4))
        raw[section] = {f: draw(values) for f in fields}
    if draw(st.booleans()):
        raw["seed"] = draw(scalars)
    if draw(st.booleans()):
        raw["name"] = draw(st.one_of(st.text(max_size=10), scalars))
    if draw(st.booleans()):
        raw["sweep"] = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=2))
    return raw


def _check_valid(cfg):
    """What every returned config must satisfy; and its size can be estimated."""
    assert isinstance(cfg, Config)
    assert NAME_RE.match(cfg.name)
    assert len(cfg.model.widths) == cfg.model.depth
    assert math.isfinite(cfg.optimizer.lr) and cfg.optimizer.lr > 0
    assert all(isinstance(v, int) and v >= 0 for v in memory_estimate(cfg).values())
    # config.yaml (the resolved config as YAML) loads back to the same experiment
    assert load_config(parse_yaml(dump_yaml(cfg))).hash == cfg.hash


def _loads_or_config_error(fn, *args, **kwargs):
    try:
        out = fn(*args, **kwargs)
    except ConfigError as e:
        msg = str(e)
        assert msg and len(msg) < 2000, msg
        return None
    return out


@FUZZ
@given(values)
def test_validate_arbitrary_values(raw):
    cfg = _loads_or_config_error(validate, raw)
    if cfg is not None:
        _check_valid(cfg)


@FUZZ
@given(plausible_configs())
def test_validate_plausible_configs(raw):
    cfg = _loads_or_config_error(load_config, raw)
    if cfg is not None:
        _check_valid(cfg)


YAML_TOKENS = st.sampled_from([
    "{", "}", "[", "]", ",", ":", ": ", "- ", "\n", "\n  ", "\n    ", "\t", "#", "&a ", "*a", "&b ", "*b", "!!", "!!str ",
    "!!python/object:os.system ", "!!binary ", "? ", "|", ">", "'", '"', "---\n", "...\n", "%YAML 1.1\n", "~", "null",
    ".nan", ".inf", "-.inf", "1e-3", "0x1F", "0o17", "1_000", "12:30", "2026-01-01", "yes", "on", "true", "=",
    *KEYS, *NAMES, "-1", "0", "3", "0.01", "1e400", "é", "\u2028", "\x00", "\ufeff", "\\", " ",
])


@st.composite
def mutated_yaml(draw):
    """A plausible config dumped as YAML, then cut and spliced with YAML tokens: near-valid documents."""
    text = yaml.safe_dump(draw(plausible_configs()), default_flow_style=draw(st.sampled_from([None, True, False])),
                          allow_unicode=True)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:i] + draw(YAML_TOKENS) + text[i:]
        else:
            text = text[:i] + text[i + draw(st.integers(1, 5)):]
    return text


NASTY = [
    "sweep: {model.depth: &a [*a]}",  # refers to itself
    "sweep:\n  a: &a [x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
    "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\n  f: &f [*e, *e, *e, *e, *e, *e, *e, *e]\n",  # a billion laughs
    "!!python/object/apply:os.system ['true']",
    "model: {depth: 3, depth: 4}",
    "[" * 2000,
    "optimizer: {lr: 1e-3}",
    "\ufeffseed: 1",
]
texts = st.one_of(st.text(max_size=200), st.lists(YAML_TOKENS, max_size=40).map("".join), mutated_yaml())


def _examples(fn):
    for text in NASTY:
        fn = example(text)(fn)
    return fn


@FUZZ
@given(texts)
@_examples
def test_parse_yaml_on_arbitrary_text(text):
    data = _loads_or_config_error(parse_yaml, text)
    cfg = _loads_or_config_error(validate, data) if data is None or isinstance(data, dict) else None
    if cfg is not None:
        _check_valid(cfg)


@FUZZ
@given(st.one_of(st.binary(max_size=300), texts.map(lambda t: t.encode("utf-8", "surrogatepass"))))
@_examples
def test_load_config_file_with_arbitrary_bytes(tmp_path_factory, data):
    data = data.encode() if isinstance(data, str) else data
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_bytes(data)
    cfg = _loads_or_config_error(load_config, path)
    if cfg is not None:
        _check_valid(cfg)


set_texts = st.one_of(
    st.text(max_size=60),
    st.tuples(st.one_of(st.sampled_from(KEYS + [f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks]),
                        st.text(max_size=10)),
              st.sampled_from(["=", "==", " = ", ""]),
              st.one_of(st.lists(YAML_TOKENS, max_size=8).map("".join), st.text(max_size=20))).map("".join),
)


@FUZZ
@given(set_texts)
def test_parse_override_on_arbitrary_text(text):
    out = _loads_or_config_error(parse_override, text)
    if out is not None:
        key, _ = out
        assert key and all(part.isidentifier() for part in key.split("."))


@FUZZ
@given(st.lists(set_texts, max_size=3))
def test_load_config_with_arbitrary_overrides(overrides):
    cfg = _loads_or_config_error(load_config, None, overrides=overrides)
    if cfg is not None:
        _check_valid(cfg)


@pytest.mark.parametrize("depth", [10, 33, 400, 100_000])
@pytest.mark.parametrize("kind", ["flow-list", "flow-map", "block-map", "block-list"])
def test_nesting_at_every_depth_is_a_config_error_or_fine(depth, kind):
    """No RecursionError however deep, on whichever path PyYAML, our checks or pydantic give up."""
    text = {
        "flow-list": "sweep: {model.depth: " + "[" * depth + "1" + "]" * depth + "}",
        "flow-map": "model: " + "{a: " * depth + "1" + "}" * depth,
        "block-map": "model:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(min(depth, 3000))) + " " * 3001 + "1",
        "block-list": "sweep:\n  model.depth:\n" + "".join(" " * (i + 2) + "-\n" for i in range(min(depth, 3000))),
    }[kind]
    cfg = _loads_or_config_error(lambda: validate(parse_yaml(text)))
    assert cfg is None or depth < 32


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deep_set_value_is_a_config_error(depth):
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(None, overrides=["sweep.x=" + "[" * depth + "]" * depth])


@pytest.mark.parametrize("name", ["0E0", "1e5", "2.5E-3", "1_000e1"])
def test_a_name_that_reads_as_a_number_survives_config_yaml(name):
    """config.yaml quotes a string the loader would read as a float (YAML 1.2 exponents):
    the saved config reloads as the same experiment (found by hypothesis)."""
    cfg = validate({"name": name})
    text = dump_yaml(cfg)
    assert f"name: '{name}'" in text
    assert load_config(parse_yaml(text)).hash == cfg.hash
    assert parse_saved_yaml(text) == parse_yaml(text)  # the figures' fast reader agrees


def test_the_fast_reader_of_saved_files_knows_yaml_1_2_exponents():
    assert parse_saved_yaml("a: 1e-3\nb: '1e-3'\nc: 2.5E+2\n") == {"a": 0.001, "b": "1e-3", "c": 250.0}
