"""Schema of ``kind: direct`` recipes: defaults, types and ranges, checked with precise errors.

A recipe after :func:`validate_recipe` has every section and key filled in::

    kind: direct
    name: mnist-atif-u
    seed: 0
    data:     {name, root, batch_size, eval_batch_size, train_subset, test_subset, num_workers,
               augment: {crop_padding, random_resize, flip}, mixup_alpha}
    model:    {name, timesteps, neuron, neuron_kwargs, kwargs}
    optim:    {name: sgd|adam|adamw, lr, momentum, nesterov, weight_decay, grad_clip}
    schedule: {name: cosine|step|constant, step_size, gamma, min_lr_ratio}
    train:    {epochs, eval_every}

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

MAX_TIMESTEPS = 1024


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    default: Any
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    choices: tuple[str, ...] | None = None
    nullable: bool = False


def _f(types, default, **kw) -> Field:
    return Field(types if isinstance(types, tuple) else (types,), default, **kw)


NUM = (int, float)
SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "name": _f(str, None),
        "root": _f(str, None, nullable=True),
        "batch_size": _f(int, 64, low=1),
        "eval_batch_size": _f(int, 256, low=1),
        "train_subset": _f(int, None, low=1, nullable=True),
        "test_subset": _f(int, None, low=1, nullable=True),
        "num_workers": _f(int, 0, low=0),
        "augment": _f(dict, {}),
        "mixup_alpha": _f(NUM, 0.0, low=0),
    },
    "model": {
        "name": _f(str, None),
        "timesteps": _f(int, 4, low=1, high=MAX_TIMESTEPS),
        "neuron": _f(str, "atif_u"),
        "neuron_kwargs": _f(dict, {}),
        "kwargs": _f(dict, {}),
    },
    "optim": {
        "name": _f(str, "sgd", choices=("sgd", "adam", "adamw")),
        "lr": _f(NUM, 0.1, low=0),
        "momentum": _f(NUM, 0.9, low=0, high=1),
        "nesterov": _f(bool, False),
        "weight_decay": _f(NUM, 0.0, low=0),
        "grad_clip": _f(NUM, None, low=0, nullable=True),
    },
    "schedule": {
        "name": _f(str, "cosine", choices=("cosine", "step", "constant")),
        "step_size": _f(int, 30, low=1),
        "gamma": _f(NUM, 0.1, low=0, high=1),
        "min_lr_ratio": _f(NUM, 0.0, low=0, high=1),
    },
    "train": {
        "epochs": _f(int, 10, low=1),
        "eval_every": _f(int, 1, low=0),
    },
}
AUGMENT_KEYS = {"crop_padding": (int, 0), "random_resize": (bool, False), "flip": (bool, False)}
TOP_LEVEL = {"kind", "name", "seed", "description", *SCHEMA}
REQUIRED = ("data.name", "model.name")


def _check(where: str, value: Any, field: Field) -> Any:
    if value is None:
        if field.nullable or field.default is None and where not in REQUIRED:
            return None
        raise ConfigError(f"recipe: {where} is required")
    ok = isinstance(value, field.types) and not (
        isinstance(value, bool) and bool not in field.types
    )
    if not ok:
        names = " or ".join(t.__name__ for t in field.types)
        raise ConfigError(f"recipe: {where} must be {names}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"recipe: {where} must be finite, got {value!r}")
        if field.low is not None and value < field.low:
            raise ConfigError(f"recipe: {where} must be >= {field.low}, got {value!r}")
        if field.high is not None and value > field.high:
            raise ConfigError(f"recipe: {where} must be <= {field.high}, got {value!r}")
    if field.choices is not None and value not in field.choices:
        raise ConfigError(
            f"recipe: {where} must be one of {', '.join(field.choices)}, got {value!r}"
        )
    return value


def validate_recipe(cfg: dict) -> dict:
    """A copy of ``cfg`` with defaults filled in; raise :class:`ConfigError` on any problem."""
    if not isinstance(cfg, dict):
        raise ConfigError("recipe must be a mapping")
    cfg = copy.deepcopy(cfg)
    unknown = set(cfg) - TOP_LEVEL
    if unknown:
        raise ConfigError(
            f"recipe: unknown top-level key(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(TOP_LEVEL))}"
        )
    if cfg.setdefault("kind", "direct") != "direct":
        raise ConfigError(f"recipe kind {cfg['kind']!r} is not run by the direct-training runner")
    cfg.setdefault("name", "run")
    seed = cfg.setdefault("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"recipe: seed must be a non-negative integer, got {seed!r}")
    for section, fields in SCHEMA.items():
        given = cfg.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"recipe: {section} must be a mapping, got {given!r}")
        unknown = set(given) - set(fields)
        if unknown:
            raise ConfigError(
                f"recipe: unknown key(s) {', '.join(f'{section}.{k}' for k in sorted(unknown))}; "
                f"allowed in {section}: {', '.join(sorted(fields))}"
            )
        out = {}
        for key, field in fields.items():
            where = f"{section}.{key}"
            value = given.get(key, copy.deepcopy(field.default))
            if value is None and where in REQUIRED:
                raise ConfigError(f"recipe: {where} is required")
            out[key] = _check(where, value, field)
        cfg[section] = out
    augment = cfg["data"]["augment"]
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ConfigError(
            f"recipe: unknown key(s) {', '.join(f'data.augment.{k}' for k in sorted(unknown))}; "
            f"allowed: {', '.join(sorted(AUGMENT_KEYS))}"
        )
    for key, (typ, default) in AUGMENT_KEYS.items():
        augment[key] = _check(
            f"data.augment.{key}", augment.get(key, default), _f(typ, default, low=0)
        )
    model = cfg["model"]
    if model["neuron"] == "relu" and model["timesteps"] != 1:
        raise ConfigError(
            f"recipe: model.neuron 'relu' (the ANN baseline) runs with model.timesteps = 1, got "
            f"{model['timesteps']}"
        )
    reserved = {"timesteps", "neuron", "neuron_kwargs"} & set(model["kwargs"])
    if reserved:
        raise ConfigError(
            f"recipe: set {', '.join(sorted(reserved))} directly under model, not in model.kwargs"
        )
    return cfg
