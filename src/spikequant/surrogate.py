r"""Surrogate gradients for the Heaviside spike function.

Forward, every surrogate computes the same spike ``z = H(q) = 1[q >= 0]`` (Heaviside(0) = 1) where
``q = H_membrane - V_th``. Backward, it replaces the Dirac delta by the derivative of a smooth
function ``smooth(q)``; ``grad(q) = d smooth / dq`` is what flows to the membrane and threshold.

Each surrogate is a small frozen object so that it can be shared, compared, pickled and passed
to the fused kernels (``kind`` and ``alpha`` identify it there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .registry import SURROGATES


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(q)
        ctx.surrogate = surrogate
        return (q >= 0).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (q,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(q), None


@dataclass(frozen=True)
class Surrogate:
    """Base class: subclasses define ``smooth`` and ``grad``; ``alpha`` is the sharpness."""

    alpha: float = 1.0
    kind = "base"

    def __post_init__(self) -> None:
        if not (
            isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0
        ):
            raise ConfigError(
                f"{type(self).__name__}: alpha must be a positive number, got {self.alpha!r}"
            )

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """Spike ``1[q >= 0]`` with this surrogate's gradient."""
        return _SpikeFunction.apply(q, self)

    def smooth(self, q: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, q: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@SURROGATES.register("sigmoid")
@dataclass(frozen=True)
class Sigmoid(Surrogate):
    r"""``smooth = sigmoid(alpha q)``, ``grad = alpha s (1 - s)``; peak alpha/4 at q = 0."""

    alpha: float = 4.0
    kind = "sigmoid"

    def smooth(self, q):
        return torch.sigmoid(self.alpha * q)

    def grad(self, q):
        s = torch.sigmoid(self.alpha * q)
        return self.alpha * s * (1 - s)


@SURROGATES.register("triangle")
@dataclass(frozen=True)
class Triangle(Surrogate):
    r"""``grad = max(0, g - |q|) / g^2`` with half-width ``g = 1/alpha``; peak 1/g at q = 0.

    With alpha = 1 this is the SpQuant triangle: 1 at V_th, 0.5 at V_th +- 0.5, 0 beyond +-1.
    ``smooth`` is its integral, a piecewise quadratic from 0 (q <= -g) to 1 (q >= g).
    """

    alpha: float = 1.0
    kind = "triangle"

    def smooth(self, q):
        g = 1.0 / self.alpha
        x = torch.clamp(q, -g, g)
        left = 0.5 * (x + g) ** 2 / g**2
        right = 1 - 0.5 * (g - x) ** 2 / g**2
        return torch.where(x < 0, left, right)

    def grad(self, q):
        g = 1.0 / self.alpha
        return torch.clamp(g - q.abs(), min=0) / g**2


@SURROGATES.register("atan")
@dataclass(frozen=True)
class Atan(Surrogate):
    r"""``smooth = atan(pi/2 alpha q)/pi + 1/2``, ``grad = alpha / (2 (1 + (pi/2 alpha q)^2))``."""

    alpha: float = 2.0
    kind = "atan"

    def smooth(self, q):
        return torch.atan(math.pi / 2 * self.alpha * q) / math.pi + 0.5

    def grad(self, q):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * q) ** 2)


@SURROGATES.register("rectangle")
@dataclass(frozen=True)
class Rectangle(Surrogate):
    r"""``grad = alpha * 1[|q| < 1/(2 alpha)]`` (a box of width 1/alpha and unit area)."""

    alpha: float = 1.0
    kind = "rectangle"

    def smooth(self, q):
        return torch.clamp(self.alpha * q + 0.5, 0.0, 1.0)

    def grad(self, q):
        return (q.abs() < 0.5 / self.alpha).to(q.dtype) * self.alpha


def create_surrogate(spec: str | Surrogate | dict | None = None, **kwargs) -> Surrogate:
    """Accept a Surrogate, a name (``"sigmoid"``), or a dict ``{"name": ..., "alpha": ...}``."""
    if spec is None:
        return Sigmoid(**kwargs)
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", "sigmoid")
        return SURROGATES.create(name, **spec, **kwargs)
    if isinstance(spec, str):
        return SURROGATES.create(spec, **kwargs)
    raise ConfigError(f"surrogate must be a name, dict or Surrogate, got {type(spec).__name__}")


__all__ = ["Surrogate", "Sigmoid", "Triangle", "Atan", "Rectangle", "create_surrogate"]
