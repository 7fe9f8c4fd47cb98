r"""Energy of a converted SNN against its ANN (the MSAT paper's model, after Rathi & Roy 2020).

With 32-bit float operations costing ``E_MAC = 4.6 pJ`` per multiply-accumulate and
``E_AC = 0.9 pJ`` per accumulate::

    E_ANN = E_MAC * MACs                                   (every layer, one pass)
    E_SNN = E_MAC * T * MACs_1  +  E_AC * SynOps(T)        (first layer: analog input every step)

``MACs_1`` are the first layer's multiply-accumulates (its input is the real-valued image, repeated
at every step) and ``SynOps(T)`` the accumulates the spikes of every later layer cause over the
``T`` steps (:func:`spikequant.metrics.synaptic_ops`, counted from the actual spikes). The
reported fraction is ``E_SNN / E_ANN``; the paper's figure is 43.20 % for VGG-16 on CIFAR-100 at
T = 64.
"""

from __future__ import annotations

import torch
from torch import nn

from ..devices import model_device
from ..errors import ConfigError
from ..metrics import dense_macs, synaptic_ops
from .network import SpikingNetwork

#: pJ per 32-bit float accumulate and multiply-accumulate (the MSAT paper's constants)
AC_PJ = 0.9
MAC_PJ = 4.6
SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def energy_model(
    *, ann_macs: float, first_layer_macs: float, synops: float, timesteps: int
) -> dict[str, float]:
    """The module docstring's model for one sample: energies in pJ and the SNN's fraction."""
    ann = MAC_PJ * ann_macs
    snn = MAC_PJ * timesteps * first_layer_macs + AC_PJ * synops
    return {
        "ann_pj": ann,
        "snn_pj": snn,
        "snn_fraction_of_ann": snn / ann if ann else float("nan"),
        "ann_macs": ann_macs,
        "first_layer_macs": first_layer_macs,
        "synops": synops,
        "timesteps": timesteps,
    }


@torch.no_grad()
def measure_energy(net: SpikingNetwork, x: torch.Tensor, timesteps: int) -> dict[str, float]:
    """Run the converted network on the images ``x`` for ``timesteps`` steps, count the first
    layer's MACs and every later layer's SynOps from the real spikes, and apply
    :func:`energy_model` per sample. Rate and MSAT networks (a Ca-LIF network's input is already
    spikes; its cost is counted by the integer runtime's model)."""
    if net.method not in ("rate", "msat"):
        raise ConfigError(
            f"the ANN-vs-SNN energy model applies to rate and msat conversions, not {net.method!r}"
        )
    counts = {"first": 0.0, "synops": 0.0, "ann": 0.0, "calls": 0}
    first: list[nn.Module] = []
    layers = [m for m in net.graph_module.modules() if isinstance(m, SYNAPSES)]

    def hook(module, inputs, output):
        if not first:
            first.append(module)
        counts["calls"] += 1
        if module is first[0]:
            counts["first"] += dense_macs(module, output)
        else:
            counts["synops"] += synaptic_ops(module, inputs[0])
        if counts["calls"] <= len(layers):  # the first step: one pass of every layer
            counts["ann"] += dense_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        net.simulate(x.to(model_device(net)), [timesteps])
    finally:
        for h in handles:
            h.remove()
    n = len(x)
    return energy_model(
        ann_macs=counts["ann"] / n,
        first_layer_macs=counts["first"] / timesteps / n,
        synops=counts["synops"] / n,
        timesteps=timesteps,
    )
