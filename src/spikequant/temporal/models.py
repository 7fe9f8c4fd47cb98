"""TTFS networks: an encoder followed by TTFS layers; the output is ``z = exp(t)`` per class.

Registered models (rebuilt by :func:`spikequant.checkpoint.load_model`):

* ``ttfs_fc(sizes=[784, 800, 10])`` - fully connected (Mostafa 2018 / paper FC baseline).
* ``ttfs_scnn(input_shape=[1, 28, 28], conv=[[32, 5, 2], [16, 5, 2]], num_classes=10)`` - the
  paper's MNIST SCNN(5,32,2)-SCNN(5,16,2)-FC10; ``pool`` inserts a pooling layer after each conv
  (``null``, ``"max"`` earliest-spike, ``"max_latest"`` or ``"avg"``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..registry import MODELS, register_model
from .layers import (
    TTFSAvgPool2d,
    TTFSConv2d,
    TTFSEncoder,
    TTFSFlatten,
    TTFSLinear,
    TTFSMaxPool2d,
    ttfs_weighted_layers,
)
from .solver import DEFAULT_Z_MAX


class TTFSNet(nn.Module):
    """``pixels -> encoder -> layers -> z_out [B, classes]``; prediction = ``argmin z_out``."""

    def __init__(
        self,
        encoder: TTFSEncoder,
        layers: list[nn.Module],
        input_shape: tuple[int, ...],
        z_max: float = DEFAULT_Z_MAX,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)
        self.z_max = float(z_max)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        if x.ndim >= 2 and x[0].numel() == _prod(self.input_shape):
            return x.reshape(x.shape[0], *self.input_shape)
        raise ShapeError(
            f"expected input [B, {', '.join(map(str, self.input_shape))}], got {tuple(x.shape)}"
        )

    def forward_z(self, z: torch.Tensor) -> torch.Tensor:
        """Run the layers on already-encoded input ``z`` (e.g. jittered spike times)."""
        return self.layers(self._check_input(z))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_z(self.encoder(self._check_input(pixels)))

    def layer_outputs(
        self, pixels: torch.Tensor, z_input: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``z`` after every dense/conv layer (the spiking neurons), input first excluded."""
        z = (
            self.encoder(self._check_input(pixels))
            if z_input is None
            else self._check_input(z_input)
        )
        outputs = []
        for layer in self.layers:
            z = layer(z)
            if isinstance(layer, (TTFSLinear, TTFSConv2d)):
                outputs.append(z)
        return outputs

    @staticmethod
    def predict(z_out: torch.Tensor) -> torch.Tensor:
        """Class of the earliest output spike."""
        return z_out.argmin(dim=1)

    def n_weights(self) -> int:
        """Synaptic weights including the bias inputs (what the energy model counts)."""
        return sum(
            layer.weight.numel() + layer.bias.numel() for layer in ttfs_weighted_layers(self)
        )


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _register(name: str):
    # Importing this module twice (e.g. reload in tests) must not fail on re-registration.
    def decorator(fn):
        if name in MODELS:
            return fn
        return register_model(fn, name=name, family="ttfs")

    return decorator


@_register("ttfs_fc")
def ttfs_fc(
    sizes=(784, 800, 10),
    alpha: float = 3.0,
    input_noise: float = 0.0,
    z_max: float = DEFAULT_Z_MAX,
    input_shape=None,
) -> TTFSNet:
    """Fully connected TTFS network; ``sizes`` = [inputs, hidden..., classes]."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"ttfs_fc sizes must list >= 2 positive layer widths, got {sizes}")
    layers = [TTFSLinear(a, b, z_max) for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
    shape = tuple(input_shape) if input_shape else (sizes[0],)
    if _prod(shape) != sizes[0]:
        raise ConfigError(f"ttfs_fc input_shape {shape} does not have {sizes[0]} elements")
    return TTFSNet(TTFSEncoder(alpha, input_noise), layers, shape, z_max)


_POOLS = {
    "max": lambda z_max: TTFSMaxPool2d(2, "earliest", z_max),
    "max_latest": lambda z_max: TTFSMaxPool2d(2, "latest", z_max),
    "avg": lambda z_max: TTFSAvgPool2d(2, z_max),
}


@_register("ttfs_scnn")
def ttfs_scnn(
    input_shape=(1, 28, 28),
    conv=((32, 5, 2), (16, 5, 2)),
    num_classes: int = 10,
    pool: str | None = None,
    alpha: float = 3.0,
    input_noise: float = 0.0,
    z_max: float = DEFAULT_Z_MAX,
) -> TTFSNet:
    """Spiking CNN: SCNN(k, C, s) layers [+ pooling] then FC(num_classes)."""
    if pool is not None and pool not in _POOLS:
        raise ConfigError(f"pool must be null or one of {sorted(_POOLS)}, got {pool!r}")
    channels, height, width = (int(s) for s in input_shape)
    layers: list[nn.Module] = []
    for spec in conv:
        if len(spec) != 3:
            raise ConfigError(f"each conv entry is [channels, kernel, stride], got {spec!r}")
        out_ch, kernel, stride = (int(v) for v in spec)
        layer = TTFSConv2d(channels, out_ch, kernel, stride, z_max)
        layers.append(layer)
        channels = out_ch
        height, width = layer.output_shape(height, width)
        if pool is not None:
            layers.append(_POOLS[pool](z_max))
            height, width = height // 2, width // 2
    layers += [TTFSFlatten(), TTFSLinear(channels * height * width, num_classes, z_max)]
    return TTFSNet(
        TTFSEncoder(alpha, input_noise), layers, (int(input_shape[0]), *input_shape[1:]), z_max
    )
