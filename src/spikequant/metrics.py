"""Measurements of spiking networks: SQNR, sparsity, firing rates and synaptic operations.

:class:`SpikeMonitor` hooks a model and counts what really happens in forward passes:

* per spiking layer (every :class:`~spikequant.neurons.SpikingNeuron`): spikes (non-zero outputs),
  neurons, firing rate = spikes / (T * samples * neurons) — the ATIF paper's sparsity ``theta``
  of that tensor (mean spikes per neuron per timestep);
* global ``theta`` = mean of the per-layer thetas (the paper's definition), and
  ``spikes_per_neuron`` = all spikes / (samples * all neurons) over the whole window;
* per conv/linear layer: ``ops`` = sum over non-zero inputs of their fan-out (for a spike input,
  each is one synaptic accumulate), and ``dense_macs`` had every input been non-zero.
  ``synops`` adds the ops of every layer but the first one called (whose analog input makes it
  multiply-accumulates, reported as ``first_layer_macs``). All counts are per sample: the batch
  size is read from the first spiking layer's ``[T, B, ...]`` output, or, in a network without
  spiking neurons, from the model's output (``[B, classes]`` or ``[T, B, classes]``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ShapeError


def sqnr_db(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """``10 log10(E[y^2] / E[(y - y_hat)^2])``; ``inf`` for a perfect reconstruction."""
    if y.shape != y_hat.shape:
        raise ShapeError(f"sqnr_db: shapes differ {tuple(y.shape)} vs {tuple(y_hat.shape)}")
    signal = float(y.double().pow(2).mean())
    noise = float((y.double() - y_hat.double()).pow(2).mean())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise)


def sparsity_theta(spikes: torch.Tensor) -> float:
    """Mean number of spikes per neuron per timestep of a ``[T, B, ...]`` spike tensor."""
    return float((spikes != 0).float().mean())


def _conv_ops(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> float:
    """Sum over non-zero inputs of the number of output values each one reaches."""
    nd = x.ndim - 2
    g = module.groups
    mask = (x != 0).to(torch.float32)
    n, c = mask.shape[:2]
    per_group = mask.view(n, g, c // g, *mask.shape[2:]).sum(2)
    kernel = torch.ones(g, 1, *module.kernel_size, dtype=torch.float32, device=x.device)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    padding = module.padding if isinstance(module.padding, (tuple, int)) else 0
    if module.padding == "same":
        padding = tuple(k // 2 for k in module.kernel_size)
    reach = conv(
        per_group, kernel, stride=module.stride, padding=padding, dilation=module.dilation, groups=g
    )
    return float(reach.sum()) * (module.out_channels // g)


class SpikeMonitor:
    """Context manager collecting spike and operation counts over any number of forward passes.

    Example::

        with SpikeMonitor(model) as mon:
            for x, y in loader:
                reset_state(model); model(x)
        print(mon.report()["theta"])
    """

    def __init__(self, model: nn.Module) -> None:
        from .neurons import SpikingNeuron

        self.model = model
        self._neuron_type = SpikingNeuron
        self._handles: list = []
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.layers: OrderedDict[str, dict] = OrderedDict()
        self.synapses: OrderedDict[str, dict] = OrderedDict()
        self._first_layer: str | None = None
        self._new_pass = True

    def __enter__(self) -> SpikeMonitor:
        self._handles.append(self.model.register_forward_pre_hook(self._on_pass))
        self._handles.append(self.model.register_forward_hook(self._after_pass))
        for name, module in self.model.named_modules():
            if isinstance(module, self._neuron_type):
                self._handles.append(module.register_forward_hook(self._neuron_hook(name)))
            elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                self._handles.append(module.register_forward_hook(self._synapse_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _on_pass(self, module, inputs) -> None:
        self._new_pass = True

    def _after_pass(self, module, inputs, output) -> None:
        if self._new_pass and isinstance(output, torch.Tensor) and output.ndim >= 2:
            self.samples += output.shape[0] if output.ndim == 2 else output.shape[1]
        self._new_pass = False

    def _neuron_hook(self, name: str):
        def hook(module, inputs, output):
            if self._new_pass:
                self.samples += output.shape[1]
                self._new_pass = False
            entry = self.layers.setdefault(
                name, {"spikes": 0.0, "events": 0.0, "neurons": 0, "timesteps": 0}
            )
            entry["spikes"] += float((output != 0).sum())
            entry["events"] += float(output.shape[0] * output.shape[1])
            entry["neurons"] = math.prod(output.shape[2:])
            entry["timesteps"] = output.shape[0]

        return hook

    def _synapse_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            if self._first_layer is None:
                self._first_layer = name
            entry = self.synapses.setdefault(name, {"ops": 0.0, "dense_macs": 0.0})
            with torch.no_grad():
                if isinstance(module, nn.Linear):
                    entry["ops"] += float((x != 0).sum()) * module.out_features
                    entry["dense_macs"] += float(output.numel()) * module.in_features
                else:
                    entry["ops"] += _conv_ops(module, x)
                    fan_in = (module.in_channels // module.groups) * math.prod(module.kernel_size)
                    entry["dense_macs"] += float(output.numel()) * fan_in

        return hook

    def report(self) -> dict:
        """Per-sample counts; see the module docstring for the definitions."""
        n = max(self.samples, 1)
        layers = {}
        total_spikes = total_neurons = 0.0
        for name, e in self.layers.items():
            rate = e["spikes"] / max(e["events"] * e["neurons"], 1)
            layers[name] = {
                "firing_rate": rate,
                "neurons": e["neurons"],
                "spikes_per_sample": e["spikes"] / n,
                "spikes_per_neuron": e["spikes"] / (n * max(e["neurons"], 1)),
            }
            total_spikes += e["spikes"]
            total_neurons += e["neurons"]
        synapses = {name: {k: v / n for k, v in e.items()} for name, e in self.synapses.items()}
        synops = sum(e["ops"] for k, e in synapses.items() if k != self._first_layer)
        first = synapses.get(self._first_layer, {}).get("ops", 0.0) if self._first_layer else 0.0
        return {
            "samples": self.samples,
            "theta": sum(v["firing_rate"] for v in layers.values()) / max(len(layers), 1),
            "spikes_per_neuron": total_spikes / (n * max(total_neurons, 1)),
            "total_neurons": int(total_neurons),
            "layers": layers,
            "synapses": synapses,
            "synops": synops,
            "first_layer_macs": first,
            "dense_macs": sum(e["dense_macs"] for e in synapses.values()),
        }


def firing_rates(report: dict) -> dict[str, float]:
    """Per-layer firing rates from a :meth:`SpikeMonitor.report`."""
    return {name: v["firing_rate"] for name, v in report["layers"].items()}


__all__ = ["SpikeMonitor", "firing_rates", "sparsity_theta", "sqnr_db"]
