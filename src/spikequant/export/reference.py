r"""A plain simulator of NIR chain graphs under NIR's own semantics, independent of spikequant.

It is what a NIR consumer computes: each neuron node integrates its ODE by forward Euler with step
``dt`` (IF: ``v += dt R I``; LIF: ``v += dt/tau (v_leak - v + R I)``), fires on
``v > v_threshold`` and resets to ``v_reset``; node metadata (such as spikequant's soft-reset
annotation) is ignored, as other tools ignore it. Comparing it with the original network shows
whether an exported file means the same thing outside spikequant.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._optional import require
from ..errors import ConversionError, ShapeError

nir = require("nir", "NIR export")


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _pair(a) -> tuple[int, int]:
    flat = np.asarray(a).reshape(-1)
    return (int(flat[0]), int(flat[0])) if flat.size == 1 else (int(flat[0]), int(flat[1]))


def _stateless(node: nir.NIRNode, x: torch.Tensor, name: str) -> torch.Tensor:
    """One step of a stateless node on ``x[B, ...]``."""
    if isinstance(node, nir.Affine):
        return x @ _t(node.weight).T + _t(node.bias)
    if isinstance(node, nir.Linear):
        return x @ _t(node.weight).T
    if isinstance(node, nir.Conv2d):
        padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
        return F.conv2d(
            x,
            _t(node.weight),
            _t(node.bias),
            stride=_pair(node.stride),
            padding=padding,
            dilation=_pair(node.dilation),
            groups=int(np.asarray(node.groups).reshape(-1)[0]),
        )
    if isinstance(node, nir.AvgPool2d):
        return F.avg_pool2d(x, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if isinstance(node, nir.SumPool2d):
        k = _pair(node.kernel_size)
        return F.avg_pool2d(x, k, _pair(node.stride), _pair(node.padding), divisor_override=1)
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return x.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, nir.Scale):
        return x * _t(node.scale)
    raise ConversionError(
        f"the NIR reference simulator has no rule for node {name!r} ({type(node).__name__})"
    )


@torch.no_grad()
def simulate(graph: nir.NIRGraph, x_seq: torch.Tensor, dt: float | None = None) -> torch.Tensor:
    """Run a NIR chain on ``x_seq[T, B, ...]`` step by step; returns the output ``[T, B, ...]``."""
    from .from_nir import _chain

    if x_seq.ndim < 2:
        raise ShapeError(f"expected time-first input [T, B, ...], got shape {tuple(x_seq.shape)}")
    if dt is None:
        dt = float(np.asarray((graph.metadata or {}).get("dt", 1.0)).reshape(-1)[0])
    order = _chain(graph)[1:-1]
    nodes = [(name, graph.nodes[name]) for name in order]
    membranes: dict[str, torch.Tensor] = {}
    outputs = []
    for x in x_seq.unbind(0):
        for name, node in nodes:
            if isinstance(node, (nir.IF, nir.LIF)):
                v = membranes.get(name, torch.zeros_like(x))
                if isinstance(node, nir.LIF):
                    v = v + dt / _t(node.tau) * (_t(node.v_leak) - v + _t(node.r) * x)
                else:
                    v = v + dt * _t(node.r) * x
                z = v > _t(node.v_threshold)
                membranes[name] = torch.where(z, _t(node.v_reset).expand_as(v), v)
                x = z.float()
            else:
                x = _stateless(node, x, name)
        outputs.append(x)
    return torch.stack(outputs)
