"""Stateless layers over time: run an ordinary module on ``[T*B, ...]`` and restore ``[T, B, ...]``.

Folding time into the batch lets convolutions, BN and pooling process all timesteps in one call
(SpikingJelly's multi-step mode), which is what makes spiking CNNs cheap on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ShapeError


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view when possible)."""
    if x.ndim < 2:
        raise ShapeError(f"expected time-first input [T, B, ...], got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_time(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    return x.reshape(timesteps, x.shape[0] // timesteps, *x.shape[1:])


class TimeFold(nn.Module):
    """Apply a stateless module to every timestep at once: ``y[t] = module(x[t])``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold_time(self.module(fold_time(x)), x.shape[0])


class RepeatTime(nn.Module):
    """Direct (analog) input coding: repeat a static input ``[B, ...]`` over T steps."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ShapeError(f"timesteps must be a positive integer, got {timesteps!r}")
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.timesteps, *x.shape)


class MeanOverTime(nn.Module):
    """Rate read-out: ``[T, B, ...] -> [B, ...]`` by the mean over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(0)
