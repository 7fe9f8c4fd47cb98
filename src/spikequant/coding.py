"""Input encoders (static value -> spike train ``[T, ...]``) and output decoders.

Encoders take a tensor of intensities (``[B, ...]``, usually in [0, 1]) and return ``[T, B, ...]``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .finite import require_finite


def _check_timesteps(timesteps: int) -> int:
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
    return timesteps


def _check_finite(x: torch.Tensor, what: str) -> None:
    require_finite(torch.isfinite(x).all(), lambda _: f"{what} contains NaN or infinity")


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


def isi_spike_counts(
    pix: torch.Tensor, timesteps: int, max_spikes: int | None = None
) -> torch.Tensor:
    """Spike count ``N = floor(K pix / 255)``, spike budget ``K = alpha T`` (default ``K = T``)."""
    pix, budget = _check_isi(pix, timesteps, max_spikes)
    return (budget * pix) // 255


def isi_encode(pix: torch.Tensor, timesteps: int, max_spikes: int | None = None) -> torch.Tensor:
    r"""Inter-spike-interval coding of 8-bit pixels into ``[T, ...]`` spikes (1 = spike).

    ``N = floor(K pix / 255)`` spikes at steps ``t_n = floor(n 255 T / (K pix))``, n = 1..N
    (1-indexed), with budget ``K = alpha T <= T`` (``alpha = 1``: ``t_n = (n 255) // pix``). The
    spacing ``255 T / (K pix) >= 1`` guarantees at most one spike per step. With ``K = 255`` each
    pixel becomes exactly ``pix`` spikes (lossless), possible when ``T >= 255``.
    """
    encoder = IsiEncoder(pix, timesteps, max_spikes)
    return torch.stack([encoder.step(t) for t in range(1, timesteps + 1)]).to(torch.float32)


class IsiEncoder:
    """Step-by-step ISI coding (no ``[T, ...]`` tensor): ``step(t)`` is the spike map of step t."""

    def __init__(self, pix: torch.Tensor, timesteps: int, max_spikes: int | None = None) -> None:
        pix, self.budget = _check_isi(pix, timesteps, max_spikes)
        # int32 is exact here ((T + 1) K pix < 2^31 for T < 32000) and halves the memory traffic
        self.pix = pix.to(torch.int32) if timesteps < 32000 else pix
        self.timesteps = timesteps
        self.total = (self.budget * self.pix) // 255
        self._previous = self._upto(0)
        self._t = 0

    def _upto(self, t: int) -> torch.Tensor:
        # spikes up to step t: #{n : n 255 T < (t+1) K pix} = ceil((t+1) K pix / (255 T)) - 1
        k_pix = self.budget * self.pix
        upto = torch.where(self.pix > 0, ((t + 1) * k_pix - 1) // (255 * self.timesteps), 0)
        return torch.minimum(upto, self.total)

    def step(self, t: int) -> torch.Tensor:
        """Spikes (0/1, float64) at 1-indexed step ``t``; steps must be taken in order."""
        if t != self._t + 1:
            raise ConfigError(f"ISI steps must be taken in order: expected {self._t + 1}, got {t}")
        current = self._upto(t)
        spikes = (current - self._previous).to(torch.float64)
        self._previous, self._t = current, t
        return spikes


def pixels_from_unit(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (8-bit sources) -> integer pixels 0..255."""
    return torch.round(x.to(torch.float64) * 255).clamp(0, 255).to(torch.int64)


def _check_isi(pix, timesteps, max_spikes):
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
    budget = timesteps if max_spikes is None else max_spikes
    if not isinstance(budget, int) or not 1 <= budget <= timesteps:
        raise ConfigError(
            f"max_spikes must be an integer in [1, T={timesteps}], got {max_spikes!r}"
        )
    pix = torch.as_tensor(pix)
    if pix.is_floating_point():
        if not torch.equal(pix, pix.round()):
            raise ConfigError("ISI coding takes integer pixels 0..255 (use pixels_from_unit)")
        pix = pix.to(torch.int64)
    if pix.numel() and (pix.min() < 0 or pix.max() > 255):
        raise ConfigError("ISI coding takes pixels in 0..255")
    return pix.to(torch.int64), budget


def isi(pixels: torch.Tensor, timesteps: int, max_spikes: int | None = None) -> torch.Tensor:
    """Alias of :func:`isi_encode` (ISI coding of 8-bit intensities into ``[T, ...]``)."""
    return isi_encode(pixels, timesteps, max_spikes)


def latency(x: torch.Tensor, timesteps: int, threshold: float = 0.0) -> torch.Tensor:
    """Discrete time-to-first-spike coding: one spike at step ``round((1 - x) (T - 1))``.

    Intensities ``x`` in [0, 1]; values ``<= threshold`` never spike. Brighter fires earlier.
    """
    _check_timesteps(timesteps)
    _check_finite(x, "latency-coding input")
    xc = x.clamp(0, 1)
    step = torch.round((1 - xc) * (timesteps - 1)).long()
    out = torch.zeros(
        (timesteps, *x.shape),
        dtype=x.dtype if x.is_floating_point() else torch.float32,
        device=x.device,
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
    "IsiEncoder",
    "isi_encode",
    "isi_spike_counts",
    "pixels_from_unit",
    "bernoulli_rate",
    "direct",
    "first_spike_time",
    "isi",
    "latency",
    "latency_times",
    "rate_decode",
    "spike_count",
]
