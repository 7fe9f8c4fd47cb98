"""Reset mechanisms applied after a spike: small composable objects (``reset=Subtract()``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class Subtract:
    r"""Soft reset: ``V = H - V_th z``. Keeps the residual: the rate codes ``floor(sum i / V_th)``.

    ``detach=True`` stops the gradient through ``z`` in the reset (SpikingJelly's ``detach_reset``);
    the threshold still receives the gradient of ``-V_th z`` through ``V_th``.
    """

    detach: bool = False
    kind = "subtract"

    def __call__(self, h: torch.Tensor, z: torch.Tensor, threshold) -> torch.Tensor:
        if self.detach:
            z = z.detach()
        return h - threshold * z


@dataclass(frozen=True)
class Zero:
    r"""Hard reset: ``V = H (1 - z) + V_reset z``; the residual above threshold is lost."""

    v_reset: float = 0.0
    detach: bool = False
    kind = "zero"

    def __call__(self, h: torch.Tensor, z: torch.Tensor, threshold) -> torch.Tensor:
        if self.detach:
            z = z.detach()
        out = h * (1 - z)
        return out + self.v_reset * z if self.v_reset else out


def create_reset(spec) -> Subtract | Zero:
    """Accept a reset object or a name: ``"subtract"``/``"soft"`` or ``"zero"``/``"hard"``."""
    if isinstance(spec, (Subtract, Zero)):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", "subtract")
        return create_reset(name).__class__(**spec)
    names = {"subtract": Subtract, "soft": Subtract, "zero": Zero, "hard": Zero}
    if isinstance(spec, str) and spec in names:
        return names[spec]()
    raise ConfigError(f"unknown reset {spec!r}; use 'subtract' (soft) or 'zero' (hard)")
