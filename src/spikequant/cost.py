r"""Memory, operation and energy models of spiking networks (SpQuant-SNN section 5.3, [R]).

Counts come from one forward pass of any ``nn.Module`` on a dummy input (batch 1) with hooks:
every :class:`~spikequant.neurons.SpikingNeuron` output element is a neuron, every conv/linear
layer contributes its dense multiply-accumulates (MACs) per timestep.

* Memory (bits; MB = bits / 8e6, MiB = bits / 8 / 2^20)::

      M = w_bits * N_w + u_bits * sum_l C_l H_l W_l + 1 * N_spikes

  ``N_w`` = conv/linear weights, ``N_spikes`` = one step of binary spikes (one per neuron);
  ternary membranes are stored in 2 bits. Other parameters (BN, biases) are listed separately.
* Operations, with per-layer spatial/channel sparsity ``S_p``, ``S_c`` of the layer's outputs::

      FLOPs = sum_l T (1 - S_c)(1 - S_p) C_l H_l W_l C_{l-1} k^2           (synaptic MACs)
            + sum_l T (1 - S_c)(1 - S_p) C_l H_l W_l                        (membrane updates)
            + sum_gates (T C_l H_l W_l + 2 C_l C_{l+1})                       (gate: pool + 1x1)

  (the gate works on the pooled membrane, i.e. the spec's ``2 C_in C_out H W`` with H = W = 1).
* Energy (pJ, 7 nm): ``E = N_acc E_add(w) + N_mem E_add(u) [+ N_mem E_mul(u) for a float leak]``
  with FP32 add 0.38 / mul 1.31, FP16 0.16 / 0.34, INT8 (and below) 0.007 / 0.07. ``N_acc`` is
  the measured SynOps when given (spike-driven accumulates), else the sparse MACs.

:func:`measure_activity` measures on real data what the cost model takes as input: per-layer
``S_p``/``S_c`` of pruning neurons (e.g. :class:`~spikequant.spquant.neuron.QLIF`), and SynOps
(:func:`spikequant.metrics.synaptic_ops`) counted from the actual input spikes of each conv/linear
layer, skipping the outputs that a mask removed.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from .devices import model_device
from .errors import ConfigError
from .metrics import SYNAPSE_TYPES, dense_macs, fan_in, gate_module_ids, synaptic_ops

ENERGY_PJ = {  # 7 nm, per operation: (add, mul)
    32: (0.38, 1.31),
    16: (0.16, 0.34),
    8: (0.007, 0.07),
}
SYNAPSES = SYNAPSE_TYPES


def energy_per_op(bits: int) -> tuple[float, float]:
    """(add, mul) energy in pJ of the narrowest table entry that holds ``bits``."""
    for width in (8, 16, 32):
        if bits <= width:
            return ENERGY_PJ[width]
    return ENERGY_PJ[32]


# The cost model knows no method's classes; modules describe themselves (duck typing):
# * a module with ``cost_role = "gate"`` (e.g. SpQuant's channel gates): its sub-modules are
#   gate operations, not synapses;
# * a weight parametrization with a ``bits`` attribute: the weight's bit width;
# * a neuron with ``membrane_bits``: its membrane's bit width;
# * a pruning neuron (``record_fed``, ``fed_mask``, ``reset_sparsity_stats()``, ``sparsity()``):
#   where its input current was accumulated, read by :func:`measure_activity`.


def weight_bits_of(module: nn.Module, default: int = 32) -> int:
    """Bits of a (possibly parametrized) conv/linear weight."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if hasattr(p, "bits"):
                return int(p.bits)
    return default


def _is_pruning_neuron(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("record_fed", "fed_mask", "sparsity"))


def _neuron_bits(module: nn.Module, default: int) -> int:
    return int(getattr(module, "membrane_bits", default))


@torch.no_grad()
def profile_model(model: nn.Module, example: torch.Tensor) -> dict:
    """One batch-1 forward pass; returns neurons and synapse layers in execution order."""
    from .neurons import SpikingNeuron, probe_forward

    if example.shape[0] != 1:
        example = example[:1]
    events: list = []
    gates = gate_module_ids(model)

    def hook_for(kind, name):
        return lambda m, inputs, output: events.append((kind, name, m, tuple(output.shape)))

    hooks = []
    for name, module in model.named_modules():
        if id(module) in gates:
            continue
        if isinstance(module, SpikingNeuron):
            hooks.append((module, hook_for("neuron", name)))
        elif isinstance(module, SYNAPSES):
            hooks.append((module, hook_for("synapse", name)))
    probe_forward(model, example, hooks)
    neurons, synapses = OrderedDict(), OrderedDict()
    timesteps = None
    pending: list[str] = []
    for kind, name, module, shape in events:
        if kind == "neuron":
            timesteps = timesteps or shape[0]
            per_step = math.prod(shape[2:])
            neurons[name] = {
                "module": module,
                "neurons": per_step,
                "channels": shape[2] if len(shape) > 2 else 1,
            }
            for s in pending:
                synapses[s]["feeds"] = name
            pending = []
        else:
            if name in synapses:  # a module used twice: count its outputs once per call
                synapses[name]["calls"] += 1
                continue
            outputs_per_step = math.prod(shape[1:])
            synapses[name] = {
                "module": module,
                "outputs_per_step": outputs_per_step,
                "fan_in": fan_in(module),
                "out_channels": shape[1],
                "weights": module.weight.numel(),
                "feeds": None,
                "calls": 1,
            }
            pending.append(name)
    if not neurons:
        raise ConfigError("the model has no spiking neurons to cost")
    return {"timesteps": timesteps or 1, "neurons": neurons, "synapses": synapses}


def model_cost(
    model: nn.Module,
    example: torch.Tensor,
    *,
    weight_bits: int | None = None,
    membrane_bits: int | None = None,
    sparsity: dict | None = None,
) -> dict:
    """Memory, dense/sparse operations and energy (see the module docstring).

    ``weight_bits``/``membrane_bits`` override what the model carries (quantizer parametrizations,
    ``membrane_bits`` of QLIF layers; float layers count 32). ``sparsity`` is a
    :func:`measure_activity` result (per-layer ``S_p``/``S_c`` and measured SynOps) or a dict
    ``{"spatial": S_p, "channel": S_c}`` applied to every conv layer.
    """
    prof = profile_model(model, example)
    T = prof["timesteps"]
    layer_sparsity = (sparsity or {}).get("layers", {})
    global_sp = float((sparsity or {}).get("spatial", 0.0))
    global_sc = float((sparsity or {}).get("channel", 0.0))

    def density(neuron_name: str | None, is_conv: bool) -> tuple[float, float]:
        if neuron_name in layer_sparsity:
            s = layer_sparsity[neuron_name]
            return float(s["spatial"]), float(s["channel"])
        if is_conv and not layer_sparsity:
            return global_sp, global_sc
        return 0.0, 0.0

    n_weights = 0
    weight_bits_total = 0
    dense = sparse = 0.0
    layers = []
    for name, s in prof["synapses"].items():
        module = s["module"]
        wb = weight_bits if weight_bits is not None else weight_bits_of(module, 32)
        n_weights += s["weights"]
        weight_bits_total += wb * s["weights"]
        macs = s["outputs_per_step"] * s["fan_in"] * s["calls"]
        is_conv = not isinstance(module, nn.Linear)
        sp, sc = density(s["feeds"], is_conv)
        active = (1 - sp) * (1 - sc)
        dense += macs
        sparse += macs * active
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "weight_bits": wb,
                "weights": s["weights"],
                "dense_macs_per_step": macs,
                "spatial_sparsity": sp,
                "channel_sparsity": sc,
                "feeds": s["feeds"],
            }
        )
    n_neurons = 0
    membrane_bits_total = 0
    mem_dense = mem_sparse = 0.0
    gate_ops = 0.0
    float_leak_updates = 0.0
    for name, n in prof["neurons"].items():
        ub = membrane_bits if membrane_bits is not None else _neuron_bits(n["module"], 32)
        n_neurons += n["neurons"]
        membrane_bits_total += ub * n["neurons"]
        sp, sc = density(name, n["neurons"] != n["channels"])
        mem_dense += n["neurons"]
        mem_sparse += n["neurons"] * (1 - sp) * (1 - sc)
        if ub > 16:
            float_leak_updates += n["neurons"] * (1 - sp) * (1 - sc)
        gate = getattr(n["module"], "channel_gate", None)
        if gate is not None:
            source = gate.proj.in_channels
            src_neurons = next(
                (
                    m["neurons"]
                    for m in prof["neurons"].values()
                    if m["module"] is n["module"]._gate_source[0]
                ),
                0,
            )
            gate_ops += src_neurons + 2 * source * gate.proj.out_channels / T
    other_params = sum(p.numel() for p in model.parameters()) - sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.endswith(("weight", "weight.original"))
        and any(name.startswith(s + ".") for s in prof["synapses"])
    )
    spikes_bits = n_neurons
    memory_bits = {
        "weights": weight_bits_total,
        "membrane": membrane_bits_total,
        "spikes": spikes_bits,
    }
    memory_bits["total"] = sum(memory_bits.values())

    synops = (sparsity or {}).get("effective_synops")
    first_macs = (sparsity or {}).get("first_layer_macs")
    wb_energy = (
        weight_bits
        if weight_bits is not None
        else max((entry["weight_bits"] for entry in layers), default=32)
    )
    ub_energy = (
        membrane_bits
        if membrane_bits is not None
        else max((_neuron_bits(n["module"], 32) for n in prof["neurons"].values()), default=32)
    )
    add_w, mul_w = energy_per_op(wb_energy)
    add_u, mul_u = energy_per_op(ub_energy)
    if synops is not None:
        n_acc = float(synops)
        n_mac = float(first_macs or 0.0)
        source = "measured SynOps (+ first-layer MACs)"
    else:
        n_acc = T * sparse
        n_mac = 0.0
        source = "sparse MACs counted as accumulates"
    n_mem = T * mem_sparse
    energy = (
        n_acc * add_w + n_mac * (add_w + mul_w) + n_mem * add_u + T * float_leak_updates * mul_u
    )
    return {
        "timesteps": T,
        "neurons": n_neurons,
        "weights": n_weights,
        "other_parameters": other_params,
        "memory_bits": memory_bits,
        "memory_mb": {k: v / 8e6 for k, v in memory_bits.items()},
        "memory_mib": {k: v / 8 / 2**20 for k, v in memory_bits.items()},
        "dense_macs_per_step": dense,
        "sparse_macs_per_step": sparse,
        "dense_flops": T * (dense + mem_dense),
        "sparse_flops": T * (sparse + mem_sparse) + T * gate_ops,
        "flops_reduction": (dense + mem_dense) / max(sparse + mem_sparse + gate_ops, 1e-12),
        "membrane_updates": {"dense": T * mem_dense, "sparse": T * mem_sparse},
        "gate_ops": T * gate_ops,
        "energy_pj": energy,
        "energy_basis": source,
        "layers": layers,
    }


# ------------------------------------------------------------------------------ measurement


@torch.no_grad()
def measure_activity(
    model: nn.Module, data, *, batch_size: int = 256, max_samples: int | None = None
) -> dict:
    """Run ``model`` over ``data`` (a Dataset of ``(x, y)`` or a tensor batch) and measure:

    * ``spike_synops``: the network's SynOps as defined by
      :func:`spikequant.metrics.synaptic_ops` (the same number as ``SpikeMonitor``'s ``synops``);
    * ``effective_synops``: the same, counting only outputs whose current is accumulated (outputs
      removed by spatial pruning or a channel mask are skipped: ``synaptic_ops(..., fed)``);
    * ``first_layer_macs``: the first layer's (analog input) dense MACs on non-masked outputs
      (:func:`spikequant.metrics.dense_macs`);
    * per QLIF layer ``S_p``, ``S_c``; ``spatial_sparsity``/``channel_sparsity`` weighted by
      neurons over conv layers, ``sparsity = 1 - fed fraction``. All per sample.
    """
    from .neurons import reset_state

    qlifs = {m: name for name, m in model.named_modules() if _is_pruning_neuron(m)}
    gates = gate_module_ids(model)
    synapse_names = {
        m: name
        for name, m in model.named_modules()
        if isinstance(m, SYNAPSES) and id(m) not in gates
    }
    totals = {"spike": 0.0, "effective": 0.0, "first": 0.0}
    state = {"first": None, "pending": []}
    layer_fed: dict[str, list[float]] = {}

    def synapse_hook(module, inputs, output):
        name = synapse_names[module]
        if state["first"] is None:
            state["first"] = name
        if name != state["first"]:
            totals["spike"] += synaptic_ops(module, inputs[0])
        state["pending"].append((name, module, inputs[0], output))

    def add_pending(fed: torch.Tensor | None) -> None:
        """Count the layers that fed the neuron just run (``fed``: where it accumulated)."""
        for syn_name, module, x, output in state["pending"]:
            mask = fed if fed is not None and fed.shape == output.shape else None
            if syn_name == state["first"]:
                totals["first"] += dense_macs(module, output, mask)
            else:
                totals["effective"] += synaptic_ops(module, x, mask)
        state["pending"] = []

    def neuron_hook(module, inputs, output):
        fed = module.fed_mask
        name = qlifs[module]
        flat = None
        if fed is not None:
            flat = fed.reshape(-1, *fed.shape[2:]).to(torch.float32)
            entry = layer_fed.setdefault(name, [0.0, 0.0])
            entry[0] += float(flat.sum())
            entry[1] += float(flat.numel())
        add_pending(flat)

    handles = [m.register_forward_hook(synapse_hook) for m in synapse_names]
    handles += [m.register_forward_hook(neuron_hook) for m in qlifs]
    for m in qlifs:
        m.record_fed = True
        m.reset_sparsity_stats()
    was_training = model.training
    model.eval()
    samples = 0
    device = model_device(model)
    try:
        if isinstance(data, torch.Tensor):
            count = data.shape[0] if data.ndim in (2, 4) else data.shape[1]
            chunks = [(data, count)]
        else:
            from .train.trainer import batches

            chunks = ((x, len(y)) for x, y in batches(data, batch_size, shuffle=False))
        for x, count in chunks:
            if max_samples is not None and samples >= max_samples:
                break
            reset_state(model)
            model(x.to(device))
            add_pending(None)  # the read-out layer feeds no neuron
            samples += count
    finally:
        for h in handles:
            h.remove()
        for m in qlifs:
            m.record_fed = False
            m.fed_mask = None
        reset_state(model)
        model.train(was_training)
    n = max(samples, 1)
    layers = {}
    sp_num = sc_num = weight = 0.0
    fed_sum = fed_all = 0.0
    for m, name in qlifs.items():
        s = m.sparsity()
        layers[name] = {"spatial": s["spatial"], "channel": s["channel"]}
        if name in layer_fed and m.sparsity_stats["locations"]:
            fed, total = layer_fed[name]
            sp_num += s["spatial"] * total
            sc_num += s["channel"] * total
            weight += total
            fed_sum += fed
            fed_all += total
    return {
        "samples": samples,
        "spike_synops": totals["spike"] / n,
        "effective_synops": totals["effective"] / n,
        "first_layer_macs": totals["first"] / n,
        "spatial_sparsity": sp_num / weight if weight else 0.0,
        "channel_sparsity": sc_num / weight if weight else 0.0,
        "sparsity": 1 - fed_sum / fed_all if fed_all else 0.0,
        "layers": layers,
    }


__all__ = ["ENERGY_PJ", "energy_per_op", "measure_activity", "model_cost", "profile_model"]
