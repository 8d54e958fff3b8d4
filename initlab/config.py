"""Experiment configs: YAML → validated, fully resolved :class:`Config` (pydantic v2).

Every key has a default, so ``{}`` is the embedded default experiment (the textbook's 5×100
sigmoid net, 1/√n init, on 1000×100 Gaussian input). Errors are :class:`ConfigError` with the
key path and, for names, the closest valid choice.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from initlab.data.datasets import DATASETS
from initlab.engine.activations import ACTIVATIONS
from initlab.engine.initializers import ALIASES, INITIALIZERS, STD_SCHEMES
from initlab.engine.lsuv import DATA_DEPENDENT
from initlab.engine.optimizers import OPTIMIZERS
from initlab.engine.residual import BRANCH_SCALES, STRUCTURAL
from initlab.errors import ConfigError, short, unknown_name
from initlab.yamlio import check_shape, parse_value, read_yaml
from initlab.yamlio import dump_yaml as _dump

_SECTIONS = ("data", "model", "init", "optimizer", "train", "record")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
INIT_SCHEMES = tuple(INITIALIZERS) + tuple(ALIASES) + tuple(DATA_DEPENDENT) + tuple(STRUCTURAL)
PIXEL_SCALES = ("unit", "raw", "standardized")
DEFAULT_NAME = "default"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)


def _choice(kind, choices):
    def check(value):
        if value not in choices:
            raise ValueError(unknown_name(kind, short(value), choices))
        return value

    return check


class Data(Section):
    kind: str = "gaussian"
    samples: Optional[int] = Field(1000, ge=1)
    features: int = Field(100, ge=1)
    eval_samples: Optional[int] = Field(1000, ge=0)  # 0: no held-out set (train_acc is still measured)
    standardize: bool = False
    classes: int = Field(10, ge=2, le=10_000)
    noise: float = Field(0.5, ge=0)
    scale: float = Field(1.0, gt=0)  # std of the synthetic Gaussian inputs
    # MNIST only: "unit" (pixel/255, 0–1; what null means), "raw" (0–255) or "standardized" (each pixel
    # z-scored with the training images' mean and std, as standardize: true does).
    pixel_scale: Optional[Literal["unit", "raw", "standardized"]] = None

    _kind = field_validator("kind")(classmethod(lambda cls, v: _choice("data kind", DATASETS)(v)))

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, values):
        # The toy regression problem is y = 3x + 2 + 0.5·noise on 100 one-feature samples.
        if isinstance(values, dict):
            if values.get("kind") == "regression":
                values = {"samples": 100, "features": 1, "eval_samples": 100, **values}
            if values.get("kind") == "mnist":
                values = {"features": 784, **values}
        return values

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "mnist" and self.features != 784:
            raise ValueError("features: MNIST images have 784 features")
        if self.kind != "mnist" and self.samples is None:
            raise ValueError("samples: null (all images) applies to mnist only")
        if self.kind != "mnist" and self.eval_samples is None:
            raise ValueError("eval_samples: null (all test images) applies to mnist only")
        if self.kind == "mnist" and self.samples is not None and self.samples > 60000:
            raise ValueError(f"samples: MNIST has 60000 training images, asked for {self.samples}")
        if self.kind == "mnist" and self.eval_samples is not None and self.eval_samples > 10000:
            raise ValueError(f"eval_samples: MNIST has 10000 test images, asked for {self.eval_samples}")
        if self.pixel_scale is not None and self.kind != "mnist":
            raise ValueError(f"pixel_scale: applies to mnist only (data.kind is {self.kind}; use scale)")
        return self


class ModelSection(Section):
    depth: int = Field(5, ge=1, le=1000)
    width: Union[int, list[int]] = 100
    activation: str = "sigmoid"
    slope: float = Field(0.01, ge=0, lt=1)
    bias: bool = True
    batchnorm: bool = False
    layernorm: bool = False
    bn_momentum: float = Field(0.1, gt=0, le=1)
    # Added under BatchNorm's square root: PyTorch's 1e-5 by default; the textbook's code uses 1e-6,
    # which matters when the pre-activation variance is itself ~1e-6 (weight std 1e-4).
    bn_eps: float = Field(1e-5, gt=0, le=1)
    dtype: Literal["float32", "float64"] = "float32"
    # Hidden blocks 2… become h + α·f(h) (pre-activation form; block 1 is a plain stem): see engine/residual.py.
    residual: bool = False
    branch_scale: Union[float, str, None] = None  # α: a number, 1/sqrt(depth), 1/depth or rezero (null: 1)

    _act = field_validator("activation")(classmethod(lambda cls, v: _choice("activation", ACTIVATIONS)(v)))

    @field_validator("width")
    @classmethod
    def _width(cls, v):
        widths = v if isinstance(v, list) else [v]
        if not widths or any(w < 1 or w > 100_000 for w in widths):
            raise ValueError("width must be an integer in 1..100000 or a non-empty list of them")
        return v

    @field_validator("branch_scale", mode="before")
    @classmethod
    def _branch_scale(cls, v):
        if v is None or v in BRANCH_SCALES:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number or one of {', '.join(BRANCH_SCALES)}, got {short(repr(v))}")
        try:
            v = float(v)
        except OverflowError:  # an integer beyond float range
            v = math.inf
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {short(repr(v))}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.width, list) and len(self.width) != self.depth:
            raise ValueError(f"width: a list of {len(self.width)} widths for depth {self.depth}")
        if self.branch_scale is not None and not self.residual:
            raise ValueError("branch_scale: applies to residual nets only (set model.residual: true)")
        if self.residual and self.depth < 2:
            raise ValueError("residual: needs depth ≥ 2 (a plain first block projects the input, residual blocks follow)")
        if self.residual and len(set(self.widths)) != 1:
            raise ValueError(f"residual: every hidden layer needs the same width, got {self.widths}")
        if self.batchnorm and self.layernorm:
            raise ValueError("batchnorm and layernorm: choose one")
        return self

    @property
    def widths(self) -> list[int]:
        return list(self.width) if isinstance(self.width, list) else [self.width] * self.depth


class Init(Section):
    scheme: str = "xavier_normal"
    std: Optional[float] = Field(None, gt=0)
    gain: Union[float, Literal["auto"], None] = None
    bias_std: float = Field(0.0, ge=0)
    value: float = 0.01
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    lsuv_tol: float = Field(0.1, gt=0, lt=1)

    _scheme = field_validator("scheme")(classmethod(lambda cls, v: _choice("scheme", INIT_SCHEMES)(v)))

    @field_validator("gain")
    @classmethod
    def _gain(cls, v):
        if isinstance(v, (int, float)) and not v > 0:
            raise ValueError("gain must be positive (or 'auto')")
        return v

    @model_validator(mode="after")
    def _check(self):
        canon = ALIASES.get(self.scheme, self.scheme)
        if self.std is not None and canon not in STD_SCHEMES:
            raise ValueError(
                f"std: scheme '{self.scheme}' computes its own scale; std applies to {', '.join(STD_SCHEMES)} (use gain)"
            )
        if canon in ("normal", "truncated_normal") and self.std is None:
            raise ValueError(f"std: scheme '{self.scheme}' needs a std (e.g. --set init.std=0.01)")
        return self


class Optimizer(Section):
    name: str = "sgd"
    lr: float = Field(0.01, gt=0, le=1e6)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    alpha: float = Field(0.99, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)

    _name = field_validator("name")(classmethod(lambda cls, v: _choice("optimizer", OPTIMIZERS)(v)))


class Train(Section):
    steps: int = Field(0, ge=0, le=10_000_000)
    batch_size: int = Field(100, ge=1)
    clip_norm: Optional[float] = Field(None, gt=0)
    clip_value: Optional[float] = Field(None, gt=0)
    eval_every: int = Field(100, ge=1)


class Record(Section):
    bins: int = Field(30, ge=1, le=10_000)
    range: Optional[list[float]] = None
    every: Optional[int] = Field(None, ge=1)
    samples: int = Field(1000, ge=1)
    # where the per-layer gradient norms come from: the next training step's own backward pass
    # ("step", free) or a pass on the probe's first grad_samples examples ("probe"; grad_samples
    # None: all of them); see initlab.recorder
    grad_from: Literal["step", "probe"] = "step"
    grad_samples: Optional[int] = Field(100, ge=1)
    # The mean-field prediction at init (metrics' predicted_* and the figures' overlay); false skips it.
    theory: bool = True

    @field_validator("range")
    @classmethod
    def _range(cls, v):
        if v is not None and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError("range must be [low, high] with low < high")
        return v


class Config(Section):
    name: str = DEFAULT_NAME
    seed: int = Field(0, ge=0, le=2**63 - 1)
    data: Data = Data()
    model: ModelSection = ModelSection()
    init: Init = Init()
    optimizer: Optimizer = Optimizer()
    train: Train = Train()
    record: Record = Record()
    sweep: dict[str, list[Any]] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v) or len(v) > 100:
            raise ValueError(f"'{short(v)}' is not a valid name (letters, digits, '.', '_', '-'; it becomes a folder)")
        return v

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v):
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis '{key}' has no values")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.model.batchnorm and self.train.steps > 0 and self.train.batch_size < 2:
            raise ValueError("train.batch_size: batch normalization needs batches of at least 2")
        scheme, m = self.init.scheme, self.model
        if scheme in STRUCTURAL and not m.residual:
            raise ValueError(f"init.scheme: {scheme} is defined for residual nets (set model.residual: true)")
        if scheme == "fixup" and (m.batchnorm or m.layernorm):
            raise ValueError("init.scheme: fixup replaces normalization layers; use it without batchnorm/layernorm")
        forced = STRUCTURAL[scheme].branch_scale if scheme in STRUCTURAL else None
        if forced and m.branch_scale not in (None, forced):
            raise ValueError(f"model.branch_scale: {scheme} sets it to {forced} (a learnable scalar starting at 0); drop the key")
        if scheme in DATA_DEPENDENT and m.residual:
            raise ValueError(f"init.scheme: {scheme} is defined for plain nets (use fixup, skipinit or a branch_scale)")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @property
    def hash(self) -> str:
        return config_hash(self)


_KNOWN_KEYS = {name for m in (Config, Data, ModelSection, Init, Optimizer, Train, Record) for name in m.model_fields}


def config_hash(cfg: Config) -> str:
    """A stable digest of what determines the results (everything but ``name`` and ``sweep``)."""
    d = cfg.to_dict()
    d.pop("name", None)
    d.pop("sweep", None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading and errors


def ignored_settings(cfg: Config) -> list[str]:
    """Settings that the chosen scheme, activation or data kind ignores, one message each.

    A warning, not an error: a saved ``config.yaml`` lists every key with its default, and a
    sweep over activations or schemes legitimately carries e.g. a leaky slope into its relu
    points. Only a value other than the default is reported (a default cannot be told from
    "not given" in a resolved config).
    """
    out = []
    canon = ALIASES.get(cfg.init.scheme, cfg.init.scheme)
    if cfg.init.mode != Init.model_fields["mode"].default and not canon.startswith("he_"):
        out.append(f"init.mode: {cfg.init.mode} is ignored: it applies to the he_* schemes only "
                   f"(init.scheme is {cfg.init.scheme})")
    if cfg.model.slope != ModelSection.model_fields["slope"].default and cfg.model.activation != "leaky_relu":
        out.append(f"model.slope: {cfg.model.slope:g} is ignored: it applies to leaky_relu only "
                   f"(model.activation is {cfg.model.activation})")
    if cfg.data.classes != Data.model_fields["classes"].default and cfg.data.kind in ("regression", "mnist"):
        why = "regression has one real-valued output" if cfg.data.kind == "regression" else "MNIST has 10"
        out.append(f"data.classes: {cfg.data.classes} is ignored: {why} (data.kind is {cfg.data.kind})")
    return out


def _suggest_key(loc: tuple, bad: str) -> str:
    model = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return unknown_name("key", bad, model.model_fields).replace("unknown key", "unknown key", 1)


def _format_error(err: ValidationError) -> str:
    # The deepest error first: for a union such as width (int or list of ints), the list member's
    # "item 1: not an integer" says more than the int member's "not an integer (got a list)".
    e = max(err.errors(), key=lambda x: len(x["loc"]))
    # pydantic puts union members in the location (e.g. "int", "list[int]"): keep only keys.
    if e["type"] == "extra_forbidden":
        loc = e["loc"]
        return ".".join(map(str, loc)) + ": " + _suggest_key(loc[:-1], str(loc[-1]))
    loc = tuple(p for p in e["loc"] if not isinstance(p, str) or p in _KNOWN_KEYS)
    path = ".".join(str(p) for p in loc)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] in ("model_type", "dict_type"):
        msg = f"must be a mapping, got {type(e.get('input')).__name__}"
    elif e["type"] != "value_error":
        given = e.get("input")
        got = {dict: "a mapping", list: "a list"}.get(type(given)) or short(repr(given))
        msg = f"{msg[0].lower()}{msg[1:]} (got {got})"
    # A section-level check names its own key ("features: ..."): attach it to the section.
    m = re.match(r"^([a-z_]+): (.*)$", msg)
    if m and m.group(1) in _KNOWN_KEYS:
        path, msg = (f"{path}.{m.group(1)}" if path else m.group(1)), m.group(2)
    return f"{path}: {msg}" if path else msg


def validate(raw: Any, default_name: str = DEFAULT_NAME) -> Config:
    """Validate a raw mapping (from YAML or a dict) into a resolved :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    check_shape(raw, "config")
    raw = dict(raw)
    raw.setdefault("name", default_name)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from e
    except RecursionError as e:
        raise ConfigError("the config is nested too deeply") from e


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.depth=10"`` → ``("model.depth", 10)``; the value is a YAML flow scalar."""
    if "=" not in text:
        raise ConfigError(f"--set {short(repr(text))}: expected KEY=VALUE, e.g. --set model.depth=10")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", p) for p in key.split(".")):
        raise ConfigError(f"--set {short(repr(text))}: '{short(key)}' is not a dotted key path like model.depth")
    return key, parse_value(value, f"--set {key}")


def apply_override(raw: dict, key: str, value: Any) -> dict:
    """Set a dotted key in a copy of ``raw``; a mapping value merges into the section."""
    out = copy.deepcopy(raw)
    parts = key.split(".")
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section (in override '{key}')")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last, {}), dict) and (len(parts) == 1 or last in _SECTIONS):
        merged = dict(node.get(last) or {})
        merged.update(value)
        node[last] = merged
    else:
        node[last] = value
    return out


def read_config_file(path) -> tuple[dict, str]:
    """A config file's raw mapping (an empty file is the empty mapping) and the name its stem gives
    (made folder-safe: the stem of ``my config.yaml`` is ``my_config``)."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    name = Path(path).stem
    if not NAME_RE.match(name):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or DEFAULT_NAME
    return raw, name


def load_config(source: Union[str, Path, dict, None] = None, overrides=(), seed: int | None = None) -> Config:
    """Load a config from a path, a mapping or None (the embedded default) and apply overrides.

    ``overrides`` is a sequence of ``"key.path=value"`` strings or ``(key, value)`` pairs.
    """
    if source is None:
        raw, name = {}, DEFAULT_NAME
    elif isinstance(source, dict):
        check_shape(source, "config")
        raw, name = copy.deepcopy(source), DEFAULT_NAME
    else:
        raw, name = read_config_file(source)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        raw = apply_override(raw, key, value)
    if seed is not None:
        raw = apply_override(raw, "seed", seed)
    return validate(raw, default_name=name)


def dump_yaml(cfg: Config) -> str:
    return _dump(cfg.to_dict())
