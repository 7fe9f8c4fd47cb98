"""Measurements of spiking networks: SQNR, sparsity, firing rates and synaptic operations.

:class:`SpikeMonitor` hooks a model and counts what really happens in forward passes:

* per spiking layer (every :class:`~spikequant.neurons.SpikingNeuron`): spikes (non-zero outputs),
  neurons, firing rate = spikes / (T * samples * neurons) — the ATIF paper's sparsity ``theta``
  of that tensor (mean spikes per neuron per timestep);
* global ``theta`` = mean of the per-layer thetas (the paper's definition), and
  ``spikes_per_neuron`` = all spikes / (samples * all neurons) over the whole window;
* per conv/linear layer (channel gates excluded): ``ops``, its SynOps as defined by
  :func:`synaptic_ops`, and ``dense_macs`` (:func:`dense_macs`, had every input been non-zero).
  ``synops`` adds the ops of every layer but the first one called, whose analog input makes it
  multiply-accumulates: its ``dense_macs`` are reported as ``first_layer_macs``. All counts are
  per sample: the batch size is read from the first spiking layer's ``[T, B, ...]`` output, or,
  in a network without spiking neurons, from the model's output (``[B, classes]`` or
  ``[T, B, classes]``).
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


SYNAPSE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def gate_module_ids(model: nn.Module) -> set[int]:
    """ids of the modules inside channel gates (modules with ``cost_role = "gate"``, e.g. SpQuant's
    gates): their convolutions act on pooled membranes and are gate operations, not synapses."""
    return {
        id(sub)
        for m in model.modules()
        if getattr(m, "cost_role", None) == "gate"
        for sub in m.modules()
    }


def fan_in(module: nn.Module) -> int:
    """Weights per output value: ``in_features``, or ``(C_in / groups) * prod(kernel)``."""
    if isinstance(module, nn.Linear):
        return module.in_features
    return (module.in_channels // module.groups) * math.prod(module.kernel_size)


def _nonzero_reach(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per output location and group, the number of non-zero inputs in its receptive field:
    ``[N, groups, *spatial]`` for a conv, ``[N, 1]`` for a linear layer (float32)."""
    mask = (x != 0).to(torch.float32)
    if isinstance(module, nn.Linear):
        return mask.reshape(-1, mask.shape[-1]).sum(-1, keepdim=True)
    g = module.groups
    n, c = mask.shape[:2]
    per_group = mask.view(n, g, c // g, *mask.shape[2:]).sum(2)
    kernel = torch.ones(g, 1, *module.kernel_size, dtype=torch.float32, device=x.device)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    padding = module.padding
    if padding == "same":
        padding = tuple(k // 2 for k in module.kernel_size)
    return conv(
        per_group, kernel, stride=module.stride, padding=padding, dilation=module.dilation, groups=g
    )


def _out_features(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def synaptic_ops(module: nn.Module, x: torch.Tensor, fed: torch.Tensor | None = None) -> float:
    r"""SynOps of one conv/linear layer on its input ``x`` (the library's one definition)::

        SynOps = sum_{i: x_i != 0} fan_out(i) = sum_{outputs o} #{i in RF(o): x_i != 0}

    every non-zero input (a spike) costs one accumulate per output value it reaches. With ``fed``
    (0/1, shaped like the layer's output) only the outputs whose current is accumulated count
    (outputs removed by spatial pruning or a closed channel are skipped).

    A network's SynOps is this summed over its conv/linear layers after the first one called: the
    first layer's input is analog, so it costs multiply-accumulates (:func:`dense_macs`). Both
    :class:`SpikeMonitor` (``synops``) and :func:`spikequant.cost.measure_activity`
    (``spike_synops``, ``effective_synops``) count with this function.
    """
    return float(synaptic_ops_tensor(module, x, fed))


def synaptic_ops_tensor(
    module: nn.Module, x: torch.Tensor, fed: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`synaptic_ops` as a float64 scalar on ``x``'s device (summed there over many
    batches, read on the host once)."""
    with torch.no_grad():
        reach = _nonzero_reach(module, x)
        groups = reach.shape[1]
        per_group = _out_features(module) // groups
        if fed is None:
            return reach.sum().double() * per_group
        n = reach.shape[0]
        fed_count = fed.reshape(n, groups, per_group, *fed.shape[2:]).to(torch.float32).sum(2)
        return (reach * fed_count).sum().double()


def dense_macs(module: nn.Module, output: torch.Tensor, fed: torch.Tensor | None = None) -> float:
    """Multiply-accumulates of a conv/linear layer had every input been non-zero:
    ``fan_in * outputs`` (with ``fed``, only the outputs whose current is accumulated)."""
    outputs = output.numel() if fed is None else float((fed != 0).sum())
    return float(outputs) * fan_in(module)


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
        gates = gate_module_ids(self.model)
        for name, module in self.model.named_modules():
            if isinstance(module, self._neuron_type):
                self._handles.append(module.register_forward_hook(self._neuron_hook(name)))
            elif isinstance(module, SYNAPSE_TYPES) and id(module) not in gates:
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
            # summed on the device (exact in float64), read once by report()
            entry["spikes"] += (output != 0).sum().double()
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
            entry["ops"] += synaptic_ops_tensor(module, x)
            entry["dense_macs"] += dense_macs(module, output)

        return hook

    def report(self) -> dict:
        """Per-sample counts; see the module docstring for the definitions."""
        n = max(self.samples, 1)
        for entry in (*self.layers.values(), *self.synapses.values()):
            entry.update({k: float(v) for k, v in entry.items() if isinstance(v, torch.Tensor)})
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
        first = synapses.get(self._first_layer, {}).get("dense_macs", 0.0)
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


__all__ = [
    "SpikeMonitor",
    "dense_macs",
    "fan_in",
    "firing_rates",
    "sparsity_theta",
    "sqnr_db",
    "synaptic_ops",
    "synaptic_ops_tensor",
]
