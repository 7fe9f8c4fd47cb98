"""Export presets: the NIR graph adjusted to what one reader (snnTorch, Norse, SpikingJelly, Lava)
actually computes when it imports a file.

:func:`to_nir` writes NIR's own semantics (forward Euler with step ``dt``, fire on
``v > v_threshold``, reset to ``v_reset``, dims without the batch). Readers differ from that in
documented ways; a :class:`Target` rewrites the graph so that the reader's network reproduces
spikequant's spikes, and every rewrite keeps the graph a valid NIR graph of the same network
:

* ``dt``: the step the reader assumes (snnTorch hard-codes 1e-4, SpikingJelly defaults to 1e-4,
  Norse to 1e-3); time constants are written for it.
* ``batch_flatten``: snnTorch's and Norse's readers build ``torch.nn.Flatten(start_dim, end_dim)``
  from the node and run it on ``[B, ...]``, while NIR counts dims without the batch
  (``start_dim=0``); the dims are written counted from the end (``start_dim=-3, end_dim=-1``),
  which means the same with and without a batch dim, so the graph stays valid NIR.
* ``if_as_lif``: snnTorch imports a NIR ``IF`` as a leaky neuron with ``beta = 0.9``; an IF is
  written as a ``LIF`` with ``tau = 1e12 dt`` and ``r = tau/dt`` instead, whose decay
  ``1 - dt/tau`` is exactly 1 in float32 (``v += I``, the IF update).
* ``fold_lif_r``: Norse ignores a LIF's ``r`` (its input gain is ``dt/tau``); ``r`` is multiplied
  into the preceding conv/linear weights and bias, and ``r = 1`` is written.
* ``sum_pool``: Norse has no ``AvgPool2d``; it is written as ``SumPool2d`` and ``1/k^2`` is
  multiplied into the weights of the next conv/linear layer.
* ``inclusive_threshold``: SpikingJelly fires on ``v >= v_threshold`` (NIR: ``>``); ``V_th``
  itself is written instead of the largest float below it.
* ``zero_reset``: the reader resets to 0 whatever ``v_reset`` says (snnTorch, Norse, Lava);
  a neuron with another ``v_reset`` is refused.
* ``uniform_threshold``: the reader takes one threshold per layer (SpikingJelly, snnTorch);
  per-channel thresholds are refused.

Soft reset (``V = H - V_th z``, ATIF-u) stays what :func:`to_nir` makes of it: refused, or with
``soft_reset="metadata"`` written as the ``spikequant_reset: subtract`` node annotation that these
readers ignore (they then run a hard reset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from .._optional import require
from ..errors import ConversionError
from .mapping import inclusive_threshold

nir = require("nir", "NIR export")

IF_AS_LIF_TAU_STEPS = 1e12  # 1 - 1/1e12 rounds to 1.0 in float32: no leak


@dataclass(frozen=True)
class Target:
    """One reader's conventions (see the module docstring for each flag)."""

    name: str
    dt: float
    reader: str  # how the reader is called, for docs and messages
    batch_flatten: bool = False
    if_as_lif: bool = False
    fold_lif_r: bool = False
    sum_pool: bool = False
    inclusive_threshold: bool = False
    zero_reset: bool = False
    uniform_threshold: bool = False


TARGETS: dict[str, Target] = {
    "snntorch": Target(
        "snntorch",
        dt=1e-4,
        reader="snntorch.import_nir.import_from_nir(graph)",
        batch_flatten=True,
        if_as_lif=True,
        zero_reset=True,
        uniform_threshold=True,
    ),
    "norse": Target(
        "norse",
        dt=1e-3,
        reader="norse.torch.from_nir(graph, dt=1e-3)",
        batch_flatten=True,
        fold_lif_r=True,
        sum_pool=True,
        zero_reset=True,
    ),
    "spikingjelly": Target(
        "spikingjelly",
        dt=1e-4,
        reader="spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=1e-4)",
        inclusive_threshold=True,
        uniform_threshold=True,
    ),
    "lava": Target(
        "lava",
        dt=1.0,
        reader="lava-dl / Lava NIR import (time step 1)",
        zero_reset=True,
    ),
}


def get_target(name: str) -> Target:
    """The preset called ``name``; an unknown name is a :class:`ConversionError`."""
    if name not in TARGETS:
        raise ConversionError(f"unknown export target {name!r} (known: {', '.join(TARGETS)})")
    return TARGETS[name]


def chain_order(graph: nir.NIRGraph) -> list[str]:
    """Node names from ``input`` to ``output`` (the graphs :func:`to_nir` writes are chains)."""
    following = dict(graph.edges)
    order, name = ["input"], "input"
    while name in following:
        name = following[name]
        order.append(name)
    return order


_WEIGHTED = (nir.Affine, nir.Linear, nir.Conv2d)


def _scale_rows(node: nir.NIRNode, gain: np.ndarray) -> None:
    """Multiply the outputs of a weighted node by ``gain`` (a scalar or per output channel)."""
    view = gain.reshape(-1, *([1] * (node.weight.ndim - 1))) if gain.ndim else gain
    node.weight = (node.weight * view).astype(np.float32)
    if getattr(node, "bias", None) is not None:
        node.bias = (node.bias * gain).astype(np.float32)


def _per_channel(values: np.ndarray, name: str, where: str) -> np.ndarray:
    """One value per output channel (or one for all) of a per-neuron array, else refuse."""
    values = np.asarray(values)
    if np.unique(values).size == 1:
        return np.asarray(values.flat[0])
    flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values[:, None]
    if (flat == flat[:, :1]).all():
        return flat[:, 0]
    raise ConversionError(f"cannot fold {name} of {where}: it varies within a channel")


def adapt_graph(graph: nir.NIRGraph, target: Target) -> nir.NIRGraph:
    """Rewrite ``graph`` (made by :func:`to_nir` with ``dt=target.dt``) for ``target``'s reader,
    in place; returns it. Refusals are :class:`ConversionError` naming the node."""
    order = chain_order(graph)
    nodes = graph.nodes
    pending_input_gain: float | None = None  # from a SumPool2d, for the next weighted node
    for index, name in enumerate(order):
        node = nodes[name]
        if isinstance(node, (nir.IF, nir.LIF)):
            _check_neuron(name, node, target)
            if target.inclusive_threshold:
                node.v_threshold = inclusive_threshold(node.v_threshold)
            if target.fold_lif_r and isinstance(node, nir.LIF):
                gain = _per_channel(node.r, "r", name)
                previous = nodes[order[index - 1]]
                if not isinstance(previous, _WEIGHTED):
                    raise ConversionError(
                        f"cannot export {name!r} for {target.name}: its input gain r must be "
                        "folded into a conv/linear layer right before it"
                    )
                _scale_rows(previous, gain)
                node.r = np.ones_like(node.r)
            if target.if_as_lif and isinstance(node, nir.IF):
                nodes[name] = _if_as_lif(node, target.dt)
        elif isinstance(node, nir.AvgPool2d) and target.sum_pool:
            if np.any(np.asarray(node.padding) != 0):
                raise ConversionError(
                    f"cannot export {name!r} for {target.name}: average pooling with padding"
                )
            nodes[name] = nir.SumPool2d(
                kernel_size=node.kernel_size, stride=node.stride, padding=node.padding
            )
            pending_input_gain = (pending_input_gain or 1.0) / float(np.prod(node.kernel_size))
        elif isinstance(node, nir.Flatten) and target.batch_flatten:
            ndim = len(node.input_type["input"])  # dims of one sample, as NIR counts them
            node.start_dim = int(node.start_dim) - ndim if node.start_dim >= 0 else node.start_dim
            node.end_dim = int(node.end_dim) - ndim if node.end_dim >= 0 else node.end_dim
        elif isinstance(node, _WEIGHTED) and pending_input_gain is not None:
            node.weight = (node.weight * pending_input_gain).astype(np.float32)
            pending_input_gain = None
        if isinstance(node, (nir.IF, nir.LIF, nir.Output)) and pending_input_gain is not None:
            raise ConversionError(
                f"cannot export for {target.name}: average pooling before {name!r} has no "
                "conv/linear layer after it to take its 1/k^2"
            )
    graph.metadata = {
        **(graph.metadata or {}),
        "target": target.name,
        "target_reader": target.reader,
        "dt": target.dt,
    }
    if target.batch_flatten:
        graph.metadata["flatten_dims"] = "counted from the last dim"
    return graph


def _check_neuron(name: str, node, target: Target) -> None:
    if target.zero_reset and np.any(np.asarray(node.v_reset) != 0):
        raise ConversionError(
            f"cannot export {name!r} for {target.name}: its reader resets membranes to 0, the "
            "neuron to v_reset = " + f"{float(np.asarray(node.v_reset).flat[0]):g}"
        )
    if target.uniform_threshold and np.unique(node.v_threshold).size != 1:
        raise ConversionError(
            f"cannot export {name!r} for {target.name}: its reader takes one threshold per "
            "layer, the neuron has per-channel thresholds"
        )
    if isinstance(node, nir.LIF) and np.any(np.asarray(node.v_leak) != 0):
        raise ConversionError(f"cannot export {name!r} for {target.name}: v_leak must be 0")


def _if_as_lif(node: nir.IF, dt: float) -> nir.LIF:
    tau = np.full_like(node.r, dt * IF_AS_LIF_TAU_STEPS, dtype=np.float64)
    return nir.LIF(
        tau=tau,
        r=np.full_like(tau, IF_AS_LIF_TAU_STEPS),
        v_leak=np.zeros_like(tau),
        v_threshold=node.v_threshold,
        v_reset=node.v_reset,
        metadata={**(node.metadata or {}), "spikequant_if_as_lif": True},
    )


def to_nir_for(
    model: nn.Module, sample_input, target: str, *, soft_reset: str = "error"
) -> nir.NIRGraph:
    """:func:`~spikequant.export.to_nir` at the target's ``dt``, adapted for its reader."""
    from .to_nir import to_nir

    preset = get_target(target)
    return adapt_graph(to_nir(model, sample_input, dt=preset.dt, soft_reset=soft_reset), preset)
