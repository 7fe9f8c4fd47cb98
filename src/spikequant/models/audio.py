"""M5 (Dai et al. 2017): a 1-D convolutional network on raw audio ``[B, 1, samples]``.

Layout: Conv1d(80, stride 4, ``width``) - AP4 - Conv1d(3, ``width``) - AP4 - Conv1d(3,
2 ``width``) - AP4 - Conv1d(3, 4 ``width``) - global average pooling - FC, with BN and a neuron
after every convolution (``width = 128`` in the paper; average pooling instead of its max
pooling, which spikes cannot carry). The default input is 1 s at 8 kHz (``input_size=8000``).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .common import GlobalAvgPool, SpikingModel, TimeFold, check_positive_int, conv1d_bn, linear


class M5(SpikingModel):
    """M5 on raw audio ``[B, 1, samples]``: Conv1d layers with average pooling, global average
    pooling and a linear read-out (see :func:`m5`)."""

    def __init__(
        self,
        *,
        num_classes: int = 35,
        in_channels: int = 1,
        input_size: int = 8000,
        timesteps: int = 4,
        neuron: str = "atif_u",
        neuron_kwargs: dict | None = None,
        width: int = 128,
        stem_kernel: int = 80,
        stem_stride: int = 4,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
            static_ndim=3,
        )
        length = check_positive_int("input_size", input_size)
        width = check_positive_int("width", width)
        length = (length - stem_kernel) // stem_stride + 1
        for _ in range(3):
            length //= 4
        if length < 1:
            raise ConfigError(
                f"input_size {input_size} is too short for M5 (stem {stem_kernel}/{stem_stride} "
                "and three 4x poolings need at least "
                f"{stem_kernel + 63 * stem_stride} samples)"
            )
        stem = TimeFold(
            nn.Sequential(
                nn.Conv1d(in_channels, width, stem_kernel, stride=stem_stride, bias=False),
                nn.BatchNorm1d(width),
            )
        )
        self.net = nn.Sequential(
            stem,
            self.make_neuron(width),
            TimeFold(nn.AvgPool1d(4)),
            conv1d_bn(width, width),
            self.make_neuron(width),
            TimeFold(nn.AvgPool1d(4)),
            conv1d_bn(width, 2 * width),
            self.make_neuron(2 * width),
            TimeFold(nn.AvgPool1d(4)),
            conv1d_bn(2 * width, 4 * width),
            self.make_neuron(4 * width),
            GlobalAvgPool(spatial_dims=1),
            linear(4 * width, num_classes),
        )


@register_model(name="m5")
def m5(**kwargs) -> M5:
    """M5 on raw audio [B, 1, samples]: Conv1d 80/4 and three Conv1d 3, AP4, GAP, FC."""
    return M5(**kwargs)
