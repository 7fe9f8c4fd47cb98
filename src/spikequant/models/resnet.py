"""Spiking residual networks built from basic blocks (conv-BN-neuron-conv-BN, add, neuron).

* ``resnet18``: CIFAR ResNet-18 (3x3 stem 64, stages 2x64, 2x128, 2x256, 2x512, strides 1-2-2-2).
* ``resnet19``: the SpQuant / TET ResNet-19: stem 128 @32x32, stages 3x128 @32, 3x256 @16,
  2x512 @8, global average pooling, a spiking FC-256, then FC-num_classes. On a 32x32 input it
  holds exactly 1,442,048 spiking neurons (two per block position plus the stem and the FC-256).
* ``resnet20``: He et al.'s CIFAR ResNet-20 (stem 16, stages 3x16, 3x32, 3x64).
* ``resnet34``: He et al.'s ImageNet ResNet-34 (7x7 stride-2 stem 64, stages 3x64, 4x128, 6x256,
  3x512 with strides 1-2-2-2) with the stem's 3x3 max pooling replaced by a 2x2 average pooling
  (conversion refuses max pooling; same 56x56 map on a 224x224 input).
* ``resnet11h``: the ResNet-11 of Lee et al. (2020) at half width, as in the Ca-LIF paper
  (layer list in its docstring).
* ``resnet8_kws``: Tang & Lin's res8 for keyword spotting on MFCC maps ``[1, frames, coeffs]``
  (stem 45, avg pool (4, 3), three 45-channel blocks); BN is added after every conv.

A block computes ``out = N2( BN(conv(N1(BN(conv(x))))) + shortcut(x) )`` with ``N1``, ``N2`` neurons
and ``shortcut`` the identity or a strided 1x1 conv + BN when the shape changes. The stride sits on
the first conv (He et al.) or, with ``stride_first=False``, on the second (Lee et al.). The
residual sum is a membrane input, so the block output is spikes like every other layer's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import (
    Flatten,
    GlobalAvgPool,
    SpikingModel,
    TimeFold,
    conv_bn,
    linear,
    pair,
    static_form,
)


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
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        make_neuron: Callable[[int], nn.Module],
        stride_first: bool = True,
    ):
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride if stride_first else 1)
        self.neuron1 = make_neuron(out_ch)
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1 if stride_first else stride)
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
    """Stem conv (+ optional avg pool), stages of basic blocks, then global average pooling (or,
    with ``flatten_head``, the flattened feature map), an optional spiking FC, the read-out.

    ``stem_kernel``/``stem_stride`` set the stem conv (3/1: CIFAR; 7/2: ImageNet), ``stem_pool``
    a non-overlapping average pooling after the stem neuron, ``stride_first`` where each block
    puts its stride (see :class:`BasicBlock`)."""

    def __init__(
        self,
        *,
        stem_width: int,
        stage_widths: list[int],
        stage_blocks: list[int],
        stage_strides: list[int],
        hidden_fc: int | None = None,
        stem_pool: tuple[int, int] | None = None,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        stride_first: bool = True,
        flatten_head: bool = False,
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
        layers: list[nn.Module] = [
            conv_bn(in_channels, stem_width, stem_kernel, stem_stride),
            self.make_neuron(stem_width),
        ]
        # conv output side with padding k // 2: ceil(side / stride) for odd k
        height, breadth = -(-height // stem_stride), -(-breadth // stem_stride)
        if stem_pool is not None:
            if height < stem_pool[0] or breadth < stem_pool[1]:
                raise ConfigError(
                    f"input_size {input_size!r} is too small for the stem's pooling {stem_pool}"
                )
            layers.append(TimeFold(nn.AvgPool2d(stem_pool)))
            height, breadth = height // stem_pool[0], breadth // stem_pool[1]
        channels = stem_width
        for width, blocks, stride in zip(stage_widths, stage_blocks, stage_strides, strict=True):
            for i in range(blocks):
                layers.append(
                    BasicBlock(
                        channels, width, stride if i == 0 else 1, self.make_neuron, stride_first
                    )
                )
                channels = width
            height, breadth = -(-height // stride), -(-breadth // stride)
        if flatten_head:
            layers.append(Flatten())
            channels *= height * breadth
        else:
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


@register_model(name="resnet34")
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (He et al. ImageNet): 7x7/2 stem 64, 2x2 avg pool, stages 3x64, 4x128, 6x256,
    3x512.

    The stem's 3x3/2 max pooling of the original is a 2x2 average pooling here (the same 56x56
    map on a 224x224 input; conversion refuses max pooling and Ca-LIF pools non-overlapping
    windows). ``width`` scales every layer; ``input_size`` defaults to 224.
    """
    kwargs.setdefault("input_size", 224)
    kwargs.setdefault("num_classes", 1000)
    return ResNet(
        stem_width=64,
        stage_widths=[64, 128, 256, 512],
        stage_blocks=[3, 4, 6, 3],
        stage_strides=[1, 2, 2, 2],
        stem_kernel=7,
        stem_stride=2,
        stem_pool=(2, 2),
        **kwargs,
    )


@register_model(name="resnet11h")
def resnet11h(**kwargs) -> ResNet:
    """ResNet-11H (Ca-LIF paper): Lee et al.'s ResNet-11 with half the channels in every conv.

    ResNet-11 as defined in Lee et al. (2020), "Enabling spike-based backpropagation for training
    deep neural network architectures" (Front. Neurosci. 14:119), in its CIFAR-10 code; halved:

    ====  ==========================================  ===========================  =======
    #     layer                                       shortcut                     32x32 in
    ====  ==========================================  ===========================  =======
    1     3x3 conv 32, avg pool 2x2                                                16x16
    2-3   3x3 conv 64, 3x3 conv 64                    1x1 conv 64                  16x16
    4-5   3x3 conv 128, 3x3 conv 128 (stride 2)       1x1 conv 128, stride 2       8x8
    6-7   3x3 conv 256, 3x3 conv 256                  1x1 conv 256                 8x8
    8-9   3x3 conv 256, 3x3 conv 256 (stride 2)       1x1 conv 256, stride 2       4x4
    10    FC 1024 on the flattened 256x4x4 map
    11    FC num_classes
    ====  ==========================================  ===========================  =======

    Each block adds its shortcut to the second conv before the neuron (residual add). Two
    departures from Lee et al.: BN follows every conv (the Ca-LIF paper trains with BN, folded
    before conversion) and the last block's shortcut is a strided 1x1 conv instead of plain
    subsampling (a stride-2 1x1 average pooling, which conversion does not take). The FC-1024 is
    not a conv layer and keeps its width. ``width`` scales every layer (the FC-1024 too).
    """
    return ResNet(
        stem_width=32,
        stage_widths=[64, 128, 256, 256],
        stage_blocks=[1, 1, 1, 1],
        stage_strides=[1, 2, 1, 2],
        stem_pool=(2, 2),
        stride_first=False,
        flatten_head=True,
        hidden_fc=1024,
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
