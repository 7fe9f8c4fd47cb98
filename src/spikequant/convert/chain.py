"""A ``rate`` conversion as the time-first sequential chain the NIR exporter walks.

The converted graph runs one step per call with every layer in order; over T steps that is the
same as running each layer over the whole ``[T, B, ...]`` sequence in turn (zero delay, no
recurrence), so a chain of layers (conv/linear/pool/flatten, folded over time) and IF neurons with
soft reset and spikes worth their threshold (``scale_output``) computes the same spikes. The
chain takes the static image ``[B, ...]``, repeats it over T (the analog input current of every
step) and returns the output layer's current per step ``[T, B, classes]``; the logits are its mean
over time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConversionError
from ..layers import RepeatTime, TimeFold
from ..neurons import IF
from ..quant.qat import QuantInput
from .network import NeuronStage, SpikingNetwork


def rate_chain(net: SpikingNetwork) -> nn.Sequential:
    """``RepeatTime(T)`` then the layers of the rate network ``net`` as one sequential chain
    (docstring of the module); it records ``timesteps`` like a registered model. The 8-bit input
    quantizer of a QAT source is left out: it is the identity on 8-bit images (``k / 255``).

    Refuses (:class:`ConversionError`) another method, a precharged membrane (``v0 > 0``, which a
    NIR neuron cannot start from) and a graph that is not one chain (skip connections)."""
    if net.method != "rate":
        raise ConversionError(f"only a rate conversion is a chain of IF neurons, not {net.method}")
    if not isinstance(net.timesteps, int) or net.timesteps < 1:
        raise ConversionError("the converted network has no timesteps")
    gm = net.graph_module
    layers: list[nn.Module] = [RepeatTime(net.timesteps)]
    previous = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise ConversionError("the rate network's output is not its last layer")
            break
        if (
            node.op != "call_module"
            or node.all_input_nodes != [previous]
            or len(previous.users) != 1
        ):
            raise ConversionError(
                f"{node.name}: the rate network is not one sequential chain (a skip connection "
                "or a function call); NIR export writes chains only"
            )
        module = gm.get_submodule(node.target)
        if isinstance(module, NeuronStage):
            layers.append(_if_neuron(node.target, module.neuron))
            if module.pool > 1:
                layers.append(TimeFold(nn.AvgPool2d(module.pool)))
        elif not isinstance(module, QuantInput):
            layers.append(TimeFold(copy.deepcopy(module)))
        previous = node
    chain = nn.Sequential(*layers).eval()
    chain.timesteps = net.timesteps
    return chain


def _if_neuron(name: str, neuron: nn.Module) -> IF:
    if getattr(neuron, "initial_membrane", 0.0):
        raise ConversionError(
            f"{name}: the membrane starts at {neuron.initial_membrane} V_th (initial_membrane); "
            "NIR neurons start at rest"
        )
    threshold = neuron.threshold.detach()
    plain = IF(
        1.0,
        num_channels=threshold.numel() if threshold.ndim else None,
        scale_output=True,
        min_threshold=neuron.min_threshold,
        backend="torch",
    )
    with torch.no_grad():
        plain.threshold.copy_(threshold)
    return plain.to(threshold.device)
