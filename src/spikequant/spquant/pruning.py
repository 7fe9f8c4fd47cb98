r"""Membrane-guided channel masking and the measured sparsity of a SpQuant network.

Channel gate between consecutive spiking conv layers ``l -> l+1`` (SpQuant-SNN eq. 23, [R])::

    m_l  = mean over t, h, w of the pre-fire membrane of layer l          [B, C_l]
    p    = sigmoid(Conv1x1(softmax_c(m_l)))                                [B, C_{l+1}]
    mask = 1[p > 0.47]   (forward)     d mask / d p = 1   (straight-through)

and ``mask`` multiplies the input current of layer ``l+1`` channel-wise before it accumulates,
so a masked channel neither integrates nor fires. The gate sees the detached membrane: it learns
from the loss through the straight-through mask only.

The gates start open: 1x1 conv weights ``N(0, init_std^2)`` with ``init_std = 0.01`` and bias 0
give ``p ~ 0.5 > 0.47`` for every channel, so fine-tuning starts from the network it fine-tunes and
the loss and the density penalty decide which channels close. With unit-variance weights the
random initialisation closed about a third of the channels at random, and those never reopened:
a masked channel's neurons sit near ``u = 0``, outside the triangle surrogate's window around
``V_th``, so no gradient reaches their gate.

The paper does not say how its ~69 % channel sparsity is reached; here the gates are held to a
keep ratio by :func:`gate_density_penalty`: ``sum_gates relu(mean(mask) - keep)^2`` (``cap``: only
too many open channels are penalised) or ``sum_gates (mean(mask) - keep)^2`` (``target``). Because
a closed channel gets no gradient from the loss (see above), only the two-sided ``target`` form can
reopen channels that closed beyond the keep ratio; under ``cap`` the gates drift past it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..neurons import probe_forward
from .neuron import QLIF


class ChannelGate(nn.Module):
    """Pooled membrane of ``source_channels`` -> binary mask over ``target_channels``."""

    #: cost models count the modules inside a gate as gate operations, not synapses
    cost_role = "gate"

    def __init__(
        self,
        source_channels: int,
        target_channels: int,
        threshold: float = 0.47,
        init_bias: float = 0.0,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ConfigError(f"gate threshold must be in (0, 1), got {threshold!r}")
        if not init_std >= 0:
            raise ConfigError(f"gate init_std must be >= 0, got {init_std!r}")
        self.proj = nn.Conv2d(source_channels, target_channels, kernel_size=1)
        nn.init.normal_(self.proj.weight, std=float(init_std))
        nn.init.constant_(self.proj.bias, init_bias)
        self.threshold = float(threshold)
        self.last_mask: torch.Tensor | None = None

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(pooled, dim=1)[:, :, None, None]
        prob = torch.sigmoid(self.proj(attention)).flatten(1)
        hard = (prob > self.threshold).to(prob.dtype)
        mask = prob + (hard - prob).detach()
        self.last_mask = mask
        return mask


def qlif_layers(model: nn.Module) -> list[tuple[str, QLIF]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QLIF)]


@torch.no_grad()
def _execution_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, QLIF, tuple]]:
    order = []

    def hook_for(name):
        return lambda module, inputs, output: order.append((name, module, tuple(inputs[0].shape)))

    probe_forward(model, example, [(layer, hook_for(name)) for name, layer in qlif_layers(model)])
    return order


def attach_channel_gates(
    model: nn.Module,
    example: torch.Tensor,
    *,
    threshold: float = 0.47,
    init_bias: float = 0.0,
    init_std: float = 0.01,
) -> list[tuple[str, str]]:
    """Gate every spiking conv layer by the spiking conv layer that runs just before it.

    ``example`` is one input batch (it fixes the execution order). Returns ``(source, target)``
    name pairs. Call it again, with the same model and input shape, before loading a state dict.
    """
    order = _execution_order(model, example)
    if not order:
        raise ConfigError("the model has no QLIF (qlif) layers to gate")
    pairs = []
    for (src_name, src, src_shape), (dst_name, dst, dst_shape) in zip(
        order, order[1:], strict=False
    ):
        if len(src_shape) != 5 or len(dst_shape) != 5:  # [T, B, C, H, W] conv layers only
            continue
        if dst.channel_gate is not None:
            continue
        gate = ChannelGate(src_shape[2], dst_shape[2], threshold, init_bias, init_std)
        dst.attach_gate(src, gate)
        pairs.append((src_name, dst_name))
    return pairs


GATE_PENALTY_MODES = ("cap", "target")


def gate_density_penalty(model: nn.Module, keep: float, mode: str = "cap") -> torch.Tensor:
    """Over the gates of the last forward pass: ``sum relu(mean(mask) - keep)^2`` (``cap``) or
    ``sum (mean(mask) - keep)^2`` (``target``)."""
    if mode not in GATE_PENALTY_MODES:
        raise ConfigError(f"gate penalty mode must be one of {GATE_PENALTY_MODES}, got {mode!r}")
    total = None
    for _, layer in qlif_layers(model):
        gate = layer.channel_gate
        if gate is not None and gate.last_mask is not None:
            excess = gate.last_mask.mean() - keep
            term = (torch.relu(excess) if mode == "cap" else excess) ** 2
            total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def configure_pruning(
    model: nn.Module, *, spatial: float | None = None, binary_membrane: bool | None = None
) -> None:
    """Set spatial pruning / binary membrane on every conv QLIF layer (spatial skips linear ones
    at run time since they have no locations)."""
    for _, layer in qlif_layers(model):
        if spatial is not None:
            if not 0 <= spatial < 1:
                raise ConfigError(f"spatial pruning must be in [0, 1), got {spatial!r}")
            layer.spatial_prune = float(spatial)
        if binary_membrane is not None:
            layer.binary_membrane = bool(binary_membrane)


__all__ = [
    "ChannelGate",
    "attach_channel_gates",
    "configure_pruning",
    "gate_density_penalty",
    "qlif_layers",
]
