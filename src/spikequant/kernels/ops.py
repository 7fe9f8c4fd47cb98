"""The fused C++ kernels as PyTorch operators (``torch.ops.spikequant.*``).

Registered with :mod:`torch.library` (``define`` + ``impl`` + ``register_fake`` +
``register_autograd``; the schema is inferred from the Python signature) so that
``torch.compile`` traces a neuron without a graph break (the operator is one opaque node whose
output shapes the fake implementation gives) and ``torch.export`` keeps it as one node.
ONNX has no such operator: while :func:`torch.onnx.export` runs, :func:`spikequant.kernels.
choose_backend` picks no kernel, so the neurons export as their reference step ops.

``integrate_fire_forward`` takes every number the backward needs too (surrogate kind and
constants, detach), because an operator's backward sees only the forward's inputs.

Not ``torch.library.custom_op``: its dispatch wrapper imports ``torch._dynamo`` on the first
call, which added 1.5-4 s to every process that ran a neuron (every CLI command).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _common


def _extension():
    from . import load_extension, unavailable_reason

    ext = load_extension()
    if ext is None:
        raise RuntimeError(f"fused kernels unavailable: {unavailable_reason()}")
    return ext


_LIBRARY = torch.library.Library("spikequant", "FRAGMENT")


def _operator(function):
    """Define ``spikequant::<name>`` with the schema of ``function``'s annotations and make
    ``function`` its implementation on every device; returns the operator."""
    name = f"spikequant::{function.__name__}"
    schema = torch.library.infer_schema(function, mutates_args=())
    torch.library.define(name, schema, lib=_LIBRARY)
    torch.library.impl(name, "default", function, lib=_LIBRARY)
    return getattr(torch.ops.spikequant, function.__name__).default


def _fake(operator):
    return torch.library.register_fake(operator, lib=_LIBRARY)


def integrate_fire_forward(
    x: Tensor,
    v0: Tensor,
    threshold: Tensor,
    spike_value: Tensor | None,
    a: float,
    b: float,
    hard: bool,
    v_reset: float,
    detach: bool,
    kind: int,
    alpha: float,
    c1: float,
    c2: float,
    per_sample: int,
    inner: int,
) -> tuple[Tensor, Tensor]:
    """``(out[T, ...], v_T)`` of the recurrence; ``threshold`` is ``[rows, C]`` contiguous."""
    out, v_final = _extension().forward(
        x, v0, threshold, spike_value, a, b, hard, v_reset, per_sample, inner
    )
    return out, v_final


integrate_fire_forward = _operator(integrate_fire_forward)


@_fake(integrate_fire_forward)
def _forward_fake(x, v0, threshold, spike_value, *args):
    return torch.empty_like(x), torch.empty_like(v0)


def integrate_fire_backward(
    grad_out: Tensor | None,
    grad_v_final: Tensor | None,
    x: Tensor,
    v0: Tensor,
    threshold: Tensor,
    spike_value: Tensor | None,
    a: float,
    b: float,
    hard: bool,
    v_reset: float,
    detach: bool,
    kind: int,
    alpha: float,
    c1: float,
    c2: float,
    per_sample: int,
    inner: int,
    need_v0: bool,
    need_th: bool,
    need_sv: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients w.r.t. ``x``, ``v0``, ``threshold`` (``[rows, C]``) and the spike value
    (``[C]``); the ones not asked for are empty tensors."""
    grads = _extension().backward(
        grad_out,
        grad_v_final,
        x,
        v0,
        threshold,
        spike_value,
        a,
        b,
        hard,
        v_reset,
        detach,
        kind,
        alpha,
        c1,
        c2,
        per_sample,
        inner,
        need_v0,
        need_th,
        need_sv,
    )
    # outputs may not alias each other: a fresh empty tensor for each gradient not asked for
    return tuple(x.new_empty(0) if g is None else g for g in grads)


integrate_fire_backward = _operator(integrate_fire_backward)


@_fake(integrate_fire_backward)
def _backward_fake(grad_out, grad_v_final, x, v0, threshold, spike_value, *args):
    need_v0, need_th, need_sv = args[-3:]
    return (
        torch.empty_like(x),
        torch.empty_like(v0) if need_v0 else x.new_empty(0),
        x.new_empty(threshold.shape) if need_th else x.new_empty(0),
        x.new_empty(threshold.shape[1]) if need_sv else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, v0, threshold, spike_value, *numbers = inputs
    ctx.save_for_backward(x, v0, threshold, spike_value)
    ctx.numbers = numbers
    ctx.sv_given = spike_value is not None


def _backward(ctx, grad_out, grad_v_final):
    x, v0, threshold, spike_value = ctx.saved_tensors
    need_x, need_v0, need_th, need_sv = ctx.needs_input_grad[:4]
    need_sv = bool(need_sv and ctx.sv_given)
    grad_x, grad_v0, grad_th, grad_sv = integrate_fire_backward(
        None if grad_out is None else _common.in_layout(grad_out, x),
        None if grad_v_final is None else _common.in_layout(grad_v_final, v0),
        x,
        v0,
        threshold,
        spike_value,
        *ctx.numbers,
        bool(need_v0),
        bool(need_th),
        need_sv,
    )
    rest = (None,) * len(ctx.numbers)
    return (
        grad_x if need_x else None,
        grad_v0 if need_v0 else None,
        grad_th if need_th else None,
        grad_sv.reshape(spike_value.shape) if need_sv else None,
        *rest,
    )


torch.library.register_autograd(
    integrate_fire_forward, _backward, setup_context=_setup_context, lib=_LIBRARY
)
