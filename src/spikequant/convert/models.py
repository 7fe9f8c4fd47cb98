"""Small ANNs for conversion (plain Conv/BN/ReLU/AvgPool/Linear/add/flatten, torch.fx traceable).

Every factory takes ``qat`` (fake-quantized weights + LSQ quantized ReLU, see
:mod:`spikequant.quant.qat`), ``bits``, ``bn`` (BatchNorm after each conv; folded away after QAT)
and ``pool`` (``"avg"``; ``"max"`` exists only to show that conversion refuses it); with ``qat``,
``power_of_two_steps`` restricts the LSQ steps to powers of two (exact Ca-LIF hidden layers).
Inputs are images ``[B, C, H, W]`` in [0, 1]; outputs are logits ``[B, classes]``.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..quant.qat import QuantConv2d, QuantInput, QuantLinear, QuantReLU, check_bits
from ..registry import MODELS, register_model


class _Builder:
    def __init__(
        self, qat: bool, bits: int, bn: bool, pool: str, power_of_two_steps: bool = False
    ) -> None:
        if pool not in ("avg", "max"):
            raise ConfigError(f"pool must be 'avg' or 'max', got {pool!r}")
        if pool == "max" and qat:
            raise ConfigError("quantized (qat) models use average pooling only")
        self.qat, self.bits, self.bn, self.pool = bool(qat), check_bits(bits), bool(bn), pool
        self.power_of_two_steps = bool(power_of_two_steps)

    def conv(self, cin, cout, k=3, padding=1, stride=1):
        if self.qat:
            return QuantConv2d(cin, cout, k, padding=padding, stride=stride, bits=self.bits)
        return nn.Conv2d(cin, cout, k, padding=padding, stride=stride)

    def linear(self, fin, fout):
        return QuantLinear(fin, fout, bits=self.bits) if self.qat else nn.Linear(fin, fout)

    def act(self, pool: int = 1) -> list[nn.Module]:
        """ReLU (then pooling); the QAT ReLU pools its integer codes itself."""
        if self.qat:
            return [QuantReLU(self.bits, pool=pool, power_of_two=self.power_of_two_steps)]
        layers: list[nn.Module] = [nn.ReLU()]
        if pool > 1:
            layers.append(nn.AvgPool2d(pool) if self.pool == "avg" else nn.MaxPool2d(pool))
        return layers

    def conv_block(self, cin, cout, k=3, padding=1, pool=1):
        layers = [self.conv(cin, cout, k, padding)]
        if self.bn:
            layers.append(nn.BatchNorm2d(cout))
        return layers + self.act(pool)

    def head(self) -> list[nn.Module]:
        return [QuantInput()] if self.qat else []


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` with equal channels (identity shortcut)."""

    def __init__(self, b: _Builder, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *b.conv_block(channels, channels),
            b.conv(channels, channels),
            *([nn.BatchNorm2d(channels)] if b.bn else []),
        )
        self.out = b.act()[0]

    def forward(self, x):
        return self.out(x + self.body(x))


def _spec(**kwargs):
    return kwargs


@register_model(name="ann_mlp", family="ann")
def ann_mlp(
    in_shape=(1, 28, 28),
    hidden=(128, 64),
    num_classes=10,
    qat=False,
    bits=8,
    bn=False,
    pool="avg",
    power_of_two_steps=False,
):
    """MLP: flatten -> [Linear -> ReLU] * len(hidden) -> Linear (no BN)."""
    b = _Builder(qat, bits, False, pool, power_of_two_steps)
    fan_in = 1
    for d in in_shape:
        fan_in *= int(d)
    layers: list[nn.Module] = [*b.head(), nn.Flatten()]
    for width in hidden:
        layers += [b.linear(fan_in, int(width)), *b.act()]
        fan_in = int(width)
    layers.append(b.linear(fan_in, num_classes))
    return nn.Sequential(*layers)


@register_model(name="ann_lenet", family="ann")
def ann_lenet(
    in_channels=1, num_classes=10, qat=False, bits=8, bn=True, pool="avg", power_of_two_steps=False
):
    """LeNet-5 for 28x28: 6C5-AP2-16C5-AP2-FC120-FC84-FC10 (ReLU, average pooling)."""
    b = _Builder(qat, bits, bn, pool, power_of_two_steps)
    return nn.Sequential(
        *b.head(),
        *b.conv_block(in_channels, 6, 5, padding=2, pool=2),
        *b.conv_block(6, 16, 5, padding=0, pool=2),
        nn.Flatten(),
        b.linear(16 * 5 * 5, 120),
        *b.act(),
        b.linear(120, 84),
        *b.act(),
        b.linear(84, num_classes),
    )


@register_model(name="ann_cnn", family="ann")
def ann_cnn(
    in_channels=1,
    width=16,
    num_classes=10,
    qat=False,
    bits=8,
    bn=True,
    pool="avg",
    residual=False,
    image_size=28,
    power_of_two_steps=False,
):
    """VGG-style CNN: wC3-wC3-AP2-2wC3-AP2-[residual 2w block]-FC10 for 28x28 inputs."""
    b = _Builder(qat, bits, bn, pool, power_of_two_steps)
    layers = [
        *b.head(),
        *b.conv_block(in_channels, width, pool=1),
        *b.conv_block(width, width, pool=2),
        *b.conv_block(width, 2 * width, pool=2),
    ]
    if residual:
        layers.append(ResidualBlock(b, 2 * width))
    side = image_size // 4
    layers += [nn.Flatten(), b.linear(2 * width * side * side, num_classes)]
    return nn.Sequential(*layers)


@register_model(name="ann_resnet20", family="ann")
def ann_resnet20(in_channels=1, input_size=28, num_classes=10, width=0.5):
    """ResNet-20 (He et al.; ``width`` scales 16/32/64) as a static ANN for conversion (the ANN
    form of the zoo's ``resnet20`` with ``neuron="relu"``: residual adds, global avg pooling)."""
    from ..models.resnet import resnet20

    model = resnet20(
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
        timesteps=1,
        neuron="relu",
        width=width,
    )
    return model.ann_form()


@register_model(name="ann_zoo", family="ann")
def ann_zoo(
    arch="resnet20",
    in_channels=1,
    input_size=28,
    num_classes=10,
    qat=False,
    bits=8,
    bn=True,
    **arch_kwargs,
):
    """Any zoo network (``arch``: vgg9, vgg16, resnet11h, resnet20, resnet34, mobilenet20, ...) as
    a static ANN for conversion; ``arch_kwargs`` (e.g. ``width``) go to the zoo model.

    Float (``qat=False``): the zoo model's ANN form (BN kept; conversion folds it). With ``qat``:
    its QAT form (:func:`~spikequant.convert.quantize_for_calif`, ``bits``-bit weights and LSQ
    ReLUs, 8-bit input) with BN after each conv (``bn=True``, trained, then folded by the ``qat``
    method) or folded into the convs (``bn=False``: the model after folding)."""
    import torch

    from ..models.common import ANN_NEURON
    from ..registry import create_model
    from .qat_form import quantize_for_calif

    if arch not in MODELS or MODELS.family(arch) != "snn":
        raise ConfigError(f"ann_zoo: arch must be a zoo network (family snn), got {arch!r}")
    model = create_model(
        arch,
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
        timesteps=1,
        neuron=ANN_NEURON,
        **arch_kwargs,
    )
    if not qat:
        if not bn:
            raise ConfigError("ann_zoo: zoo networks have BN; bn=False applies to qat=True only")
        return model.ann_form()
    height, breadth = (input_size, input_size) if isinstance(input_size, int) else input_size
    example = torch.zeros(1, in_channels, height, breadth)
    return quantize_for_calif(model, example, bits=bits, fold_bn=not bn).train()


ANN_MODELS = ("ann_mlp", "ann_lenet", "ann_cnn", "ann_resnet20", "ann_zoo")
assert all(name in MODELS for name in ANN_MODELS)
