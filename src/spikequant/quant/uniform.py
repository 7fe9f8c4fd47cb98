r"""Uniform symmetric weight quantizer (8 bits by default) with a learnable step (LSQ-style).

With ``q_max = 2^(b-1) - 1`` and step ``s`` (per tensor, or per output channel)::

    w_q = s * round(clip(w / s, -q_max, q_max))

``s`` starts at ``max|w| / q_max`` (so nothing is clipped at initialisation). Backward is
straight-through for ``w`` inside the range and LSQ's ``round(w/s) - w/s`` (or ``+-q_max``) for
``s``. ``round`` is round-half-to-even. For a fixed ``s`` the map is idempotent:
``Q(Q(w)) == Q(w)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def uniform_quantize(w: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Forward map with straight-through gradients; ``step`` broadcasts against ``w``."""
    q_max = 2 ** (bits - 1) - 1
    scaled = torch.clamp(w / step, -q_max, q_max)
    return step * (scaled + (torch.round(scaled) - scaled).detach())


class UniformQuantizer(nn.Module):
    """``parametrize``-ready uniform quantizer.

    Args:
        bits: 2..16.
        weight: tensor to initialise the step from (``max|w| / q_max``); else step 1.
        per_channel: one step per output channel (dim 0).
        learn_step: train the step.
    """

    def __init__(
        self,
        bits: int = 8,
        weight: torch.Tensor | None = None,
        *,
        per_channel: bool = False,
        learn_step: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ConfigError(f"uniform quantizer bits must be an integer in 2..16, got {bits!r}")
        self.bits = bits
        self.per_channel = bool(per_channel)
        q_max = 2 ** (bits - 1) - 1
        if weight is None:
            step = torch.ones(())
        elif per_channel:
            step = weight.detach().abs().reshape(weight.shape[0], -1).amax(1) / q_max
        else:
            step = weight.detach().abs().max() / q_max
        step = torch.where(step > 0, step, torch.ones_like(step))
        self.step = nn.Parameter(step.clone().float(), requires_grad=learn_step)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        step = self.step.abs().clamp(min=1e-12)
        if self.per_channel:
            step = step.view(-1, *([1] * (w.ndim - 1)))
        return uniform_quantize(w, step, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


__all__ = ["UniformQuantizer", "uniform_quantize"]
