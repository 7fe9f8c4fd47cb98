"""Shared pieces of the model zoo: the neuron factory, time handling and argument checks.

Every model maps a static input ``x[B, C, H, W]`` (analog / direct coding: the same input current
enters the first layer at every step, ``x_t = x`` for t = 1..T) or a time-first input
``x[T, B, C, H, W]`` (event frames) to per-timestep logits ``[T, B, num_classes]``. The prediction
is the rate decoding ``argmax_c mean_t logits[t, b, c]``.

Stateless layers (conv, BN, pooling, linear) run over all ``T * B`` samples at once through
:class:`~spikequant.layers.TimeFold`; only the neurons loop over time.

A model built with ``neuron="relu"`` has an ANN form, :meth:`SpikingModel.ann_form`: the same
layers (shared parameters) as a static network ``[B, C, ...] -> [B, classes]`` made of plain
``torch.nn`` modules that ``torch.fx`` traces, which is what ANN-to-SNN conversion takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ConversionError, ShapeError
from ..layers import RepeatTime, TimeFold
from ..registry import create_neuron, list_neurons

ANN_NEURON = "relu"


def pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``32 -> (32, 32)``; ``(48, 10) -> (48, 10)``."""
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise ConfigError(f"input_size must be an int or a pair of ints, got {size!r}")


def check_positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class NeuronFactory:
    """Builds the activation that follows each conv/linear layer.

    ``neuron`` is a registered spiking neuron name (``if``, ``lif``, ``atif_u``, ``atif_nu``...) or
    ``"relu"`` for the ANN baseline. ``neuron_kwargs`` are passed to the neuron, except
    ``per_channel: true``, which gives each neuron layer one threshold (or level set) per channel
    via ``num_channels``. ATIF-nu receives the model's ``timesteps`` (its number of levels).
    """

    def __init__(self, neuron: str, neuron_kwargs: dict | None, timesteps: int) -> None:
        if not isinstance(neuron, str):
            raise ConfigError(f"neuron must be a name, got {neuron!r}")
        if neuron != ANN_NEURON and neuron not in list_neurons():
            known = ", ".join([ANN_NEURON, *list_neurons()])
            raise ConfigError(f"unknown neuron {neuron!r}; known: {known}")
        if neuron_kwargs is not None and not isinstance(neuron_kwargs, dict):
            raise ConfigError(f"neuron_kwargs must be a mapping, got {neuron_kwargs!r}")
        self.neuron = neuron
        self.kwargs = dict(neuron_kwargs or {})
        self.per_channel = bool(self.kwargs.pop("per_channel", False))
        self.timesteps = timesteps
        if neuron == ANN_NEURON and self.kwargs:
            raise ConfigError(f"the ANN baseline (relu) takes no neuron_kwargs, got {self.kwargs}")
        if neuron == ANN_NEURON and self.per_channel:
            raise ConfigError("per_channel applies to spiking neurons only, not relu")

    @property
    def spiking(self) -> bool:
        return self.neuron != ANN_NEURON

    def __call__(self, num_channels: int) -> nn.Module:
        if not self.spiking:
            return nn.ReLU()
        kwargs = dict(self.kwargs)
        if self.per_channel:
            kwargs["num_channels"] = num_channels
        if self.neuron == "atif_nu":
            kwargs.setdefault("timesteps", self.timesteps)
        try:
            return create_neuron(self.neuron, **kwargs)
        except TypeError as exc:  # an unknown keyword for this neuron
            raise ConfigError(f"neuron {self.neuron!r}: {exc}") from None


class SpikingModel(nn.Module):
    """Base of every model: input coding + ``features`` + ``head``, output ``[T, B, classes]``.

    Subclasses set ``self.net`` (a module mapping ``[T, B, C, H, W]`` to ``[T, B, classes]``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        input_size,
        timesteps: int,
        neuron: str,
        neuron_kwargs: dict | None,
        static_ndim: int = 4,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.timesteps = check_positive_int("timesteps", timesteps)
        self.input_size = input_size
        self.make_neuron = NeuronFactory(neuron, neuron_kwargs, self.timesteps)
        if not self.make_neuron.spiking and self.timesteps != 1:
            raise ConfigError(
                f"the ANN baseline (neuron 'relu') runs with timesteps = 1, got {self.timesteps}"
            )
        self.static_ndim = static_ndim
        self.encode = RepeatTime(self.timesteps)

    @property
    def neuron(self) -> str:
        return self.make_neuron.neuron

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def ann_form(self) -> nn.Module:
        """The static ANN ``[B, C, ...] -> [B, classes]`` of a model built with ``neuron="relu"``,
        sharing this model's layers (and so its parameters and BN statistics)."""
        if self.make_neuron.spiking:
            raise ConversionError(
                f"{type(self).__name__} was built with neuron {self.neuron!r}; its ANN form (for "
                "conversion) needs neuron='relu' (train the ANN, then convert it)"
            )
        return static_form(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == self.static_ndim:
            x = self.encode(x)
        elif x.ndim != self.static_ndim + 1:
            raise ShapeError(
                f"{type(self).__name__} expects a static input with {self.static_ndim} dims "
                f"[B, C, ...] or a time-first input with {self.static_ndim + 1} dims, got "
                f"shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__} was built for {self.in_channels} input channels, got "
                f"input of shape {tuple(x.shape)} (channels are dim 2 of [T, B, C, ...])"
            )
        return self.body(x)


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> TimeFold:
    """3x3 conv (no bias: BN follows) + BatchNorm over the folded ``T*B`` batch."""
    return TimeFold(
        nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        )
    )


def avg_pool(kernel: int | tuple[int, int] = 2) -> TimeFold:
    return TimeFold(nn.AvgPool2d(kernel))


def linear(in_features: int, out_features: int, bias: bool = True) -> TimeFold:
    return TimeFold(nn.Linear(in_features, out_features, bias=bias))


def conv1d_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> TimeFold:
    """1-D conv (no bias: BN follows, ``padding = kernel // 2``) + BatchNorm1d."""
    return TimeFold(
        nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(out_ch),
        )
    )


class Flatten(nn.Module):
    """``[T, B, C, H, W] -> [T, B, C*H*W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)

    def ann_form(self) -> nn.Module:
        return nn.Flatten(1)


class GlobalAvgPool(nn.Module):
    """``[T, B, C, H, W] -> [T, B, C]``: mean over space (``spatial_dims=1``: ``[T, B, C, L]``)."""

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ConfigError(f"spatial_dims must be 1 or 2, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(-self.spatial_dims, 0)))

    def ann_form(self) -> nn.Module:
        pool = nn.AdaptiveAvgPool1d(1) if self.spatial_dims == 1 else nn.AdaptiveAvgPool2d(1)
        return nn.Sequential(pool, nn.Flatten(1))


def static_form(module: nn.Module) -> nn.Module:
    """The static (``[B, ...]``) ANN equivalent of a time-aware zoo layer: ``TimeFold(m) -> m``,
    blocks and time-aware layers through their ``ann_form()``, containers recursively."""
    if isinstance(module, TimeFold):
        return module.module
    own = getattr(module, "ann_form", None)
    if callable(own):
        return own()
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*[static_form(m) for m in module])
    if isinstance(module, nn.ReLU) or not any(True for _ in module.children()):
        if hasattr(module, "state"):  # a spiking neuron
            raise ConversionError(
                f"{type(module).__name__} has no ANN form; build with neuron='relu'"
            )
        return module
    raise ConversionError(f"{type(module).__name__} has no ANN form")


ModelFactory = Callable[..., SpikingModel]
