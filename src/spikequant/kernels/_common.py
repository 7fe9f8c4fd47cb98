"""Plain-parameter helpers shared by the C++ and Triton kernels (no neuron classes here)."""

from __future__ import annotations

import math

import torch

SURROGATE_KINDS = {"sigmoid": 0, "triangle": 1, "atan": 2, "rectangle": 3}


def surrogate_constants(kind: str, alpha: float) -> tuple[float, float]:
    """``(c1, c2)`` of a surrogate derivative, in Python floats as the reference computes them.

    sigmoid: unused; triangle: ``c1 = g = 1/alpha``, ``c2 = g^2`` (``sg = max(0, g - |q|) / g^2``);
    atan: ``c1 = pi/2 alpha``, ``c2 = alpha/2`` (``sg = c2 / (1 + (c1 q)^2)``); rectangle:
    ``c1 = 1/(2 alpha)`` (``sg = alpha 1[|q| < c1]``). The kernels round them to float like
    PyTorch rounds Python scalars.
    """
    if kind == "triangle":
        g = 1.0 / alpha
        return g, g**2
    if kind == "atan":
        return math.pi / 2 * alpha, alpha / 2
    if kind == "rectangle":
        return 0.5 / alpha, 0.0
    return 0.0, 0.0


class KernelSpec:
    """Everything the kernels need besides tensors: plain numbers and flags."""

    __slots__ = (
        "a",
        "b",
        "hard",
        "v_reset",
        "detach",
        "kind",
        "alpha",
        "c1",
        "c2",
        "per_sample",
        "inner",
        "th_rows",
    )

    def __init__(
        self, *, a, b, hard, v_reset, detach, surrogate_kind, alpha, per_sample, inner, th_rows
    ):
        self.a, self.b, self.hard, self.v_reset, self.detach = a, b, hard, v_reset, detach
        self.per_sample, self.inner, self.th_rows = per_sample, inner, th_rows
        self.kind = SURROGATE_KINDS[surrogate_kind]
        self.alpha = float(alpha)
        self.c1, self.c2 = surrogate_constants(surrogate_kind, self.alpha)


def in_layout(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` with exactly the strides of ``like`` (copied only when they differ)."""
    if tensor.stride() == like.stride():
        return tensor
    return torch.empty_like(like).copy_(tensor)


def _dense_strides(shape, strides) -> bool:
    """True when a tensor of this shape/strides covers its memory without gaps or overlaps."""
    expected = 1
    for size, stride in sorted(zip(shape, strides, strict=False), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def kernel_layout(x_seq: torch.Tensor, channels: int):
    """Return ``(x, per_sample, inner)`` with x in a layout the kernels walk in memory order.

    Contiguous and channels-last steps are used as they are (time outermost); anything else is
    made contiguous. For per-channel parameters the channel of memory element p of a sample is
    ``(p // inner) % channels``: inner = H*W... when contiguous, 1 when channels-last.
    """
    shape, strides = tuple(x_seq.shape), x_seq.stride()
    step_numel = x_seq[0].numel()
    dense = strides[0] == step_numel and _dense_strides(shape[1:], strides[1:])
    if channels == 1:
        if not dense:
            x_seq = x_seq.contiguous()
        return x_seq, max(1, step_numel), 1
    inner = 1
    for d in shape[3:]:
        inner *= int(d)
    per_sample = channels * inner
    channels_last = dense and (shape[1] == 1 or strides[1] == per_sample) and strides[2] == 1
    if not (x_seq.is_contiguous() or channels_last):
        x_seq = x_seq.contiguous()
    return x_seq, per_sample, inner if x_seq.is_contiguous() else 1
