"""Benchmark networks, built identically around any library's LIF layer.

Convolutions, BatchNorm, pooling and the classifier are plain PyTorch modules applied to all
timesteps at once (time folded into the batch, SpikingJelly's multi-step style); only the spiking
layers differ between libraries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spikequant.layers import TimeFold
from spikequant.neurons import reset_state

NeuronFactory = Callable[[], nn.Module]

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    return TimeFold(
        nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )
    )


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def three_conv_cnn(neuron: NeuronFactory, channels=(32, 64, 128), classes: int = 10):
    """(conv-BN-LIF, 2x2 average pool) x3 and a linear read-out, for 32x32 inputs."""
    torch.manual_seed(0)
    c1, c2, c3 = channels
    return nn.Sequential(
        conv_bn(3, c1),
        neuron(),
        TimeFold(nn.AvgPool2d(2)),
        conv_bn(c1, c2),
        neuron(),
        TimeFold(nn.AvgPool2d(2)),
        conv_bn(c2, c3),
        neuron(),
        TimeFold(nn.AvgPool2d(2)),
        TimeFold(nn.Flatten()),
        TimeFold(nn.Linear(c3 * 4 * 4, classes)),
    )


def vgg11(neuron: NeuronFactory, classes: int = 10, width: float = 1.0):
    """VGG-11 (CIFAR layout: 8 conv-BN-LIF, average pooling, one linear layer) for 32x32 inputs;
    ``width`` scales every layer's channels (tests run it narrow)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    cin = 3
    for item in VGG11:
        if item == "M":
            layers.append(TimeFold(nn.AvgPool2d(2)))
        else:
            cout = _scaled(int(item), width)
            layers += [conv_bn(cin, cout), neuron()]
            cin = cout
    layers += [TimeFold(nn.Flatten()), TimeFold(nn.Linear(cin, classes))]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """``neuron(conv_bn(neuron(conv_bn(x))) + shortcut(x))`` over ``[T, B, C, H, W]``, the stride
    on the first conv, the shortcut a strided 1x1 conv-BN where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, neuron: NeuronFactory):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.neuron1 = neuron()
        self.conv2 = conv_bn(cout, cout)
        self.shortcut = (
            conv_bn(cin, cout, kernel=1, stride=stride)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.neuron2 = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron2(self.conv2(self.neuron1(self.conv1(x))) + self.shortcut(x))


class _SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


RESNET19_STAGES = ((128, 3, 1), (256, 3, 2), (512, 2, 2))  # (channels, blocks, stride)


def resnet19(neuron: NeuronFactory, classes: int = 10, width: float = 1.0):
    """ResNet-19 of the tdBN / TET papers, laid out as ``spikequant.models.resnet19``: 3x3 stem
    conv-BN-LIF 128, basic blocks 3x128, 3x256, 2x512 (strides 1, 2, 2), global average pooling,
    a spiking FC-256, the classifier; ``width`` scales every layer but the classifier's output."""
    torch.manual_seed(0)
    stem = _scaled(128, width)
    layers: list[nn.Module] = [conv_bn(3, stem), neuron()]
    cin = stem
    for channels, blocks, stride in RESNET19_STAGES:
        cout = _scaled(channels, width)
        for i in range(blocks):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, neuron))
            cin = cout
    hidden = _scaled(256, width)
    layers += [
        _SpatialMean(),
        TimeFold(nn.Linear(cin, hidden)),
        neuron(),
        TimeFold(nn.Linear(hidden, classes)),
    ]
    return nn.Sequential(*layers)


def to_channels_last(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` with each ``[C, H, W]`` image stored channels-last (NHWC)."""
    steps = x_seq.shape[0]
    folded = x_seq.reshape(-1, *x_seq.shape[2:]).contiguous(memory_format=torch.channels_last)
    return folded.view(steps, -1, *x_seq.shape[2:])


def training_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool = False, forward=None
):
    """A closure doing one SGD step: forward over T, mean-over-time logits, cross-entropy."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run = forward or model

    def step():
        optimizer.zero_grad(set_to_none=True)
        reset_state(model)
        inputs = to_channels_last(x) if channels_last else x
        logits = run(inputs)
        loss = F.cross_entropy(logits.mean(0), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def data(steps: int, batch: int, classes: int = 10, seed: int = 0, size: int = 32):
    """Direct-coded input (the same image repeated over T, as in the papers) and labels."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, size, size, generator=gen)
    x = image.unsqueeze(0).expand(steps, *image.shape).contiguous()
    y = torch.randint(0, classes, (batch,), generator=gen)
    return x, y
