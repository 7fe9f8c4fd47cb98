"""Training objective and gradient clipping of the temporal-coded SNN.

``loss = data_term + K * sum_layers mean_j max(0, beta - sum_i w_ji) + lambda * sum w^2``

Data term, ``form="code"`` (default, as the authors' code): softmax cross-entropy on ``-z``.
``form="paper"``: eq. (5) as printed, ``-ln( z_c^-1 / sum_{i != c} z_i^-1 )``
``= ln z_c + ln sum_{i != c} exp(-ln z_i)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import ttfs_weighted_layers

LOSS_FORMS = ("code", "paper")


def ttfs_data_loss(z_out: torch.Tensor, target: torch.Tensor, form: str = "code") -> torch.Tensor:
    """Mean over the batch of the classification term (see module docstring)."""
    if form == "code":
        return F.cross_entropy(-z_out, target)
    if form == "paper":
        log_z = torch.log(z_out)
        log_z_true = log_z.gather(1, target.unsqueeze(1)).squeeze(1)
        others = -log_z.scatter(1, target.unsqueeze(1), float("inf"))  # true class -> exp(-inf) = 0
        return (log_z_true + torch.logsumexp(others, dim=1)).mean()
    raise ConfigError(f"loss form must be one of {LOSS_FORMS}, got {form!r}")


def weight_sum_penalty(model: nn.Module, beta: float = 1.0) -> torch.Tensor:
    """``sum_layers mean_j max(0, beta - sum_i w_ji)`` (bias input included in the sum)."""
    terms = [torch.relu(beta - layer.weight_sums()).mean() for layer in ttfs_weighted_layers(model)]
    return torch.stack(terms).sum()


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """``sum w^2`` over all TTFS weights (bias weights included)."""
    return torch.stack(
        [(layer.weight_matrix() ** 2).sum() for layer in ttfs_weighted_layers(model)]
    ).sum()


def ttfs_loss(
    model: nn.Module,
    z_out: torch.Tensor,
    target: torch.Tensor,
    *,
    form: str = "code",
    K: float = 100.0,
    beta: float = 1.0,
    l2: float = 1e-3,
    l2_conv: float | None = None,
) -> torch.Tensor:
    """Full objective. ``l2`` weighs dense layers, ``l2_conv`` (default ``l2``) conv layers."""
    from .layers import TTFSConv2d

    loss = ttfs_data_loss(z_out, target, form)
    l2_conv = l2 if l2_conv is None else l2_conv
    for layer in ttfs_weighted_layers(model):
        weights = layer.weight_matrix()  # once per layer: the QAT quantizer is not free
        if K:
            loss = loss + K * torch.relu(beta - weights.sum(1)).mean()
        coeff = l2_conv if isinstance(layer, TTFSConv2d) else l2
        if coeff:
            loss = loss + coeff * weights.pow(2).sum()
    return loss


@torch.no_grad()
def clip_row_normalised(model: nn.Module, max_norm: float = 10.0) -> torch.Tensor:
    """Scale each layer's weight gradient ``G`` (bias column included, ``[out, fan_in + 1]``) by
    ``max_norm / n`` when ``n = ||G||_F / rows > max_norm``; returns the norms before clipping
    (float64, one per layer, on the gradients' device: decided there, not read back)."""
    norms = []
    for layer in ttfs_weighted_layers(model):
        grads = [p.grad for p in (layer.weight, layer.bias) if p.grad is not None]
        if not grads:
            continue
        rows = layer.weight.shape[0]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)) / rows
        scale = torch.where(norm > max_norm, max_norm / norm, 1.0)
        for g in grads:
            g.mul_(scale)
        norms.append(norm)
    return torch.stack(norms) if norms else torch.zeros(0, dtype=torch.float64)
