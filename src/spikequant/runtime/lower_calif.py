r"""Lower a Ca-LIF converted network (``spikequant convert --method calif``) to an integer program.

The converted network (:mod:`spikequant.convert.network`) computes in float64 with the QAT
model's float32 weights ``w`` (``fl32(Sw_c wQ)``), biases ``b``, steps ``Sy`` and the ISI input
coding. Every one of these numbers is a dyadic rational, so the program holds them exactly as
integers:

* weights: per output channel the integer levels ``L`` and the dyadic unit ``u_c`` with
  ``w = u_c L`` (``u_c`` the largest such unit: ``L`` is the QAT level ``wQ`` wherever
  ``fl32(Sw_c wQ) = Sw_c wQ``, else a wider integer; stored as int8 when every level fits, else
  int32);
* a hidden layer keeps its membrane as the integer ``V'' = T V / q_c`` with a power of two
  ``q_c`` per channel chosen so that, per step, ``V'' += A_c acc + B_c`` and the threshold ``TH_c``
  are integers: ``A_c = T u_c w_in / q_c``, ``B_c = K_l b_c / q_c``, ``TH_c = T K_l Sy / q_c``
  (``w_in = Sy`` of the layer before, or 1 with ``K_l = K`` for a layer fed by the input spikes,
  whose float membrane is ``K V``; the leak ``-b/T`` times ``T`` is the integer ``B_c``, exact
  for any ``T``);
* the read-out holds ``A_c = u_c w_in / q``, ``B_c = b_c / q`` with one ``q`` for all classes, so
  that the integer logit times ``q`` (the header's ``logit_unit``) is the float network's logit.

With power-of-two steps every integer fits 64 bits; with learned (arbitrary float32) steps the
exact membranes need up to ~80 bits: the program then says ``"membrane_bits": 128`` (the C++
engine keeps ``__int128`` membranes and logits, the reference Python integers; ``A``, ``B``,
``TH`` stay int64) and the logits leave as ``floor(z / 2^logit_shift)`` with ``logit_shift``
chosen so they fit int64 (``logit_unit`` includes the shift).

Where the float network's own float64 sums are exact (power-of-two steps, the setting in which the
Ca-LIF codes equal the quantized ANN's by construction) the program reproduces its spikes, codes
and logits exactly; elsewhere the program is the exact-arithmetic form, which the float network
approximates to ~1e-16. What cannot be lowered is refused with one line naming the layer.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from torch import nn

from ..errors import ProgramError
from .format import Program

_NARROW_BOUND = 2**61  # |V''|, |2 V'' + TH| below 2^63: 64-bit membranes
_WIDE_BOUND = 2**125  # else 128-bit membranes (C++ __int128), up to this
_INT64 = 2**63
_PIXEL_SCALE = 1.0 / 255.0


def _levels(weight: np.ndarray, name: str) -> tuple[list[Fraction], np.ndarray]:
    """``(u_c per channel, integer levels)`` with ``weight[c] == u_c * levels[c]`` exactly."""
    rows = weight.reshape(weight.shape[0], -1)
    units, levels = [], np.zeros(rows.shape, dtype=np.int64)
    for c, row in enumerate(rows):
        ratios = [float(v).as_integer_ratio() for v in row.tolist()]
        denominator = max((d for _, d in ratios), default=1)
        numerators = [n * (denominator // d) for n, d in ratios]
        common = math.gcd(*numerators) or 1
        ints = [n // common for n in numerators]
        if ints and max(abs(v) for v in ints) >= 2**31:
            raise ProgramError(f"layer {name!r}: weight levels do not fit 32 bits")
        units.append(Fraction(common, denominator))
        levels[c] = ints
    return units, levels.reshape(weight.shape)


def _log2_denominator(value: Fraction) -> int:
    d = value.denominator
    if d & (d - 1):
        raise ProgramError(f"{value} is not a dyadic rational")  # cannot happen for floats * ints
    return d.bit_length() - 1


def _fit_unit(values: list[Fraction]) -> int:
    """The exponent ``E`` of the largest unit ``2^-E`` of which every value is a multiple."""
    nonzero = [v for v in values if v]
    if not nonzero:
        return 0
    exponent = max(_log2_denominator(v) for v in nonzero)
    # a larger unit (negative E) where every value is a multiple of 2^k, k > 0
    while all((v * 2 ** (exponent - 1)).denominator == 1 for v in nonzero):
        exponent -= 1
    return exponent


def _chain(net) -> list[tuple[str, nn.Module]]:
    """The graph's modules in order; refuses anything but a plain chain of known modules."""
    from ..convert.network import CaBlock, Synapse

    gm = net.graph_module
    previous = None
    chain = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            if node.all_input_nodes != [previous]:
                raise ProgramError("the network's output is not the last layer of a plain chain")
            break
        name = str(node.target) if node.op == "call_module" else node.name
        if node.all_input_nodes != [previous]:
            raise ProgramError(
                f"{name!r}: the integer runtime lowers plain chains of layers; this node has "
                "other inputs (a residual add or a branch)"
            )
        previous = node
        if node.op != "call_module":
            target = getattr(node.target, "__name__", str(node.target))
            if target == "flatten":
                chain.append((name, nn.Flatten()))
                continue
            raise ProgramError(f"{name!r}: the integer runtime cannot lower the operation {target}")
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.Identity):
            continue
        if isinstance(module, (Synapse, CaBlock, nn.Flatten)):
            chain.append((name, module))
            continue
        raise ProgramError(
            f"{name!r}: the integer runtime cannot lower {type(module).__name__} in a Ca-LIF "
            "network"
        )
    return chain


def _synapse(name: str, layer: nn.Module, shape: list[int], flat: bool) -> dict:
    """A conv/linear layer of the chain: its shapes, integer levels, units and biases."""
    if isinstance(layer, nn.Conv2d):
        if len(shape) != 3:
            raise ProgramError(f"{name!r}: a conv layer needs a [C, H, W] input")
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        plain = layer.dilation == (1, 1) and layer.padding_mode == "zeros"
        if layer.groups != 1 or not plain or not isinstance(p, tuple):
            raise ProgramError(f"{name!r}: grouped, dilated or non-zero-padded conv")
        if k[0] != k[1] or s[0] != s[1] or p[0] != p[1]:
            raise ProgramError(f"{name!r}: only square kernels, strides and paddings")
        h = (shape[1] + 2 * p[0] - k[0]) // s[0] + 1
        w = (shape[2] + 2 * p[0] - k[0]) // s[0] + 1
        spec = {"op": "conv", "kernel": k[0], "stride": s[0], "padding": p[0]}
        out_shape, fan_in = [layer.out_channels, h, w], shape[0] * k[0] * k[0]
    elif isinstance(layer, nn.Linear):
        if not flat:
            raise ProgramError(f"{name!r}: a linear layer needs a flat input (Flatten)")
        if shape[0] != layer.in_features:
            raise ProgramError(f"{name!r}: expects {layer.in_features} inputs, gets {shape[0]}")
        spec = {"op": "linear", "kernel": 1, "stride": 1, "padding": 0}
        out_shape, fan_in = [layer.out_features], layer.in_features
    else:
        raise ProgramError(f"{name!r}: the integer runtime cannot lower {type(layer).__name__}")
    weight = layer.weight.detach().cpu().double().numpy()
    bias = layer.bias.detach().cpu().double().numpy() if layer.bias is not None else None
    units, levels = _levels(weight, name)
    return {
        "name": name,
        "spec": spec,
        "in_shape": list(shape),
        "out_shape": out_shape,
        "fan_in": fan_in,
        "units": units,
        "levels": levels,
        "bias": [Fraction(float(v)) for v in bias]
        if bias is not None
        else [Fraction(0)] * len(units),
    }


def _hidden(synapse: dict, block, worth, budget: int, timesteps: int, round_in: int):
    """``(A, B, TH, bound of |V''|)`` of a weight layer and its Ca-LIF block (module docstring);
    ``worth``: ``Sy`` of the block before (None: fed by the input spikes)."""
    input_units = worth is None
    if bool(block.input_units) != input_units:
        raise ProgramError(f"{synapse['name']!r}: unexpected input units of its Ca-LIF block")
    scale = budget if input_units else 1
    w_in = Fraction(1) if input_units else worth
    th = timesteps * scale * Fraction(float(block.step_size))
    multipliers, offsets, thresholds = [], [], []
    for u, b in zip(synapse["units"], synapse["bias"], strict=True):
        a, bb = timesteps * u * w_in, scale * b
        unit = Fraction(2) ** _fit_unit([a, bb, th])
        multipliers.append(int(a * unit))
        offsets.append(int(bb * unit))
        thresholds.append(int(th * unit))
    bound = max(
        timesteps * (abs(m) * acc + abs(o)) + th_c + abs(m) * acc * round_in
        for m, o, th_c, acc in zip(
            multipliers, offsets, thresholds, _channel_acc_bounds(synapse), strict=True
        )
    )
    if bound >= _WIDE_BOUND or max(map(abs, multipliers + offsets + thresholds)) >= _INT64:
        raise ProgramError(
            f"{synapse['name']!r}: the exact integer membrane of this layer needs more than "
            "128 bits (weights, bias and step span too many binary digits)"
        )
    return multipliers, offsets, thresholds, bound


def _readout(synapse: dict, worth, timesteps: int, round_in: int):
    """``(A, B, unit exponent E, logit shift)`` of the read-out (one unit for all classes)."""
    if synapse["spec"]["op"] != "linear":
        raise ProgramError(f"{synapse['name']!r}: the read-out must be a linear layer")
    a = [u * worth for u in synapse["units"]]
    exponent = _fit_unit(a + synapse["bias"])
    unit = Fraction(2) ** exponent
    multipliers = [int(v * unit) for v in a]
    offsets = [int(b * unit) for b in synapse["bias"]]
    bound = max(
        abs(m) * acc * (timesteps + round_in) + abs(o)
        for m, o, acc in zip(multipliers, offsets, _channel_acc_bounds(synapse), strict=True)
    )
    if bound >= _WIDE_BOUND or max(map(abs, multipliers + offsets)) >= _INT64:
        raise ProgramError(f"{synapse['name']!r}: the exact integer logits need more than 128 bits")
    # the logits are summed exactly (128 bits where needed) and leave as int64: floor(z / 2^s)
    return multipliers, offsets, exponent, max(0, bound.bit_length() - 62)


def lower_calif(net, input_shape, *, source: dict | None = None) -> Program:
    """Lower the Ca-LIF :class:`~spikequant.convert.network.SpikingNetwork` ``net`` (inputs
    ``[C, H, W]`` or ``[F]`` images in [0, 1], 8-bit) to an integer :class:`Program`."""
    from ..convert.network import Synapse

    if getattr(net, "method", None) != "calif":
        raise ProgramError("lower_calif takes a network converted with method 'calif'")
    timesteps = net.timesteps
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ProgramError("the Ca-LIF network has no timesteps: set net.timesteps = T")
    budget = min(net.max_input_spikes or min(timesteps, 255), timesteps)
    if net.output_in_input_units:
        raise ProgramError(
            "a Ca-LIF network without a hidden layer (the read-out fed by the input spikes, "
            "worth 1/K) has no exact integer read-out"
        )
    shape = [int(v) for v in input_shape]
    header_layers: list[dict] = []
    tensors: dict[str, np.ndarray] = {}
    pending: dict | None = None  # a weight layer waiting for its Ca-LIF block
    worth = None  # Sy of the previous block (None: the input spikes)
    round_in = 0  # largest |net rounding spikes| reaching the next weight layer
    wide = False  # some membrane needs more than 64 bits
    flat = len(shape) == 1
    for name, module in _chain(net):
        if isinstance(module, nn.Flatten):
            shape, flat = [int(np.prod(shape))], True
        elif isinstance(module, Synapse):
            if pending is not None:
                raise ProgramError(f"{name!r}: two weight layers without a Ca-LIF block between")
            pending = _synapse(name, module.layer, shape, flat)
            shape = pending["out_shape"]
            flat = len(shape) == 1
        else:  # a Ca-LIF block
            if pending is None:
                raise ProgramError(f"{name!r}: a Ca-LIF block must follow a conv/linear layer")
            pool = int(module.pool) if module.pool_neuron is not None else 1
            if pool > 1 and len(shape) != 3:
                raise ProgramError(f"{name!r}: Ca-LIF pooling needs a [C, H, W] layer")
            multipliers, offsets, thresholds, bound = _hidden(
                pending, module, worth, budget, timesteps, round_in
            )
            wide = wide or bound >= _NARROW_BOUND
            index = len(header_layers)
            if pool > 1:
                shape = [shape[0], shape[1] // pool, shape[2] // pool]
            neuron = module.neuron
            header_layers.append(
                _layer_header(pending, index, tensors, multipliers, offsets)
                | {
                    "out_shape": [int(v) for v in shape],
                    "neuron": {
                        "kind": "calif",
                        "qmax": neuron.qmax,
                        "gate": bool(neuron.gate),
                        "tie": neuron.tie,
                        "pool": pool,
                        "input_units": worth is None,
                    },
                }
            )
            tensors[f"layers.{index}.threshold"] = np.array(thresholds, dtype=np.int64)
            round_in = (neuron.qmax if neuron.qmax is not None else timesteps) + 1
            worth, pending = Fraction(float(module.step_size)), None
    if pending is None:
        raise ProgramError("the Ca-LIF network must end with a conv/linear read-out")
    multipliers, offsets, exponent, logit_shift = _readout(pending, worth, timesteps, round_in)
    readout = _layer_header(pending, len(header_layers), tensors, multipliers, offsets)
    header_layers.append(readout | {"neuron": None, "logit_shift": int(logit_shift)})
    header = {
        "kind": "calif",
        "timesteps": int(timesteps),
        "num_classes": int(pending["out_shape"][0]),
        "logit_unit": float(Fraction(2) ** (logit_shift - exponent)),
        "membrane_bits": 128 if wide or logit_shift > 0 else 64,
        "input": {
            "shape": [int(v) for v in input_shape],
            "kind": "isi",
            "scale": _PIXEL_SCALE,
            "code_max": 255,
            "budget": int(budget),
        },
        "layers": header_layers,
        "source": dict(source or {}),
    }
    return Program(header=header, tensors=tensors)


def _channel_acc_bounds(pending: dict) -> list[int]:
    """Per output channel, the largest ``|acc|`` of one step (inputs in {-1, 0, 1})."""
    levels = np.abs(pending["levels"].reshape(len(pending["units"]), -1))
    return [int(v) for v in levels.max(1, initial=0) * pending["fan_in"]]


def _layer_header(pending: dict, index: int, tensors: dict, multipliers, offsets) -> dict:
    levels = pending["levels"]
    small = levels.size == 0 or int(np.abs(levels).max()) <= 127
    tensors[f"layers.{index}.weight"] = levels.astype(np.int8 if small else np.int32)
    tensors[f"layers.{index}.multiplier"] = np.array(multipliers, dtype=np.int64)
    tensors[f"layers.{index}.offset"] = np.array(offsets, dtype=np.int64)
    return {
        "name": pending["name"],
        **pending["spec"],
        "in_shape": [int(v) for v in pending["in_shape"]],
        "pool": 1,
        "out_shape": [int(v) for v in pending["out_shape"]],
        "weight_bits": 8 if small else 32,
        "weight_encoding": "int8" if small else "int32",
        "removed_channels": [],
    }


__all__ = ["lower_calif"]
