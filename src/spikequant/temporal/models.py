"""TTFS networks: an encoder followed by TTFS layers; the output is ``z = exp(t)`` per class.

Registered models (rebuilt by :func:`spikequant.checkpoint.load_model`):

* ``ttfs_fc(sizes=[784, 800, 10])`` - fully connected (Mostafa 2018 / paper FC baseline).
* ``ttfs_scnn(input_shape=[1, 28, 28], conv=[[32, 5, 2], [16, 5, 2]], num_classes=10)`` - the
  paper's MNIST SCNN(5,32,2)-SCNN(5,16,2)-FC10; ``pool`` inserts a pooling layer after each conv
  (``null``, ``"max"`` earliest-spike, ``"max_latest"`` or ``"avg"``).
* ``ttfs_vgg16(input_shape=[3, 32, 32], features=[64, 64, "M", ...], fc=[4096, 4096, 512])`` - the
  paper's CIFAR-10 SpikingVGG16: 3x3 SCNN layers and 2x2 earliest-spike pooling wherever
  ``features`` puts them, then spiking FC layers; ``width`` scales every hidden layer.
* ``ttfs_googlenet(input_shape=[3, 224, 224], num_classes=1000)`` - the paper's ImageNet
  SpikingGoogleNet: GoogLeNet (Szegedy et al. 2015) with SCNN/FC layers, inception blocks whose
  four branches' spike times are concatenated along channels, earliest-spike max pooling.

Every model takes ``init``: ``"paper"`` (default, ``U[0, 8 / (N_in + 1)]``) or ``"signed"``
(hidden rows summing to ``init_row_sum`` with a zero-sum part of spread ``init_row_sum - 1``), which
keeps deep stacks from collapsing to one signal per layer
(:func:`spikequant.temporal.layers.init_weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..registry import MODELS, register_model
from .layers import (
    TTFSAvgPool2d,
    TTFSConcat,
    TTFSConv2d,
    TTFSEncoder,
    TTFSFlatten,
    TTFSGlobalPool2d,
    TTFSLinear,
    TTFSMaxPool2d,
    init_weights,
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
        """``z`` after every dense/conv layer (the spiking neurons) in the order they run, input
        excluded; branches of an inception block count as their own layers. The last entry is
        the output layer."""
        z = (
            self.encoder(self._check_input(pixels))
            if z_input is None
            else self._check_input(z_input)
        )
        outputs: list[torch.Tensor] = []
        handles = [
            layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
            for layer in ttfs_weighted_layers(self)
        ]
        try:
            self.layers(z)
        finally:
            for handle in handles:
                handle.remove()
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
    init: str = "paper",
    init_row_sum: float = 4.0,
) -> TTFSNet:
    """Fully connected TTFS network; ``sizes`` = [inputs, hidden..., classes]."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"ttfs_fc sizes must list >= 2 positive layer widths, got {sizes}")
    layers = [TTFSLinear(a, b, z_max) for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
    shape = tuple(input_shape) if input_shape else (sizes[0],)
    if _prod(shape) != sizes[0]:
        raise ConfigError(f"ttfs_fc input_shape {shape} does not have {sizes[0]} elements")
    return _network(TTFSEncoder(alpha, input_noise), layers, shape, z_max, init, init_row_sum)


def _network(
    encoder: TTFSEncoder, layers: list, input_shape, z_max: float, init: str, init_row_sum: float
) -> TTFSNet:
    """The :class:`TTFSNet` of ``layers`` with the weights of ``init`` (the signed init spreads
    rows by ``R - 1``)."""
    net = TTFSNet(encoder, layers, input_shape, z_max)
    return init_weights(net, init, init_row_sum, init_row_sum - 1)


_POOLS = {
    "max": lambda z_max, padding="valid": TTFSMaxPool2d(2, "earliest", z_max, padding=padding),
    "max_latest": lambda z_max, padding="valid": TTFSMaxPool2d(2, "latest", z_max, padding=padding),
    "avg": lambda z_max, padding="valid": TTFSAvgPool2d(2, z_max, padding=padding),
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
    init: str = "paper",
    init_row_sum: float = 4.0,
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
    shape = (int(input_shape[0]), *input_shape[1:])
    return _network(TTFSEncoder(alpha, input_noise), layers, shape, z_max, init, init_row_sum)


def _scaled(channels, width: float) -> int:
    """A hidden width times the multiplier ``width``, at least 1."""
    return max(1, int(round(int(channels) * float(width))))


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"width must be a number > 0, got {width!r}")
    return float(width)


VGG16_FEATURES = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
    512, 512, 512, "M", 1024, 1024, 1024, "M",
)  # fmt: skip
VGG16_FC = (4096, 4096, 512)


@_register("ttfs_vgg16")
def ttfs_vgg16(
    input_shape=(3, 32, 32),
    features=VGG16_FEATURES,
    fc=VGG16_FC,
    num_classes: int = 10,
    width: float = 1.0,
    kernel_size: int = 3,
    alpha: float = 3.0,
    input_noise: float = 0.0,
    bright_first: bool = True,
    z_max: float = DEFAULT_Z_MAX,
    init: str = "paper",
    init_row_sum: float = 4.0,
) -> TTFSNet:
    """SpikingVGG16 (paper, Table 1): ``features`` lists SCNN(k, C, 1) layers by their channels
    ``C`` and pooling layers by name, anywhere: ``"M"``/``"max"`` (2x2 earliest spike),
    ``"max_latest"`` or ``"avg"``; then FC layers ``fc`` and FC(num_classes).

    The default is the paper's 13 SCNN layers (64 ... 1024 channels) with five max-pooling
    layers, FC(4096)-FC(4096)-FC(512)-FC(10). ``width`` scales every conv and hidden FC width.
    Pooling windows use SAME padding (``out = ceil(size / 2)``, padded positions silent), so any
    input size works; on 32x32 inputs that is the plain 2x2 pooling. ``bright_first=False``
    encodes ``t = alpha p`` (the paper's CIFAR-10 rule) instead of ``alpha (1 - p)``.
    """
    width = _check_width(width)
    channels, height, w = (int(s) for s in input_shape)
    layers: list[nn.Module] = []
    for item in features:
        if isinstance(item, str):
            name = "max" if item == "M" else item
            if name not in _POOLS:
                raise ConfigError(
                    f"ttfs_vgg16 features: a pooling entry is 'M' or one of {sorted(_POOLS)}, "
                    f"got {item!r}"
                )
            pool = _POOLS[name](z_max, "same")
            layers.append(pool)
            height, w = pool.output_shape(height, w)
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            conv = TTFSConv2d(channels, _scaled(item, width), kernel_size, 1, z_max)
            layers.append(conv)
            channels = conv.out_channels
        else:
            raise ConfigError(
                f"ttfs_vgg16 features lists conv channels (integers >= 1) and pooling names, "
                f"got {item!r}"
            )
    fan_in = channels * height * w
    layers.append(TTFSFlatten())
    for units in fc:
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ConfigError(f"ttfs_vgg16 fc lists layer widths (integers >= 1), got {units!r}")
        layers.append(TTFSLinear(fan_in, _scaled(units, width), z_max))
        fan_in = layers[-1].out_features
    layers.append(TTFSLinear(fan_in, int(num_classes), z_max))
    encoder = TTFSEncoder(alpha, input_noise, bright_first)
    shape = tuple(int(s) for s in input_shape)
    return _network(encoder, layers, shape, z_max, init, init_row_sum)


# GoogLeNet (Szegedy et al. 2015, Table 1): the stem as [channels, kernel, stride] SCNN layers
# and "M" (3x3 stride-2 max pooling), then inception blocks
# [#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj] and "M" between stages 3-4 and 4-5.
GOOGLENET_STEM = ([64, 7, 2], "M", [64, 1, 1], [192, 3, 1], "M")
GOOGLENET_BLOCKS = (
    [64, 96, 128, 16, 32, 32],  # 3a
    [128, 128, 192, 32, 96, 64],  # 3b
    "M",
    [192, 96, 208, 16, 48, 64],  # 4a
    [160, 112, 224, 24, 64, 64],  # 4b
    [128, 128, 256, 24, 64, 64],  # 4c
    [112, 144, 288, 32, 64, 64],  # 4d
    [256, 160, 320, 32, 128, 128],  # 4e
    "M",
    [256, 160, 320, 32, 128, 128],  # 5a
    [384, 192, 384, 48, 128, 128],  # 5b
)


def _earliest_pool(z_max: float, stride: int) -> TTFSMaxPool2d:
    return TTFSMaxPool2d(3, "earliest", z_max, stride=stride, padding="same")


def ttfs_inception(in_channels: int, spec, z_max: float = DEFAULT_Z_MAX) -> TTFSConcat:
    """An inception block of SCNN layers: branches 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 stride-1
    earliest-spike max pooling -> 1x1; their spike times concatenated along channels.
    ``spec = [#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj]``."""
    if len(spec) != 6 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in spec):
        raise ConfigError(
            "an inception block is [#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj] "
            f"(integers >= 1), got {spec!r}"
        )
    c1, c3r, c3, c5r, c5, pool_proj = spec
    return TTFSConcat(
        [
            [TTFSConv2d(in_channels, c1, 1, 1, z_max)],
            [TTFSConv2d(in_channels, c3r, 1, 1, z_max), TTFSConv2d(c3r, c3, 3, 1, z_max)],
            [TTFSConv2d(in_channels, c5r, 1, 1, z_max), TTFSConv2d(c5r, c5, 5, 1, z_max)],
            [_earliest_pool(z_max, 1), TTFSConv2d(in_channels, pool_proj, 1, 1, z_max)],
        ]
    )


@_register("ttfs_googlenet")
def ttfs_googlenet(
    input_shape=(3, 224, 224),
    num_classes: int = 1000,
    width: float = 1.0,
    stem=GOOGLENET_STEM,
    blocks=GOOGLENET_BLOCKS,
    global_pool: str = "avg",
    alpha: float = 3.0,
    input_noise: float = 0.0,
    bright_first: bool = True,
    z_max: float = DEFAULT_Z_MAX,
    init: str = "paper",
    init_row_sum: float = 4.0,
) -> TTFSNet:
    """SpikingGoogleNet (paper): GoogLeNet's conv/FC layers as SCNN/FC layers.

    ``stem``: ``[channels, kernel, stride]`` SCNN layers and ``"M"`` (3x3 stride-2 earliest-spike
    max pooling, SAME padding); ``blocks``: inception blocks
    ``[#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj]`` (see :func:`ttfs_inception`) and
    ``"M"``; then a global pooling over the feature map (``"avg"``: mean ``z`` of the spiking
    positions, as GoogLeNet's average pooling; ``"earliest"``: the first spike) and
    FC(num_classes). ``width`` scales every channel count; ``bright_first`` picks the input
    encoding (see :class:`TTFSEncoder`). Not modelled: local response normalisation, dropout and
    the two auxiliary classifiers (training-only heads).
    """
    width = _check_width(width)
    channels, height, w = (int(s) for s in input_shape)
    layers: list[nn.Module] = []

    def pool() -> None:
        nonlocal height, w
        layers.append(_earliest_pool(z_max, 2))
        height, w = layers[-1].output_shape(height, w)

    for item in stem:
        if item == "M":
            pool()
            continue
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ConfigError(f"a stem entry is [channels, kernel, stride] or 'M', got {item!r}")
        out_ch, kernel, stride = (int(v) for v in item)
        conv = TTFSConv2d(channels, _scaled(out_ch, width), kernel, stride, z_max)
        layers.append(conv)
        channels = conv.out_channels
        height, w = conv.output_shape(height, w)
    for item in blocks:
        if item == "M":
            pool()
            continue
        if not isinstance(item, (list, tuple)):
            raise ConfigError(f"a block is an inception spec (6 integers) or 'M', got {item!r}")
        block = ttfs_inception(channels, [_scaled(c, width) for c in item], z_max)
        layers.append(block)
        channels = sum(branch[-1].out_channels for branch in block.branches)
    layers += [TTFSGlobalPool2d(global_pool, z_max), TTFSLinear(channels, int(num_classes), z_max)]
    encoder = TTFSEncoder(alpha, input_noise, bright_first)
    shape = tuple(int(s) for s in input_shape)
    return _network(encoder, layers, shape, z_max, init, init_row_sum)
