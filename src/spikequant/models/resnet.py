"""Spiking residual networks built from basic blocks (conv-BN-neuron-conv-BN, add, neuron).

* ``resnet18``: CIFAR ResNet-18 (3x3 stem 64, stages 2x64, 2x128, 2x256, 2x512, strides 1-2-2-2).
* ``resnet19``: the SpQuant / TET ResNet-19: stem 128 @32x32, stages 3x128 @32, 3x256 @16,
  2x512 @8, global average pooling, a spiking FC-256, then FC-num_classes. On a 32x32 input it
  holds exactly 1,442,048 spiking neurons (two per block position plus the stem and the FC-256).
* ``resnet20``: He et al.'s CIFAR ResNet-20 (stem 16, stages 3x16, 3x32, 3x64).
* ``resnet8_kws``: Tang & Lin's res8 for keyword spotting on MFCC maps ``[1, frames, coeffs]``
  (stem 45, avg pool (4, 3), three 45-channel blocks); BN is added after every conv.

A block computes ``out = N2( BN(conv(N1(BN(conv(x))))) + shortcut(x) )`` with ``N1``, ``N2`` neurons
and ``shortcut`` the identity or a strided 1x1 conv + BN when the shape changes. The residual sum
is a membrane input, so the block output is spikes like every other layer's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import GlobalAvgPool, SpikingModel, TimeFold, conv_bn, linear, pair, static_form


class ResidualANN(nn.Module):
    """ANN form of a residual block: ``out(body(x) + shortcut(x))``."""

    def __init__(self, body: nn.Module, shortcut: nn.Module, out: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """Residual block ``neuron(conv_bn(neuron(conv_bn(x))) + shortcut(x))`` over ``[T, B, C, H,
    W]``."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, make_neuron: Callable[[int], nn.Module]
    ):
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride)
        self.neuron1 = make_neuron(out_ch)
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1)
        self.shortcut = (
            conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.neuron2 = make_neuron(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.neuron1(self.conv1(x)))
        return self.neuron2(out + self.shortcut(x))

    def ann_form(self) -> ResidualANN:
        body = nn.Sequential(
            static_form(self.conv1), static_form(self.neuron1), static_form(self.conv2)
        )
        return ResidualANN(body, static_form(self.shortcut), static_form(self.neuron2))


class ResNet(SpikingModel):
    """Stem conv (+ optional avg pool), stages of basic blocks, global avg pool, head."""

    def __init__(
        self,
        *,
        stem_width: int,
        stage_widths: list[int],
        stage_blocks: list[int],
        stage_strides: list[int],
        hidden_fc: int | None = None,
        stem_pool: tuple[int, int] | None = None,
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
        stem_width = max(1, round(stem_width * width))
        stage_widths = [max(1, round(w * width)) for w in stage_widths]
        if hidden_fc:
            hidden_fc = max(1, round(hidden_fc * width))
        height, breadth = pair(input_size)
        layers: list[nn.Module] = [conv_bn(in_channels, stem_width), self.make_neuron(stem_width)]
        if stem_pool is not None:
            if height < stem_pool[0] or breadth < stem_pool[1]:
                raise ConfigError(
                    f"input_size {input_size!r} is smaller than the pooling {stem_pool}"
                )
            layers.append(TimeFold(nn.AvgPool2d(stem_pool)))
        channels = stem_width
        for width, blocks, stride in zip(stage_widths, stage_blocks, stage_strides, strict=True):
            for i in range(blocks):
                layers.append(
                    BasicBlock(channels, width, stride if i == 0 else 1, self.make_neuron)
                )
                channels = width
        layers.append(GlobalAvgPool())
        if hidden_fc:
            layers += [linear(channels, hidden_fc), self.make_neuron(hidden_fc)]
            channels = hidden_fc
        layers.append(linear(channels, num_classes))
        self.net = nn.Sequential(*layers)


@register_model(name="resnet18")
def resnet18(**kwargs) -> ResNet:
    """ResNet-18, CIFAR stem: stages 2x64, 2x128, 2x256, 2x512 (ATIF paper, CIFAR and GSC);
    ``width`` scales every layer."""
    return ResNet(
        stem_width=64,
        stage_widths=[64, 128, 256, 512],
        stage_blocks=[2, 2, 2, 2],
        stage_strides=[1, 2, 2, 2],
        **kwargs,
    )


@register_model(name="resnet19")
def resnet19(**kwargs) -> ResNet:
    """ResNet-19 (SpQuant / TET): stem 128, stages 3x128, 3x256, 2x512, spiking FC-256."""
    return ResNet(
        stem_width=128,
        stage_widths=[128, 256, 512],
        stage_blocks=[3, 3, 2],
        stage_strides=[1, 2, 2],
        hidden_fc=256,
        **kwargs,
    )


@register_model(name="resnet20")
def resnet20(**kwargs) -> ResNet:
    """ResNet-20 (He et al. CIFAR): stem 16, stages 3x16, 3x32, 3x64."""
    return ResNet(
        stem_width=16,
        stage_widths=[16, 32, 64],
        stage_blocks=[3, 3, 3],
        stage_strides=[1, 2, 2],
        **kwargs,
    )


@register_model(name="resnet8_kws")
def resnet8_kws(**kwargs) -> ResNet:
    """ResNet-8 for KWS on MFCC maps [1, frames, coeffs]: stem 45, pool 4x3, 3 blocks"""
    kwargs.setdefault("num_classes", 35)
    kwargs.setdefault("in_channels", 1)
    kwargs.setdefault("input_size", (48, 10))
    width = kwargs.pop("width", 45)
    pool = kwargs.pop("stem_pool", (4, 3))
    return ResNet(
        stem_width=width,
        stage_widths=[width],
        stage_blocks=[3],
        stage_strides=[1],
        stem_pool=tuple(pool),
        **kwargs,
    )
