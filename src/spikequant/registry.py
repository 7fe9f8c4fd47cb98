"""One registry for models, neurons, surrogates and recipes-level components (timm style).

The registry imports no plugin: model and neuron modules import it and register themselves with
a decorator; ``spikequant/__init__.py`` imports the built-in ones (as timm's models package
does), so they are registered once ``spikequant`` is imported.

Every registered entry is covered by the shared tests in ``tests/test_registry.py``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from .errors import ConfigError


class Registry:
    """Name -> factory mapping with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}
        self._families: dict[str, str] = {}

    def register(self, name: str | None = None, *, overwrite: bool = False, family: str = ""):
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            key = name or factory.__name__
            if key in self._entries and not overwrite:
                raise ConfigError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = factory
            self._families[key] = family
            doc = (factory.__doc__ or "").strip().splitlines()
            self._docs[key] = doc[0] if doc else ""
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The registered factory (or class) itself."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self, family: str | None = None) -> list[str]:
        return sorted(k for k in self._entries if family is None or self._families[k] == family)

    def family(self, name: str) -> str:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._families[name]

    def describe(self) -> dict[str, str]:
        return {k: self._docs[k] for k in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._entries


MODELS = Registry("model")
NEURONS = Registry("neuron")
SURROGATES = Registry("surrogate")


MODEL_FAMILIES = {
    "snn": "spiking network: kwargs timesteps/neuron/num_classes, output [T, B, classes]",
    "ann": "plain (optionally quantization-aware) ANN for conversion: output [B, classes]",
    "ttfs": "time-to-first-spike network: output spike times z [B, classes], class = argmin",
    "detection": "spiking detector: output the time-averaged head [B, S_h, S_w, 5 + classes]; "
    ".decode(head) gives boxes, scores and labels per image",
}


def register_model(fn=None, *, name: str | None = None, family: str = "snn"):
    """Decorator registering a model factory ``fn(**kwargs) -> nn.Module``.

    ``family`` states the contract the shared tests check (see :data:`MODEL_FAMILIES`).
    """
    if family not in MODEL_FAMILIES:
        raise ConfigError(f"model family must be one of {sorted(MODEL_FAMILIES)}, got {family!r}")
    if fn is None:
        return MODELS.register(name, family=family)
    return MODELS.register(name, family=family)(fn)


def create_model(name: str, pretrained: bool = False, in_chans: int | None = None, **kwargs: Any):
    """Build a registered model by name (timm's signature: ``in_chans`` sets ``in_channels``).

    spikequant ships no pretrained weights: ``pretrained=True`` raises :class:`ConfigError`.
    """
    if pretrained:
        raise ConfigError(
            f"spikequant ships no pretrained weights (model {name!r}): create the model with "
            "pretrained=False and train it, or load your own checkpoint"
        )
    if in_chans is not None:
        if "in_channels" in kwargs:
            raise ConfigError("give in_chans or in_channels, not both")
        kwargs["in_channels"] = in_chans
    try:
        return MODELS.create(name, **kwargs)
    except TypeError as exc:
        if in_chans is None or "'in_channels'" not in str(exc):
            raise
        raise ConfigError(f"model {name!r} has a fixed input and takes no in_chans") from None


def get_model_entry(name: str) -> Callable[..., Any]:
    """The factory registered as model ``name`` (to inspect its keywords)."""
    return MODELS.get(name)


def list_models(filter: str = "", family: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names matching the ``fnmatch`` pattern ``filter`` (e.g. ``"resnet*"``),
    optionally only those of one family (``snn``, ``ann``, ``ttfs``). ``pretrained=True`` lists
    the models with shipped weights: none."""
    if filter in MODEL_FAMILIES and filter not in MODELS:
        raise ConfigError(f"list_models' first argument is a name pattern: use family={filter!r}")
    names = MODELS.names(family)
    if filter:
        names = fnmatch.filter(names, filter)
    return [] if pretrained else names


def model_family(name: str) -> str:
    """The family a registered model was registered with (e.g. ``"ann"`` for the conversion
    ANNs)."""
    return MODELS.family(name)


NEURON_FAMILIES = {
    "": "integrate-and-fire family for direct training (if, lif, atif_u, atif_nu, qlif)",
    "conversion": "neurons of ANN-to-SNN conversion (msat, ca_lif), pure step functions",
}


def register_neuron(fn=None, *, name: str | None = None, family: str = ""):
    """Decorator registering a neuron factory; ``family`` groups neurons (see
    :data:`NEURON_FAMILIES`)."""
    if family not in NEURON_FAMILIES:
        raise ConfigError(f"neuron family must be one of {sorted(NEURON_FAMILIES)}, got {family!r}")
    if fn is None:
        return NEURONS.register(name, family=family)
    return NEURONS.register(name, family=family)(fn)


def create_neuron(name: str, **kwargs: Any):
    """Build a registered spiking neuron module by name (e.g. ``"if"``, ``"lif"``, ``"atif_u"``)."""
    return NEURONS.create(name, **kwargs)


def list_neurons(family: str | None = None) -> list[str]:
    """Registered neuron names, optionally only those of one family (see NEURON_FAMILIES)."""
    return NEURONS.names(family)
