r"""Power-of-two weight quantizer for <= 4 bits with a learnable power-of-two scale (SpQuant, PoT).

For a weight ``w`` and a scale ``alpha = 2^round(a)`` (``a`` trainable, init ``log2 4 = 2``)::

    w~  = clip(w / alpha, -1, 1)
    w_q = alpha * sign(w~) * nearest(|w~|, G_b),   G_b = {0} U {2^-i : i = 0 .. 2^(b-1) - 2}

so ``b = 2`` is ternary ``{-alpha, 0, alpha}``, ``b = 3`` has magnitudes ``{0, 1/4, 1/2, 1}`` and
``b = 4`` ``{0, 2^-6, ..., 1}``. ``nearest`` picks the closest grid value, ties toward the smaller
magnitude. Backward is straight-through for ``w`` inside the clip range (``d w_q / d w = 1``,
0 outside), for ``alpha`` the LSQ-style ``q - w/alpha`` inside and ``sign(w)`` outside, and the
exponent ``a`` gets that times ``alpha ln 2`` through a straight-through ``round``.

Because ``alpha`` is a power of two, ``w / alpha`` and ``alpha * level`` are exact in floating
point, so the quantizer is exactly idempotent: ``Q(Q(w)) == Q(w)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


def pow2_grid(bits: int) -> torch.Tensor:
    """Ascending magnitudes ``{0} U {2^-i : i = 0 .. 2^(bits-1) - 2}``."""
    if not isinstance(bits, int) or not 2 <= bits <= 4:
        raise ConfigError(f"the power-of-two quantizer supports 2 to 4 bits, got {bits!r}")
    exponents = torch.arange(2 ** (bits - 1) - 2, -1, -1, dtype=torch.float32)
    return torch.cat([torch.zeros(1), torch.pow(2.0, -exponents)])


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def pow2_quantize(w: torch.Tensor, alpha: torch.Tensor | float, bits: int) -> torch.Tensor:
    """The forward map with straight-through gradients (``alpha`` may be a tensor with grad)."""
    grid = pow2_grid(bits).to(w.device, w.dtype, non_blocking=True)  # no wait for the GPU queue
    mids = (grid[1:] + grid[:-1]) / 2
    clipped = torch.clamp(w / alpha, -1.0, 1.0)
    magnitude = clipped.detach().abs()
    # bucketize(right=False) sends a value equal to a midpoint to the lower bucket: ties -> smaller
    nearest = torch.sign(clipped.detach()) * grid[torch.bucketize(magnitude, mids)]
    return alpha * (clipped + (nearest - clipped).detach())


class PowerOfTwoQuantizer(nn.Module):
    """``torch.nn.utils.parametrize``-ready PoT quantizer (see the module docstring)."""

    def __init__(self, bits: int = 2, alpha: float = 4.0, learn_alpha: bool = True) -> None:
        super().__init__()
        pow2_grid(bits)  # validates bits
        if not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
            raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
        exponent = math.log2(alpha)
        if exponent != round(exponent):
            raise ConfigError(f"alpha must be a power of two, got {alpha}")
        self.bits = bits
        self.log2_alpha = nn.Parameter(torch.tensor(float(exponent)), requires_grad=learn_alpha)

    @property
    def alpha(self) -> torch.Tensor:
        return torch.pow(2.0, round_ste(self.log2_alpha))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return pow2_quantize(w, self.alpha, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={float(self.alpha):g}"


__all__ = ["PowerOfTwoQuantizer", "pow2_grid", "pow2_quantize", "round_ste"]
