"""The one recipe schema: shared sections checked here, plus a ``method`` section checked by
the selected method's options dataclass (:mod:`spikequant.methods`).

A recipe after :func:`validate_recipe` has every section and key filled in::

    name: mnist-atif-u
    description: ...
    seed: 0
    data:     {name, root, batch_size, eval_batch_size, train_subset, test_subset, num_workers,
               augment: {crop_padding, random_resize, flip, cutout,
               rand_augment_ops, rand_augment_magnitude}, mixup_alpha}
    model:    {name, timesteps, neuron, neuron_kwargs, kwargs}
    optim:    {name: sgd|adam|adamw, lr, momentum, nesterov, weight_decay, grad_clip}
    schedule: {name: cosine|step|constant, step_size, gamma, min_lr_ratio}
    train:    {epochs, eval_every, threads, device, precision, bptt, bptt_chunk,
               sync_batchnorm, loggers: [jsonl, csv, tensorboard]}
    method:   {name: direct|spquant|qat|ttfs|..., <that method's options>}

Unknown keys are errors everywhere, naming the key path and the closest valid key (a typo must
not silently fall back to a default).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import re
import types
import typing
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
        # None: the method's default (spiking methods: T = 4, atif_u; others take neither)
        "timesteps": _f(int, None, low=1, high=MAX_TIMESTEPS, nullable=True),
        "neuron": _f(str, None, nullable=True),
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
        # torch intra-op threads for the run (0 keeps torch's setting)
        "threads": _f(int, 0, low=0, high=4096),
        "device": _f(str, "auto"),  # auto | cpu | cuda | cuda:N
        "precision": _f(str, "32", choices=("32", "bf16", "16-mixed")),
        "bptt": _f(str, "full", choices=("full", "checkpointed")),
        "bptt_chunk": _f(int, 4, low=1),  # timesteps per recomputed chunk (checkpointed)
        "sync_batchnorm": _f(bool, False),  # under DDP: BN statistics over the global batch
        # per-epoch metric files (spikequant.train.loggers); jsonl is always written
        "loggers": _f(list, ["jsonl"], choices=("jsonl", "csv", "tensorboard")),
    },
}
AUGMENT = {
    "crop_padding": _f(int, 0, low=0),
    "random_resize": _f(bool, False),
    "flip": _f(bool, False),
    "cutout": _f(int, 0, low=0),  # side of the zeroed square, 0 = off
    "rand_augment_ops": _f(int, 0, low=0),  # RandAugment operations per image, 0 = off
    "rand_augment_magnitude": _f(int, 9, low=0, high=30),
}
TOP_LEVEL = {"name", "seed", "description", "method", *SCHEMA}
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
    for item in value if isinstance(value, list) else [value]:
        if field.choices is not None and item not in field.choices:
            raise ConfigError(
                f"recipe: {where} must {'hold only' if isinstance(value, list) else 'be one of'} "
                f"{', '.join(field.choices)}, got {item!r}"
            )
    return value


def check_keys(where: str, given: dict, allowed) -> None:
    """An unknown key is ``recipe: unknown key data.bach_size (did you mean data.batch_size?)``."""
    for key in given:
        if key in allowed:
            continue
        path = f"{where}.{key}" if where else str(key)
        close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1, cutoff=0.5)
        if close:
            hint = f"did you mean {where + '.' if where else ''}{close[0]}?"
        else:
            hint = f"allowed: {', '.join(sorted(map(str, allowed)))}"
        raise ConfigError(f"recipe: unknown key {path} ({hint})")


def _section(where: str, given: Any, fields: dict[str, Field]) -> dict:
    """The mapping ``given`` checked against ``fields``, each missing key at its default."""
    if not isinstance(given, dict):
        raise ConfigError(f"recipe: {where} must be a mapping, got {given!r}")
    check_keys(where, given, fields)
    return {
        key: _check(f"{where}.{key}", given.get(key, copy.deepcopy(field.default)), field)
        for key, field in fields.items()
    }


def validate_recipe(cfg: dict) -> dict:
    """A copy of ``cfg`` with defaults filled in; raise :class:`ConfigError` on any problem."""
    from ..methods import get_method

    if not isinstance(cfg, dict):
        raise ConfigError("recipe must be a mapping")
    cfg = copy.deepcopy(cfg)
    if "kind" in cfg:
        raise ConfigError(
            "recipe: unknown key kind (recipes name their method as method.name, e.g. "
            f"'method: {{name: {cfg['kind']}}}')"
        )
    check_keys("", cfg, TOP_LEVEL)
    train = cfg.get("train")
    if isinstance(train, dict) and isinstance(train.get("precision"), int):
        train["precision"] = str(train["precision"])  # YAML reads `precision: 32` as a number
    name = cfg.setdefault("name", "run")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"recipe: name must be a non-empty string, got {name!r}")
    seed = cfg.setdefault("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"recipe: seed must be an integer in [0, 2^32), got {seed!r}")
    for section, fields in SCHEMA.items():
        cfg[section] = _section(section, cfg.get(section) or {}, fields)
    device = cfg["train"]["device"]
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"recipe: train.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    loggers = cfg["train"]["loggers"]
    if len(set(loggers)) != len(loggers):
        raise ConfigError(f"recipe: train.loggers names a logger twice: {loggers!r}")
    from .loggers import check_available

    check_available(loggers)  # a missing tensorboard fails now, not after the first epoch
    cfg["data"]["augment"] = _section("data.augment", cfg["data"]["augment"], AUGMENT)
    model = cfg["model"]
    for key in ("kwargs", "neuron_kwargs"):
        if any(not isinstance(k, str) for k in model[key]):
            raise ConfigError(f"recipe: model.{key} keys must be strings")
    reserved = {"timesteps", "neuron", "neuron_kwargs"} & set(model["kwargs"])
    if reserved:
        raise ConfigError(
            f"recipe: set {', '.join(sorted(reserved))} directly under model, not in model.kwargs"
        )
    section = cfg.get("method") or {"name": "direct"}
    if not isinstance(section, dict):
        raise ConfigError(f"recipe: method must be a mapping, got {section!r}")
    method_cls = get_method(section.get("name", "direct"))
    options = options_from_section(method_cls.Options, section, "method")
    cfg["method"] = {"name": method_cls.name, **dataclasses.asdict(options)}
    method_cls.check_recipe(cfg)
    return cfg


def options_from_section(cls, section: dict, where: str):
    """Build the dataclass ``cls`` from a recipe section (without its ``name`` key): unknown
    keys and wrongly typed values are :class:`ConfigError` naming the key path."""
    given = {k: v for k, v in section.items() if k != "name"}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(where, given, [*fields, "name"])
    hints = typing.get_type_hints(cls)
    for key, value in given.items():
        _check_type(f"{where}.{key}", value, hints[key])
    try:
        return cls(**given)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"recipe: {where}: {exc}") from None


def _check_type(where: str, value: Any, hint: Any) -> None:
    """Check ``value`` against a simple annotation (int, float, bool, str, list[...],
    dict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            with contextlib.suppress(ConfigError):
                _check_type(where, value, option)
                return
        names = " or ".join(_hint_name(o) for o in options)
        raise ConfigError(f"recipe: {where} must be {names}, got {value!r}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"recipe: {where} must be null, got {value!r}")
        return
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"recipe: {where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        for i, v in enumerate(value):
            _check_type(f"{where}[{i}]", v, item)
        return
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"recipe: {where} must be a mapping, got {value!r}")
        return
    if hint is Any:
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(f"recipe: {where} must be finite, got {value!r}")
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"recipe: {where} must be {_hint_name(hint)}, got {value!r}")


def _hint_name(hint) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
