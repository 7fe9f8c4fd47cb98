r"""TET loss (temporal efficient training) as used by SpQuant-SNN.

For per-step logits ``O[T, B, K]`` and labels ``y``::

    L = (1 - lam) * mean_t CE(O_t, y) + lam * mean_{t,b,k} (O_{t,b,k} - phi)^2,   phi = 1

The prediction stays the time-mean of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError


def tet_loss(
    logits: torch.Tensor, target: torch.Tensor, lam: float = 0.05, phi: float = 1.0
) -> torch.Tensor:
    if logits.ndim != 3:
        raise ShapeError(f"TET expects per-step logits [T, B, K], got shape {tuple(logits.shape)}")
    if not 0 <= lam <= 1:
        raise ConfigError(f"TET lambda must be in [0, 1], got {lam!r}")
    steps = logits.shape[0]
    ce = F.cross_entropy(logits.flatten(0, 1), target.repeat(steps))
    if lam == 0:
        return ce
    mse = (logits - phi).pow(2).mean()
    return (1 - lam) * ce + lam * mse


__all__ = ["tet_loss"]
