r"""Integer-level membrane quantizer with the stacked-sigmoid surrogate (SpQuant-SNN, SGS).

Forward, ``Q`` maps a potential to the nearest level of an integer grid with interval ``k`` on
``[c, h]`` (``c`` the negative clipping boundary, ``h`` the top level, normally ``V_th``)::

    Q(u) = k * round0(clip(u, c, h) / k)

``round0`` rounds to the nearest integer with ties toward zero (``0.5 -> 0``, ``-1.5 -> -1``), so
the rounding is deterministic and symmetric. ``c = -1, h = 1, k = 1`` gives the ternary levels
``{-1, 0, 1}`` (stored in 2 bits, "1.58-bit").

Backward, the staircase is replaced by a sum of sigmoids centred on the level midpoints ``s_i``
(stacked gradient surrogation, SGS) with smoothness ``Ts``::

    dQ/du ~ sum_i Ts * sig(Ts (u - s_i) / k) * (1 - sig(Ts (u - s_i) / k))

which for ``k = 1`` is the spec formula (``g(0) = 0.786448`` for ternary, Ts = 2). The surrogate
is not clipped: far outside ``[c, h]`` it decays like the tails of the outer sigmoids.

``shape`` swaps the stacked term for another registered surrogate (the paper's Table 2 ablation):
``dQ/du ~ sum_i f'((u - s_i) / k)`` with ``f`` = ``spikequant.surrogate`` ``shape`` at
``alpha = Ts``; every term has unit area, so each level step still carries a total gradient of 1.
``shape = "sigmoid"`` is the formula above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..registry import SURROGATES
from ..surrogate import create_surrogate  # importing it registers the surrogates

# SGS on grids of more than SGS_FULL_SUM_MAX midpoints (8 bits and up) sums the 2 SGS_WINDOW + 1
# nearest ones only (MembraneLevels._windowed_sigmoid_grad): the sum over all 2^b - 1 made a
# 7-bit membrane train about 20x slower than a ternary one, and 8 bits twice that again
SGS_WINDOW = 10
SGS_FULL_SUM_MAX = 127


def round_half_toward_zero(x: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties toward zero: ``sign(x) * ceil(|x| - 1/2)``."""
    # "+ 0.0" turns the -0.0 that ceil(-0.5) produces into +0.0
    return torch.sign(x) * torch.ceil(x.abs() - 0.5) + 0.0


@dataclass(frozen=True)
class MembraneLevels:
    """The level grid ``{c, c + k, ..., h}``; ``c``, ``h`` are integer multiples of ``k`` and
    ``c <= 0 <= h`` so that the hard-reset value 0 is a level."""

    low: float = -1.0
    high: float = 1.0
    step: float = 1.0
    smoothness: float = 2.0
    shape: str = "sigmoid"  # the stacked term: any registered surrogate (spikequant.surrogate)

    def __post_init__(self) -> None:
        if self.shape not in SURROGATES.names():
            raise ConfigError(
                f"membrane quantizer: shape must be one of {', '.join(SURROGATES.names())}, "
                f"got {self.shape!r}"
            )
        for name in ("low", "high", "step", "smoothness"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(
                    f"membrane quantizer: {name} must be a finite number, got {value!r}"
                )
        if self.step <= 0 or self.smoothness <= 0:
            raise ConfigError("membrane quantizer: step and smoothness must be positive")
        if not self.low <= 0 <= self.high or self.low == self.high:
            raise ConfigError(
                f"membrane quantizer: need low <= 0 <= high (0 is the reset level), got "
                f"[{self.low}, {self.high}]"
            )
        for name in ("low", "high"):
            ratio = getattr(self, name) / self.step
            if abs(ratio - round(ratio)) > 1e-9:
                raise ConfigError(
                    f"membrane quantizer: {name}={getattr(self, name)} is not a multiple of the "
                    f"step {self.step}"
                )

    @classmethod
    def from_bits(cls, bits: int, high: float = 1.0, step: float = 1.0, **kw) -> MembraneLevels:
        """``2**bits`` levels with ``high`` on top (``bits = 2``: {-2, -1, 0, 1})."""
        if not isinstance(bits, int) or bits < 1:
            raise ConfigError(f"membrane bits must be a positive integer, got {bits!r}")
        return cls(low=high - (2**bits - 1) * step, high=high, step=step, **kw)

    @property
    def low_index(self) -> int:
        return int(round(self.low / self.step))

    @property
    def high_index(self) -> int:
        return int(round(self.high / self.step))

    @property
    def num_levels(self) -> int:
        return self.high_index - self.low_index + 1

    @property
    def bits(self) -> int:
        """Storage bits per neuron (ternary -> 2)."""
        return max(1, math.ceil(math.log2(self.num_levels)))

    def values(self) -> torch.Tensor:
        return torch.arange(self.low_index, self.high_index + 1, dtype=torch.float32) * self.step

    def midpoints(self) -> torch.Tensor:
        v = self.values()
        return (v[1:] + v[:-1]) / 2

    def quantize(self, u: torch.Tensor) -> torch.Tensor:
        """Forward of ``Q`` (no gradient)."""
        x = torch.clamp(u, self.low, self.high) / self.step
        return round_half_toward_zero(x) * self.step

    def surrogate_grad(self, u: torch.Tensor) -> torch.Tensor:
        """``sum_i Ts * sig(Ts (u - s_i)/k) (1 - sig(...))`` over the level midpoints ``s_i``
        (with another ``shape``: ``sum_i f'((u - s_i)/k)``, ``f`` that surrogate at alpha Ts)."""
        # non_blocking: a blocking host-to-GPU copy would wait for the device's whole queue
        shifts = self.midpoints().to(u.device, u.dtype, non_blocking=True)
        window = SGS_WINDOW if self.shape == "sigmoid" else None
        if window is not None and len(shifts) > SGS_FULL_SUM_MAX:
            return self._windowed_sigmoid_grad(u, window)
        if self.shape != "sigmoid":
            term = create_surrogate(self.shape, alpha=self.smoothness)
            return term.grad((u.unsqueeze(-1) - shifts) / self.step).sum(-1)
        z = self.smoothness * (u.unsqueeze(-1) - shifts) / self.step
        s = torch.sigmoid(z)
        return (self.smoothness * s * (1 - s)).sum(-1)

    def _windowed_sigmoid_grad(self, u: torch.Tensor, window: int) -> torch.Tensor:
        """The SGS sum over the ``2 window + 1`` midpoints nearest to ``u`` only: a term ``d``
        levels away is below ``Ts e^(-Ts d)`` (< 1e-8 relative at d = 10, Ts = 2), so wide grids
        (2^b - 1 midpoints at b bits) cost what a 5-bit one does, equal to float32 rounding."""
        count = self.num_levels - 1
        position = u / self.step - (self.low_index + 0.5)  # midpoint j sits at position j
        centre = torch.round(position).clamp(0, count - 1).to(torch.int64)
        offsets = torch.arange(-window, window + 1, device=u.device)
        index = centre.unsqueeze(-1) + offsets
        valid = (index >= 0) & (index < count)
        shifts = (self.low_index + 0.5 + index.to(u.dtype)) * self.step
        z = self.smoothness * (u.unsqueeze(-1) - shifts) / self.step
        s = torch.sigmoid(z)
        return (self.smoothness * s * (1 - s) * valid.to(u.dtype)).sum(-1)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """``Q(u)`` with the SGS gradient."""
        return _QuantizeMembrane.apply(u, self)


class _QuantizeMembrane(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, levels: MembraneLevels) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.levels = levels
        return levels.quantize(u)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad_out * ctx.levels.surrogate_grad(u), None


def quantize_membrane(
    u: torch.Tensor,
    low: float = -1.0,
    high: float = 1.0,
    step: float = 1.0,
    smoothness: float = 2.0,
) -> torch.Tensor:
    """Functional form of :class:`MembraneLevels` (``Q(u)`` with the SGS gradient)."""
    return MembraneLevels(low, high, step, smoothness)(u)


def sgs_grad(
    u: torch.Tensor,
    low: float = -1.0,
    high: float = 1.0,
    step: float = 1.0,
    smoothness: float = 2.0,
) -> torch.Tensor:
    """The SGS surrogate derivative of ``Q`` at ``u``."""
    return MembraneLevels(low, high, step, smoothness).surrogate_grad(u)


__all__ = ["MembraneLevels", "quantize_membrane", "round_half_toward_zero", "sgs_grad"]
