r"""Import a NIR chain graph into spikequant modules (:func:`from_nir`).

Supported nodes: Input, Output, Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, IF
and LIF. The result is an :class:`ImportedNetwork` that maps time-first input ``[T, B, ...]`` to
``[T, B, ...]``: stateless nodes run through :class:`~spikequant.layers.TimeFold`, neurons are
spikequant :class:`~spikequant.neurons.IF` / :class:`~spikequant.neurons.LIF` modules with the
parameters given by the inverse of the mapping in :mod:`spikequant.export.mapping`.

Refused with :class:`~spikequant.errors.ConversionError` (naming the node): graphs that are not a
single chain (branches, recurrence), nested graphs, and node types spikequant has no module for
(CubaLIF, CubaLI, LI, I, Threshold, Delay, Conv1d), neurons with a resting potential
``v_leak != 0``, or thresholds / time constants that vary within a channel.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .._optional import require
from ..errors import ConversionError, ShapeError
from ..layers import MeanOverTime, TimeFold
from ..neurons import IF, LIF
from ..neurons.reset import Subtract, Zero
from .mapping import (
    READOUT_MEAN,
    RESET_KEY,
    SOFT_RESET,
    inclusive_threshold,
    layer_or_channel,
    lif_from_nir,
    uniform_value,
)

nir = require("nir", "NIR export")


class ElementwiseScale(nn.Module):
    """``y = s * x`` with ``s`` shaped like one step (broadcast over the leading ``[T, B]``)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}"


class ImportedNetwork(nn.Sequential):
    """A chain imported from NIR; input ``[T, B, *input_shape]``, output ``[T, B, ...]``."""

    def __init__(self, layers: OrderedDict, input_shape: tuple[int, ...], dt: float) -> None:
        super().__init__(layers)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.dt = float(dt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != len(self.input_shape) + 2 or tuple(x.shape[2:]) != self.input_shape:
            raise ShapeError(
                "imported NIR network expects time-first input [T, B, "
                f"{', '.join(map(str, self.input_shape))}], "
                f"got shape {tuple(x.shape)}"
            )
        return super().forward(x)


def _chain(graph: nir.NIRGraph) -> list[str]:
    """Node names from the single Input to the single Output, or a ConversionError."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(
            f"NIR graph has {len(inputs)} inputs and {len(outputs)} outputs; only single-input, "
            "single-output chains can be imported"
        )
    successors: dict[str, list[str]] = {k: [] for k in graph.nodes}
    predecessors: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise ConversionError(f"NIR edge ({src!r}, {dst!r}) names a node that does not exist")
        successors[src].append(dst)
        predecessors[dst].append(src)
    order = [inputs[0]]
    while order[-1] != outputs[0]:
        here = order[-1]
        nxt = successors[here]
        if len(nxt) != 1:
            raise ConversionError(
                f"NIR node {here!r} feeds {len(nxt)} nodes; only sequential chains can be imported"
            )
        if len(predecessors[nxt[0]]) != 1:
            raise ConversionError(
                f"NIR node {nxt[0]!r} has {len(predecessors[nxt[0]])} inputs; only sequential "
                "chains can be imported (no branches, sums or recurrence)"
            )
        if nxt[0] in order:
            raise ConversionError(f"NIR graph has a cycle through {nxt[0]!r}")
        order.append(nxt[0])
    if len(order) != len(graph.nodes):
        unused = sorted(set(graph.nodes) - set(order))
        raise ConversionError(f"NIR graph has nodes outside the input-output chain: {unused}")
    return order


def _ints(value, n: int = 2) -> tuple[int, ...]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        return tuple(int(arr[0]) for _ in range(n))
    return tuple(int(v) for v in arr)


def _tensor(value) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


def _is_soft(node: nir.NIRNode) -> bool:
    value = (node.metadata or {}).get(RESET_KEY)
    if isinstance(value, bytes):
        value = value.decode()
    return value == SOFT_RESET


def _neuron(name: str, node, dt: float) -> list[tuple[str, nn.Module]]:
    shape = tuple(np.shape(node.v_threshold))
    threshold = layer_or_channel(inclusive_threshold(node.v_threshold), "v_threshold", name)
    if not bool((threshold > 0).all()):
        raise ConversionError(f"NIR node {name!r}: spikequant neurons need positive thresholds")
    reset = Subtract() if _is_soft(node) else Zero(uniform_value(node.v_reset, "v_reset", name))
    per_channel = threshold.ndim == 1
    common = dict(num_channels=int(threshold.shape[0]) if per_channel else None, reset=reset)
    r = np.asarray(node.r, dtype=np.float64)
    if isinstance(node, nir.LIF):
        if np.any(np.asarray(node.v_leak) != 0):
            raise ConversionError(
                f"NIR node {name!r}: LIF with v_leak != 0 (a resting potential); spikequant's LIF "
                "decays towards 0"
            )
        tau = uniform_value(node.tau, "tau", name)
        r_uniform = bool(np.all(r == r.reshape(-1)[0]))
        tau_steps, decay_input, gain = lif_from_nir(tau, float(r.reshape(-1)[0]), dt, name)
        if not r_uniform:
            decay_input, gain = False, r / tau_steps
        module = LIF(tau=tau_steps, decay_input=decay_input, **common)
    elif isinstance(node, nir.IF):
        gain = dt * r  # the Euler step's input factor; the export writes R = 1/dt, i.e. gain 1
        module = IF(**common)
    else:  # pragma: no cover - dispatch guarantees IF/LIF
        raise ConversionError(f"NIR node {name!r}: not a neuron")
    with torch.no_grad():
        module.threshold.copy_(threshold)
    layers: list[tuple[str, nn.Module]] = []
    gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), shape)
    # float32 storage of R = 1/dt may miss 1/dt by an ulp; that is not a real gain.
    if not np.allclose(gain, 1.0, rtol=1e-6, atol=0.0):
        layers.append(
            (f"{name}.input_gain", ElementwiseScale(torch.from_numpy(gain.astype(np.float32))))
        )
    layers.append((name, module))
    return layers


def _module(name: str, node: nir.NIRNode, dt: float) -> list[tuple[str, nn.Module]]:
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = np.asarray(node.weight)
        if weight.ndim != 2:
            raise ConversionError(
                f"NIR node {name!r}: {type(node).__name__} weight of shape {weight.shape} "
                "(need 2-D)"
            )
        bias = isinstance(node, nir.Affine)
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
        with torch.no_grad():
            layer.weight.copy_(_tensor(weight))
            if bias:
                layer.bias.copy_(_tensor(node.bias).reshape(-1))
        return [(name, TimeFold(layer))]
    if isinstance(node, nir.Conv2d):
        weight = np.asarray(node.weight)
        padding = node.padding if isinstance(node.padding, str) else _ints(node.padding)
        groups = int(np.asarray(node.groups).reshape(-1)[0])
        layer = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=_ints(node.stride),
            padding=padding,
            dilation=_ints(node.dilation),
            groups=groups,
            bias=True,
        )
        with torch.no_grad():
            layer.weight.copy_(_tensor(weight))
            bias = np.zeros(weight.shape[0]) if node.bias is None else node.bias
            layer.bias.copy_(_tensor(np.broadcast_to(bias, (weight.shape[0],))))
        return [(name, TimeFold(layer))]
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        divisor = 1 if isinstance(node, nir.SumPool2d) else None
        pool = nn.AvgPool2d(
            _ints(node.kernel_size),
            stride=_ints(node.stride),
            padding=_ints(node.padding),
            count_include_pad=True,
            divisor_override=divisor,
        )
        return [(name, TimeFold(pool))]
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        # NIR dims exclude the batch; TimeFold's input has one leading (T*B) dim.
        return [
            (
                name,
                TimeFold(
                    nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
                ),
            )
        ]
    if isinstance(node, nir.Scale):
        return [(name, ElementwiseScale(_tensor(node.scale)))]
    if isinstance(node, (nir.IF, nir.LIF)):
        return _neuron(name, node, dt)
    why = {
        "CubaLIF": "spikequant neurons have no synaptic current state",
        "CubaLI": "spikequant has no non-spiking leaky read-out with synaptic current",
        "LI": "spikequant has no non-spiking leaky integrator read-out",
        "I": "spikequant has no non-spiking integrator read-out",
        "Threshold": "spikequant has no stateless threshold module",
        "Delay": "spikequant has no delay line",
        "NIRGraph": "nested graphs are not imported",
    }.get(type(node).__name__, "no spikequant module implements it")
    raise ConversionError(f"cannot import NIR node {name!r} ({type(node).__name__}): {why}")


def from_nir(graph: nir.NIRGraph, *, dt: float | None = None) -> ImportedNetwork:
    """Build spikequant modules from a NIR chain graph (see module docstring).

    Args:
        graph: a :class:`nir.NIRGraph` (e.g. from :func:`nir.read`).
        dt: the simulation step the graph's time constants are divided by; defaults to the graph's
            ``metadata["dt"]`` (written by :func:`~spikequant.export.to_nir`) or 1.0.

    Returns:
        An :class:`ImportedNetwork` taking ``[T, B, *input_shape]``; call
        :func:`spikequant.reset_state` on it between independent sequences.
    """
    if not isinstance(graph, nir.NIRGraph):
        raise ConversionError(f"from_nir expects a nir.NIRGraph, got {type(graph).__name__}")
    if dt is None:
        dt = float(np.asarray((graph.metadata or {}).get("dt", 1.0)).reshape(-1)[0])
    if not (np.isfinite(dt) and dt > 0):
        raise ConversionError(f"dt must be a positive finite number, got {dt!r}")
    order = _chain(graph)
    input_shape = np.asarray(graph.nodes[order[0]].input_type["input"]).reshape(-1)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for name in order[1:-1]:
        for key, module in _module(name, graph.nodes[name], dt):
            # nn.Module names may not contain dots; keep them readable and unique.
            safe = key.replace(".", "_")
            while safe in layers:
                safe += "_"
            layers[safe] = module
    if not layers:
        raise ConversionError("NIR graph has no node between its input and output")
    readout = (graph.metadata or {}).get("readout")
    if (readout.decode() if isinstance(readout, bytes) else readout) == READOUT_MEAN:
        layers["readout"] = MeanOverTime()
    return ImportedNetwork(layers, tuple(int(v) for v in input_shape), dt)
