"""The method registry and the base class of a training method.

A method is a :class:`~spikequant.train.trainer.TrainingHooks` (what it changes in the one
training loop) plus how it builds its data and model from a validated recipe, how it rebuilds a
saved model from checkpoint metadata, and which metrics it adds at the end. Its options are a
frozen dataclass ``Options``: the recipe's ``method:`` section (besides ``name``) is validated
against it, unknown keys being errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..train.trainer import Trainer, TrainingHooks

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a :class:`Method` subclass under its ``name``."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ConfigError(f"a training method named {cls.name!r} is already registered")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: Any) -> type[Method]:
    """The registered method class called ``name``; an unknown name is a ConfigError naming the
    closest one."""
    if not isinstance(name, str) or name not in _METHODS:
        import difflib

        close = difflib.get_close_matches(str(name), list(_METHODS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(list_methods())}"
        raise ConfigError(f"recipe: unknown method.name {name!r} ({hint})")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Names of the registered training methods, sorted."""
    return sorted(_METHODS)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    pass


def recipe_split(data: dict, split: str) -> Dataset:
    """The ``train`` or ``test`` split of a validated recipe's ``data`` section, cut to its
    ``train_subset`` / ``test_subset`` (:func:`~spikequant.data.limit_dataset`)."""
    from ..data import get_dataset, limit_dataset

    dataset = get_dataset(data["name"], split, root=data["root"])
    return limit_dataset(dataset, data[f"{split}_subset"])


class Method(TrainingHooks):
    """Base of every training method; see the module docstring."""

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    #: whether the model section's ``timesteps`` / ``neuron`` apply (spiking models built with a
    #: neuron); methods whose models have their own neurons refuse them.
    spiking_model: ClassVar[bool] = True
    default_neuron: ClassVar[str] = "atif_u"
    default_timesteps: ClassVar[int] = 4

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        section = {k: v for k, v in cfg["method"].items() if k != "name"}
        self.options = self.Options(**section)

    # -- recipe
    @classmethod
    def check_recipe(cls, cfg: dict) -> None:
        """Cross-section checks of a validated recipe (fills the model defaults)."""
        model = cfg["model"]
        if cls.spiking_model:
            if model["timesteps"] is None:
                model["timesteps"] = cls.default_timesteps
            if model["neuron"] is None:
                model["neuron"] = cls.default_neuron
            if model["neuron"] == "relu" and model["timesteps"] != 1:
                raise ConfigError(
                    "recipe: model.neuron 'relu' (the ANN baseline) runs with model.timesteps "
                    f"= 1, got {model['timesteps']}"
                )
        else:
            given = [k for k in ("timesteps", "neuron") if model[k] is not None]
            given += ["neuron_kwargs"] if model["neuron_kwargs"] else []
            if given:
                raise ConfigError(
                    f"recipe: method {cls.name} builds its own neurons; remove "
                    f"{', '.join('model.' + k for k in given)}"
                )

    def total_epochs(self) -> int:
        return self.cfg["train"]["epochs"]

    # -- data and model
    def datasets(self) -> tuple[Dataset, Dataset]:
        return recipe_split(self.cfg["data"], "train"), recipe_split(self.cfg["data"], "test")

    def augment(self):
        from ..train.build import build_augment

        return build_augment(self.cfg)

    def model_spec(self) -> dict:
        from ..train.build import model_spec

        return model_spec(self.cfg, spiking=self.spiking_model)

    def build_model(self) -> nn.Module:
        """The model for epoch 1 (the global RNG is seeded just before)."""
        from ..train.build import build_model

        return build_model(self.model_spec())

    def prepare_model(self, model: nn.Module, dataset: Dataset) -> None:
        """Adapt the model to the data (frame sequences arrive batch-first from a loader)."""
        from ..train.trainer import accept_frame_sequences

        accept_frame_sequences(model, dataset)

    @classmethod
    def rebuild(cls, meta: dict) -> nn.Module:
        """The untrained model a checkpoint with metadata ``meta`` was saved from."""
        from ..train.build import build_model

        return build_model(meta["model"])

    # -- results
    def final_metrics(self, trainer: Trainer, final: dict) -> dict[str, Any]:
        """Metrics added to ``metrics.json`` at the end of the run."""
        return {}

    def checkpoint_meta(self, trainer: Trainer) -> dict:
        return {
            **trainer.meta,
            "model": self.model_spec(),  # the current architecture (QAT folds BN mid-run)
            "method": self.name,
            "method_options": self.cfg["method"],
        }
