"""Input encoders (static value -> spike train ``[T, ...]``) and output decoders.

Encoders take a tensor of intensities (``[B, ...]``, usually in [0, 1]) and return ``[T, B, ...]``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, NonFiniteError


def _check_timesteps(timesteps: int) -> int:
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
    return timesteps


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{what} contains NaN or infinity")


def direct(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Analog (direct) coding: the first layer receives the constant current ``x`` at every step."""
    _check_timesteps(timesteps)
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def bernoulli_rate(
    x: torch.Tensor, timesteps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rate coding: ``s[t] ~ Bernoulli(clamp(x, 0, 1))`` independently per step."""
    _check_timesteps(timesteps)
    _check_finite(x, "rate-coding input")
    p = x.clamp(0, 1).unsqueeze(0).expand(timesteps, *x.shape)
    return torch.bernoulli(p, generator=generator)


def isi(pixels: torch.Tensor, timesteps: int, alpha: float = 1.0) -> torch.Tensor:
    """Inter-spike-interval coding of 8-bit intensities (Ca-LIF paper).

    A pixel ``pix`` in 0..255 emits ``N = floor(alpha T pix / 255)`` spikes at the (1-indexed) steps
    ``t_n = floor(n 255 / pix)``, n = 1..N; steps beyond T are dropped. Brighter pixels fire
    earlier and more often. E.g. T = 16, pix = 128: spikes at steps 1, 3, 5, ..., 15.
    """
    _check_timesteps(timesteps)
    if alpha <= 0:
        raise ConfigError(f"ISI alpha must be positive, got {alpha}")
    pix = torch.as_tensor(pixels)
    _check_finite(pix.float(), "ISI input")
    if pix.is_floating_point():
        if bool(((pix != pix.round()) | (pix < 0) | (pix > 255)).any()):
            raise ConfigError(
                "ISI coding expects integer intensities in 0..255 (scale [0,1] images by 255)"
            )
    pix = pix.long()
    if bool(((pix < 0) | (pix > 255)).any()):
        raise ConfigError("ISI coding expects intensities in 0..255")
    count = torch.floor(alpha * timesteps * pix.double() / 255).long()
    out = torch.zeros((timesteps, *pix.shape), dtype=torch.float32)
    safe = pix.clamp(min=1)
    for n in range(1, int(count.max().item()) + 1 if count.numel() else 1):
        step = (n * 255) // safe  # 1-indexed
        fire = (count >= n) & (step <= timesteps)
        if not bool(fire.any()):
            continue
        index = (step.clamp(1, timesteps) - 1).unsqueeze(0)
        out.scatter_add_(0, index, fire.unsqueeze(0).float())
    return out


def latency(x: torch.Tensor, timesteps: int, threshold: float = 0.0) -> torch.Tensor:
    """Discrete time-to-first-spike coding: one spike at step ``round((1 - x) (T - 1))``.

    Intensities ``x`` in [0, 1]; values ``<= threshold`` never spike. Brighter fires earlier.
    """
    _check_timesteps(timesteps)
    _check_finite(x, "latency-coding input")
    xc = x.clamp(0, 1)
    step = torch.round((1 - xc) * (timesteps - 1)).long()
    out = torch.zeros(
        (timesteps, *x.shape), dtype=x.dtype if x.is_floating_point() else torch.float32
    )
    out.scatter_(0, step.unsqueeze(0), (xc > threshold).to(out.dtype).unsqueeze(0))
    return out


def latency_times(x: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    """Continuous TTFS encoding ``t = alpha (1 - x)`` (temporal-coded SNN paper)."""
    return alpha * (1 - x)


def rate_decode(spikes: torch.Tensor) -> torch.Tensor:
    """Mean over time: ``[T, B, ...] -> [B, ...]``."""
    return spikes.mean(0)


def spike_count(spikes: torch.Tensor) -> torch.Tensor:
    """Number of (non-zero) events per neuron over the window."""
    return (spikes != 0).sum(0)


def first_spike_time(spikes: torch.Tensor, no_spike: float = float("inf")) -> torch.Tensor:
    """0-indexed step of each neuron's first spike; ``no_spike`` where it never fires."""
    fired = spikes != 0
    T = spikes.shape[0]
    steps = torch.arange(T, device=spikes.device).view(T, *([1] * (spikes.ndim - 1)))
    first = torch.where(fired, steps, T).amin(0).float()
    return torch.where(fired.any(0), first, torch.full_like(first, no_spike))


__all__ = [
    "bernoulli_rate",
    "direct",
    "first_spike_time",
    "isi",
    "latency",
    "latency_times",
    "rate_decode",
    "spike_count",
]
