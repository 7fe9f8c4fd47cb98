"""Small models for the bundled digits: ``cnn_digits`` (28x28 or 8x8 images) and ``mlp``.

``cnn_digits``: C(w1)-AP2-C(w2)-AP2-FC(hidden)-FC(classes) with 3x3 convs, BN and a neuron after
every hidden layer (``w1, w2, hidden = 16, 32, 128`` by default): about 0.21 M weights, fast
enough to train at T = 4 on two CPU cores in a few seconds per epoch. ``norm=False`` drops the
batch norms (conv/linear with bias instead): then nothing but the neuron's threshold sets the
scale at which a layer's input is quantized, which is the setting the ATIF ablation isolates.
``mlp``: flatten, ``hidden`` linear + BN + neuron layers, linear read-out.
"""

from __future__ import annotations

from math import prod

from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import Flatten, SpikingModel, TimeFold, avg_pool, conv_bn, linear, pair


def _linear_bn(in_features: int, out_features: int, norm: bool = True) -> TimeFold:
    if not norm:
        return linear(in_features, out_features)
    return TimeFold(
        nn.Sequential(
            nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features)
        )
    )


def _conv(in_ch: int, out_ch: int, norm: bool) -> TimeFold:
    return conv_bn(in_ch, out_ch) if norm else TimeFold(nn.Conv2d(in_ch, out_ch, 3, padding=1))


class DigitsCNN(SpikingModel):
    """Small spiking CNN for digits: two ``conv -> BN -> neuron -> avg-pool`` stages, a hidden
    ``linear -> neuron`` layer and a linear readout (registered as ``cnn_digits``)."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size=28,
        timesteps: int = 4,
        neuron: str = "atif_u",
        neuron_kwargs: dict | None = None,
        widths: tuple[int, int] | list[int] = (16, 32),
        hidden: int = 128,
        norm: bool = True,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        height, breadth = pair(input_size)
        if height < 4 or breadth < 4:
            raise ConfigError(f"cnn_digits needs inputs of at least 4x4, got {input_size!r}")
        w1, w2 = (int(w) for w in widths)
        self.net = nn.Sequential(
            _conv(in_channels, w1, norm),
            self.make_neuron(w1),
            avg_pool(2),
            _conv(w1, w2, norm),
            self.make_neuron(w2),
            avg_pool(2),
            Flatten(),
            _linear_bn(w2 * (height // 4) * (breadth // 4), hidden, norm),
            self.make_neuron(hidden),
            linear(hidden, num_classes),
        )


class MLP(SpikingModel):
    """Spiking MLP: flatten, then ``Linear -> BN -> neuron`` per hidden layer, then a linear
    readout (registered as ``mlp``)."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size=28,
        timesteps: int = 4,
        neuron: str = "atif_u",
        neuron_kwargs: dict | None = None,
        hidden: list[int] | tuple[int, ...] = (256, 128),
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        features = in_channels * prod(pair(input_size))
        layers: list[nn.Module] = [Flatten()]
        for width in hidden:
            layers += [_linear_bn(features, int(width)), self.make_neuron(int(width))]
            features = int(width)
        layers.append(linear(features, num_classes))
        self.net = nn.Sequential(*layers)


@register_model(name="cnn_digits")
def cnn_digits(**kwargs) -> DigitsCNN:
    """Small CNN for 28x28 digits: C16-AP2-C32-AP2-FC128-FC10 (3x3 convs, BN, avg pooling)."""
    return DigitsCNN(**kwargs)


@register_model(name="mlp")
def mlp(**kwargs) -> MLP:
    """MLP: flatten, hidden linear + BN + neuron layers (default 256, 128), linear read-out."""
    return MLP(**kwargs)
