r"""Spikformer: a spiking vision transformer (Zhou et al., ICLR 2023), registered as ``spikformer``.

Shapes are time-first; tokens stay on their ``H' x W'`` grid, ``x[T, B, D, H', W']`` with
``N = H' W'`` tokens of ``D = embed_dim`` channels, so a per-token linear map is a 1x1 conv and
SpQuant's spatial pruning and channel gates treat tokens as locations and features as channels.
``SN`` is the model's spiking neuron (``neuron=``, LIF by default; ``qlif`` stores a ternary
membrane), ``BN`` a batch norm over the folded ``T*B`` batch.

Spiking patch splitting (SPS), ``p = patch_size = 2^k``::

    s_1 = SN(BN(Conv3x3(x)))                       widths D/8, D/4, D/2, D (at least 1 each);
    s_i = SN(Pool_i(BN(Conv3x3(s_{i-1}))))         the last k stages average-pool by 2, before
                                                   the neuron, so every token is a spike
    x_0 = s_4 + SN(BN(Conv3x3(s_4)))               relative position embedding (RPE)

Encoder block ``l = 1..depth`` (spiking self-attention, SSA, then a spiking MLP)::

    Q = SN(BN(W_Q x)),  K = SN(BN(W_K x)),  V = SN(BN(W_V x))       spikes, split into heads
    A = SN(scale * Q K^T V)                                          no softmax
    x' = x + SN(BN(W_O A))
    x'' = x' + SN(BN(W_2 SN(BN(W_1 x'))))                            W_1: D -> mlp_ratio * D

Per head and step, ``Q K^T V`` sums over the ``N`` tokens and the head's ``d = D / heads``
channels. Without a softmax the product is associative, so it is computed as ``Q (K^T V)``
(``N d^2`` instead of ``N^2 d`` multiply-adds); both orders sum products of 0/1 spikes, i.e.
integers, which are exact in float32 below 2^24, so the two orders give the same result.
``scale`` is ``attn_scale`` (0.125 as in Spikformer).

Head: ``logits_t = W_head mean_n x_t[:, n]`` (mean over tokens), so the output is
``[T, B, num_classes]`` and the prediction is the usual rate decoding ``argmax mean_t logits_t``
(the mean over time).

Every synapse is an ``nn.Conv2d`` or ``nn.Linear`` (W_Q, W_K, W_V, W_O, W_1, W_2 are 1x1 convs),
so :func:`spikequant.spquant.weights.quantize_weights` -- what ``method: spquant`` applies --
makes all of them low-bit, the attention projections included.

There is no ANN form: the attention multiplies two activations (``Q K^T V``), which rate-based
ANN-to-SNN conversion cannot express; the ``relu`` model runs as a T = 1 baseline only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, ConversionError
from ..layers import TimeFold
from ..registry import register_model
from .common import NeuronFactory, SpikingModel, check_positive_int, pair


def _conv_bn(in_ch: int, out_ch: int, kernel: int, pool: bool = False) -> TimeFold:
    """Conv (no bias: BN follows) + BN, then a 2x2 average pool when ``pool``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return TimeFold(nn.Sequential(*layers))


class SpikingPatchSplitting(nn.Module):
    """Conv stem ``[T, B, C, H, W] -> [T, B, D, H/p, W/p]`` of spikes plus the spiking RPE."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, make_neuron) -> None:
        super().__init__()
        downsamplings = int(math.log2(patch_size))
        widths = [max(1, embed_dim // 8), max(1, embed_dim // 4), max(1, embed_dim // 2), embed_dim]
        first_pooled = len(widths) - downsamplings
        stages = []
        previous = in_channels
        for i, width in enumerate(widths):
            stages += [_conv_bn(previous, width, 3, pool=i >= first_pooled), make_neuron(width)]
            previous = width
        self.stages = nn.Sequential(*stages)
        self.rpe = nn.Sequential(_conv_bn(embed_dim, embed_dim, 3), make_neuron(embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return x + self.rpe(x)


class SpikingSelfAttention(nn.Module):
    """``x + SN(BN(W_O SN(scale * Q K^T V)))`` with spike Q, K, V (no softmax)."""

    def __init__(self, dim: int, heads: int, scale: float, make_neuron) -> None:
        super().__init__()
        self.heads = heads
        self.scale = float(scale)
        self.q = nn.Sequential(_conv_bn(dim, dim, 1), make_neuron(dim))
        self.k = nn.Sequential(_conv_bn(dim, dim, 1), make_neuron(dim))
        self.v = nn.Sequential(_conv_bn(dim, dim, 1), make_neuron(dim))
        self.attn_neuron = make_neuron(dim)
        self.proj = nn.Sequential(_conv_bn(dim, dim, 1), make_neuron(dim))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, D, H, W] -> [T, B, heads, N, D / heads]``."""
        t, b, d, h, w = x.shape
        return x.reshape(t, b, self.heads, d // self.heads, h * w).transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, d, h, w = x.shape
        q, k, v = (self._split_heads(f(x)) for f in (self.q, self.k, self.v))
        mixed = q @ (k.transpose(-1, -2) @ v) * self.scale  # = (Q K^T) V: see the module doc
        mixed = mixed.transpose(-1, -2).reshape(t, b, d, h, w)
        return x + self.proj(self.attn_neuron(mixed))


class SpikingMLP(nn.Module):
    """``x + SN(BN(W_2 SN(BN(W_1 x))))`` per token (1x1 convs)."""

    def __init__(self, dim: int, hidden: int, make_neuron) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv_bn(dim, hidden, 1),
            make_neuron(hidden),
            _conv_bn(hidden, dim, 1),
            make_neuron(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class TokenMeanHead(nn.Module):
    """``[T, B, D, H, W] -> [T, B, classes]``: mean over the tokens, then a linear map."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(3).mean(-1))


class Spikformer(SpikingModel):
    """Spikformer (see the module docstring for the equations); registered as ``spikformer``.

    Args:
        embed_dim: token width ``D`` (divisible by ``heads``).
        depth: number of encoder blocks.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP is ``mlp_ratio * D``.
        patch_size: ``p``, a power of two up to 16: tokens are ``p x p`` patches.
        attn_scale: ``scale`` of ``scale * Q K^T V``.
        num_classes: classes of the head.
        in_channels: input channels (``in_chans`` through ``spikequant.create_model``).
        input_size: ``H`` or ``(H, W)``, multiples of ``patch_size``.
        timesteps: ``T`` (a static input is repeated over T steps).
        neuron: registered neuron name (``lif``; ``qlif`` for SpQuant's ternary membrane).
        neuron_kwargs: keyword arguments of every neuron.

    The defaults are small (``D = 32``, one block, 2 heads, ``p = 4``) so the shared model tests
    stay fast; the paper's cells are in the recipes (``spquant-spikformer-cifar10`` etc.).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=32,
        timesteps: int = 4,
        neuron: str = "lif",
        neuron_kwargs: dict | None = None,
        embed_dim: int = 32,
        depth: int = 1,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        attn_scale: float = 0.125,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        embed_dim = check_positive_int("embed_dim", embed_dim)
        heads = check_positive_int("heads", heads)
        depth = check_positive_int("depth", depth)
        patch_size = check_positive_int("patch_size", patch_size)
        if embed_dim % heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by heads {heads}")
        if patch_size & (patch_size - 1) or patch_size > 16:
            raise ConfigError(f"patch_size must be a power of two up to 16, got {patch_size}")
        if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0):
            raise ConfigError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if not (isinstance(attn_scale, (int, float)) and math.isfinite(attn_scale)):
            raise ConfigError(f"attn_scale must be a finite number, got {attn_scale!r}")
        height, breadth = pair(input_size)
        if height % patch_size or breadth % patch_size:
            raise ConfigError(
                f"input_size {input_size!r} is too small or not a multiple of patch_size "
                f"{patch_size}"
            )
        self.embed_dim, self.depth, self.heads = embed_dim, depth, heads
        self.patch_size = patch_size
        make: NeuronFactory = self.make_neuron
        hidden = max(1, int(round(mlp_ratio * embed_dim)))
        blocks: list[nn.Module] = [SpikingPatchSplitting(in_channels, embed_dim, patch_size, make)]
        for _ in range(depth):
            blocks += [
                SpikingSelfAttention(embed_dim, heads, attn_scale, make),
                SpikingMLP(embed_dim, hidden, make),
            ]
        blocks.append(TokenMeanHead(embed_dim, num_classes))
        self.net = nn.Sequential(*blocks)

    def ann_form(self) -> nn.Module:
        raise ConversionError(
            "spikformer has no ANN form for conversion: its attention multiplies two activations "
            "(Q K^T V), which rate-coded ANN-to-SNN conversion cannot express; train it directly"
        )


@register_model(name="spikformer")
def spikformer(**kwargs) -> Spikformer:
    """Spikformer: spiking patch splitting, spiking self-attention (Q K^T V, no softmax), MLP."""
    return Spikformer(**kwargs)


__all__ = ["Spikformer", "SpikingMLP", "SpikingPatchSplitting", "SpikingSelfAttention"]
