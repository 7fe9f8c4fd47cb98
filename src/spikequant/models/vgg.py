"""CIFAR-style VGG networks: 3x3 conv + BN + neuron blocks, average pooling, a linear read-out.

``vgg9`` is the SpQuant layout C64-C128-AP2-C256-C256-AP2-C512-C512-AP2-C512-C512-AP2-FC; on a
2x48x48 input its conv layers hold exactly 921,600 spiking neurons. ``vgg11`` and ``vgg16`` use the
usual CIFAR configurations with every max pooling replaced by average pooling (conversion to
spikes refuses max pooling). The classifier is a single linear layer on the flattened features.

``vgg9_lee`` is the VGG-9 of Lee et al. (2020), "Enabling spike-based backpropagation for training
deep neural network architectures" (Front. Neurosci. 14:119), used by the Ca-LIF paper:
C64-C64-AP2-C128-C128-AP2-C256-C256-C256-AP2-FC1024-FC (7 convs + 2 linear layers; BN after each
conv here, dropout left out); the hidden FC-1024 has a neuron like every other layer.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import Flatten, SpikingModel, avg_pool, conv_bn, linear, pair

POOL = "AP"
CONFIGS: dict[str, list[int | str]] = {
    "vgg9": [64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [
        64,
        64,
        POOL,
        128,
        128,
        POOL,
        256,
        256,
        256,
        POOL,
        512,
        512,
        512,
        POOL,
        512,
        512,
        512,
        POOL,
    ],
    "vgg9_lee": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL],
}
#: width of a spiking hidden FC layer before the read-out (the others read out directly)
HIDDEN_FC = {"vgg9_lee": 1024}


class VGG(SpikingModel):
    """VGG feature stack from a config list (ints are conv widths, ``"AP"`` is 2x2 avg pooling)."""

    def __init__(
        self,
        config: list[int | str],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=32,
        timesteps: int = 4,
        neuron: str = "atif_u",
        neuron_kwargs: dict | None = None,
        width: float = 1.0,
        hidden_fc: int | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        if not width > 0:
            raise ConfigError(f"width must be positive, got {width!r}")
        height, breadth = pair(input_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == POOL:
                if height < 2 or breadth < 2:
                    raise ConfigError(
                        f"input_size {input_size!r} is too small for this VGG: "
                        f"{config.count(POOL)} "
                        "2x2 poolings need at least 2**pools pixels per side"
                    )
                layers.append(avg_pool(2))
                height, breadth = height // 2, breadth // 2
            else:
                out = max(1, round(int(item) * width))
                layers += [conv_bn(channels, out), self.make_neuron(out)]
                channels = out
        layers.append(Flatten())
        channels *= height * breadth
        if hidden_fc:
            hidden = max(1, round(hidden_fc * width))
            layers += [linear(channels, hidden), self.make_neuron(hidden)]
            channels = hidden
        layers.append(linear(channels, num_classes))
        self.net = nn.Sequential(*layers)


def _vgg(name: str):
    def factory(**kwargs) -> VGG:
        return VGG(CONFIGS[name], hidden_fc=HIDDEN_FC.get(name), **kwargs)

    head = f"FC{HIDDEN_FC[name]} + linear read-out" if name in HIDDEN_FC else "linear read-out"
    factory.__doc__ = f"{name.upper()} (CIFAR-style, average pooling, {head}): " + " ".join(
        str(c) for c in CONFIGS[name]
    )
    return factory


for _name in CONFIGS:
    register_model(_vgg(_name), name=_name)
