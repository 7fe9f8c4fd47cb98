"""MobileNet-style spiking networks of depthwise-separable blocks (average pooling, BN, neurons).

A depthwise-separable block is ``N(BN(pw1x1(N(BN(dw3x3(x))))))``: a 3x3 depthwise convolution
(``groups = channels``, stride 1 or 2), a neuron, a 1x1 pointwise convolution, a neuron.

* ``mobilenet_v1``: Howard et al.'s MobileNet-V1 with the CIFAR stem (3x3 conv 32, stride 1):
  blocks 64, 128/2, 128, 256/2, 256, 512/2, 5x512, 1024/2, 1024, global average pooling, FC.
* ``mobilenet20``: the Ca-LIF paper's MobileNet-20, "a reduced version of MobileNetV1 with the
  original 16th-23rd conv layers removed": MobileNet-V1 (CIFAR stem) without four of its five
  stride-1 512 blocks (conv layers 16-23 are their depthwise and pointwise convs): stem 32,
  blocks 64, 128/2, 128, 256/2, 256, 512/2, 512, 1024/2, 1024, global average pooling, FC --
  1 + 18 convolutions + 1 linear = 20 weight layers.

``width`` scales every layer (0.25 gives a model that trains on two CPU cores).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import GlobalAvgPool, SpikingModel, TimeFold, conv_bn, linear, pair


def depthwise_bn(channels: int, stride: int) -> TimeFold:
    """3x3 depthwise conv (one filter per channel, no bias) + BatchNorm."""
    return TimeFold(
        nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
        )
    )


class MobileNet(SpikingModel):
    """Stem conv, depthwise-separable blocks ``(out_channels, stride)``, global avg pool, FC."""

    def __init__(
        self,
        *,
        stem_width: int,
        blocks: list[tuple[int, int]],
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=32,
        timesteps: int = 4,
        neuron: str = "atif_u",
        neuron_kwargs: dict | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        if not (isinstance(width, (int, float)) and width > 0):
            raise ConfigError(f"width must be a positive number, got {width!r}")
        height, breadth = pair(input_size)
        channels = max(1, round(stem_width * width))
        layers: list[nn.Module] = [conv_bn(in_channels, channels), self.make_neuron(channels)]
        for out, stride in blocks:
            out = max(1, round(out * width))
            layers += [
                depthwise_bn(channels, stride),
                self.make_neuron(channels),
                conv_bn(channels, out, kernel=1),
                self.make_neuron(out),
            ]
            channels = out
            height, breadth = (height + stride - 1) // stride, (breadth + stride - 1) // stride
        layers += [GlobalAvgPool(), linear(channels, num_classes)]
        self.net = nn.Sequential(*layers)


V1_BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
]
#: MobileNet-V1's blocks without blocks 8-11 (its conv layers 16-23): one stride-1 512 block left
M20_BLOCKS = V1_BLOCKS[:7] + V1_BLOCKS[11:]


@register_model(name="mobilenet_v1")
def mobilenet_v1(**kwargs) -> MobileNet:
    """MobileNet-V1 (CIFAR stem): 13 depthwise-separable blocks 64..1024, GAP, FC."""
    return MobileNet(stem_width=32, blocks=V1_BLOCKS, **kwargs)


@register_model(name="mobilenet20")
def mobilenet20(**kwargs) -> MobileNet:
    """MobileNet-20 (Ca-LIF paper): MobileNet-V1 without its conv layers 16-23, GAP, FC."""
    return MobileNet(stem_width=32, blocks=M20_BLOCKS, **kwargs)
