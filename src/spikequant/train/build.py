"""Building blocks every method shares: the model spec and model from a recipe, the batch
augmentation."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..data import dataset_info
from ..errors import ConfigError
from ..registry import create_model, get_model_entry


def model_spec(cfg: dict, *, spiking: bool = True) -> dict[str, Any]:
    """``{"name", "kwargs"}`` of the model, with data-dependent defaults (classes, channels,
    input size) filled from the dataset where the model takes them."""
    info = dataset_info(cfg["data"]["name"])
    name = cfg["model"]["name"]
    kwargs = dict(cfg["model"]["kwargs"])
    accepted = model_keywords(name)
    shape = tuple(info.input_shape)
    defaults: dict[str, Any] = {"num_classes": info.num_classes}
    if len(shape) >= 3:
        defaults["in_channels"] = shape[0]
        defaults["input_size"] = list(shape[1:3]) if shape[1] != shape[2] else shape[1]
    for key, value in defaults.items():
        if accepted is None or key in accepted:
            kwargs.setdefault(key, value)
    if "num_classes" in kwargs and kwargs["num_classes"] != info.num_classes:
        raise ConfigError(
            f"recipe: model.kwargs.num_classes is {kwargs['num_classes']} but dataset "
            f"{cfg['data']['name']!r} has {info.num_classes} classes"
        )
    if spiking:
        kwargs.update(
            timesteps=cfg["model"]["timesteps"],
            neuron=cfg["model"]["neuron"],
            neuron_kwargs=dict(cfg["model"]["neuron_kwargs"]),
        )
    return {"name": name, "kwargs": kwargs}


def model_keywords(name: str) -> set[str] | None:
    """Keyword arguments the registered model ``name`` accepts (None: any, it takes **kwargs)."""
    fn = get_model_entry(name)
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_model(spec: dict) -> nn.Module:
    """The registered model of ``spec``; keywords it does not take are a ConfigError."""
    name, kwargs = spec.get("name"), spec.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ConfigError(f"model spec {spec!r} must be {{'name': str, 'kwargs': mapping}}")
    accepted = model_keywords(name)
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        raise ConfigError(
            f"model {name!r} takes no keyword {', '.join(unknown)} (it takes: "
            f"{', '.join(sorted(accepted))})"
        )
    try:
        return create_model(name, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def build_augment(cfg: dict):
    """The recipe's augmentation as ``fn(x, y, generator)``, from :mod:`spikequant.data.augment`."""
    data = cfg["data"]
    aug = data["augment"]
    wanted = (
        aug["crop_padding"]
        or aug["random_resize"]
        or aug["flip"]
        or aug["cutout"]
        or aug["rand_augment_ops"]
        or data["mixup_alpha"] > 0
    )
    if not wanted:
        return None
    from ..data import augment as augment_module

    return augment_module.build_batch_augment(
        crop_padding=aug["crop_padding"],
        random_resize=aug["random_resize"],
        flip=aug["flip"],
        mixup_alpha=data["mixup_alpha"],
        rand_augment=(
            (aug["rand_augment_ops"], aug["rand_augment_magnitude"])
            if aug["rand_augment_ops"]
            else None
        ),
        cutout=aug["cutout"],
    )
