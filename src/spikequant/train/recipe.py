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

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import Options, build, check_keys, option

MAX_TIMESTEPS = 1024


@dataclass(frozen=True)
class Augment(Options):
    crop_padding: int = option(0, low=0)
    random_resize: bool = False
    flip: bool = False
    cutout: int = option(0, low=0)  # side of the zeroed square, 0 = off
    rand_augment_ops: int = option(0, low=0)  # RandAugment operations per image, 0 = off
    rand_augment_magnitude: int = option(9, low=0, high=30)


@dataclass(frozen=True)
class Data(Options):
    name: str
    root: str | None = None
    batch_size: int = option(64, low=1)
    eval_batch_size: int = option(256, low=1)
    train_subset: int | None = option(None, low=1)
    test_subset: int | None = option(None, low=1)
    num_workers: int = option(0, low=0)
    augment: Augment = option(factory=Augment)
    mixup_alpha: float = option(0.0, low=0)


@dataclass(frozen=True)
class Model(Options):
    name: str
    # None: the method's default (spiking methods: T = 4, atif_u; others take neither)
    timesteps: int | None = option(None, low=1, high=MAX_TIMESTEPS)
    neuron: str | None = None
    neuron_kwargs: dict = option(factory=dict)
    kwargs: dict = option(factory=dict)


@dataclass(frozen=True)
class Optim(Options):
    name: str = option("sgd", choices=("sgd", "adam", "adamw"))
    lr: float = option(0.1, low=0)
    momentum: float = option(0.9, low=0, high=1)
    nesterov: bool = False
    weight_decay: float = option(0.0, low=0)
    grad_clip: float | None = option(None, low=0)


@dataclass(frozen=True)
class Schedule(Options):
    name: str = option("cosine", choices=("cosine", "step", "constant"))
    step_size: int = option(30, low=1)
    gamma: float = option(0.1, low=0, high=1)
    min_lr_ratio: float = option(0.0, low=0, high=1)


@dataclass(frozen=True)
class Train(Options):
    epochs: int = option(10, low=1)
    eval_every: int = option(1, low=0)
    # torch intra-op threads for the run (0 keeps torch's setting)
    threads: int = option(0, low=0, high=4096)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = option("32", choices=("32", "bf16", "16-mixed"))
    bptt: str = option("full", choices=("full", "checkpointed"))
    bptt_chunk: int = option(4, low=1)  # timesteps per recomputed chunk (checkpointed)
    sync_batchnorm: bool = False  # under DDP: BN statistics over the global batch
    # per-epoch metric files (spikequant.train.loggers); jsonl is always written
    loggers: list[str] = option(factory=lambda: ["jsonl"], choices=("jsonl", "csv", "tensorboard"))


SCHEMA: dict[str, type[Options]] = {
    "data": Data,
    "model": Model,
    "optim": Optim,
    "schedule": Schedule,
    "train": Train,
}
TOP_LEVEL = {"name", "seed", "description", "method", *SCHEMA}


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
    for section, cls in SCHEMA.items():
        cfg[section] = dataclasses.asdict(build(cls, cfg.get(section) or {}, section))
    device = cfg["train"]["device"]
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"recipe: train.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    loggers = cfg["train"]["loggers"]
    if len(set(loggers)) != len(loggers):
        raise ConfigError(f"recipe: train.loggers names a logger twice: {loggers!r}")
    from .loggers import check_available

    check_available(loggers)  # a missing tensorboard fails now, not after the first epoch
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


def options_from_section(cls, section: dict, where: str) -> Any:
    """Build the options dataclass ``cls`` from a recipe section (its ``name`` key selects the
    method): unknown keys and bad values are :class:`ConfigError` naming the key path."""
    return build(cls, {k: v for k, v in section.items() if k != "name"}, where)
