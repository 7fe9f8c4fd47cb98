r"""Lower a trained Quant-SNN / SpQuant-SNN (QLIF neurons, quantized weights) to an integer program.

Each conv/linear layer becomes integer weight levels ``W`` (``w_q = unit_c * W``, ``unit_c`` the
quantizer's step: ``alpha * 2^-(2^(b-1)-2) * s / gain`` for power-of-two weights) and everything
between its accumulator and the neuron - the input scale, the folded average pooling ``1/p^2``,
the bias, the eval-mode batch norm and the membrane step ``k`` - folds into one affine map per
output channel ``current_c = a_c * acc + b_c`` (in membrane levels). The program computes it in
fixed point with ``F`` fraction bits and ``S`` guard bits::

    I = floor((M_c acc + B_c) / 2^S),  M_c = round(a_c 2^(F+S)),  B_c = round(b_c 2^(F+S)) + 2^(S-1)

and the QLIF update of :func:`spikequant.spquant.neuron.qlif_integer_reference` in units of
``2^-(F+1)`` (decay = 2^-j as the leak shift ``j``)::

    pre   = n * 2^(F+1-j) + 2 I;    spike = pre >= TH_c,  TH_c = ceil(V_th 2^(F+1) / k)
    n'    = 0 if spike else clamp(round0(pre / 2^(F+1)), lo, hi)        (clamp(., 0) if binary)

``F`` and ``S`` are chosen per layer so that no int64 intermediate can overflow (``S`` makes the
rounding error of ``M_c`` below a quarter code; ``F <= 32``). The read-out layer keeps
``M_c * acc + B_c`` (``S = 0``) summed over time; the prediction is its argmax.

Spatial pruning becomes ``spatial_drop``: per sample and step the ``round(p H W)`` locations with
the lowest channel sum of ``pre`` (ties: lower flat index first) get no current. A channel gate
whose 1x1 projection closes a channel for every input (``b_j + max_i W_ji <= logit(threshold)``;
the softmax input is a probability vector) removes that channel: its weights, its neurons and the
next layer's input columns are deleted, since it never integrates or fires. A gate that depends on
the input is refused (it needs the float softmax of a whole window of membranes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ProgramError
from ..layers import TimeFold
from .format import Program, pack_ternary

_GATE_MARGIN = 1e-4  # a gate logit this close to the cut is treated as input dependent
_MAX_FRAC_BITS = 32
_MIN_FRAC_BITS = 8


def _unit_and_levels(module: nn.Module, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(unit[out] float64, integer levels, bits)`` with ``weight == unit * levels``."""
    from ..quant.pow2 import PowerOfTwoQuantizer
    from ..quant.uniform import UniformQuantizer
    from ..spquant.weights import RescaledPowerOfTwo

    if not parametrize.is_parametrized(module, "weight"):
        raise ProgramError(
            f"layer {name!r} has float weights; the integer runtime needs quantized weights "
            "(a spquant recipe with weight_bits <= 8)"
        )
    chain = list(module.parametrizations.weight)
    original = module.parametrizations.weight.original.detach()
    out = original.shape[0]
    last = chain[-1]
    if isinstance(last, RescaledPowerOfTwo):
        bits = last.bits
        alpha = float(last.quantizer.alpha.detach())
        scale = float(original.std() + last.eps)
        unit = alpha * 2.0 ** -(2 ** (bits - 1) - 2) * scale / last.gain
        units = np.full(out, unit)
    elif isinstance(last, PowerOfTwoQuantizer):
        bits = last.bits
        units = np.full(out, float(last.alpha.detach()) * 2.0 ** -(2 ** (bits - 1) - 2))
    elif isinstance(last, UniformQuantizer):
        bits = last.bits
        step = last.step.detach().double().reshape(-1).numpy()
        units = np.broadcast_to(step, (out,)).copy()
    else:
        raise ProgramError(f"layer {name!r}: unsupported weight quantizer {type(last).__name__}")
    weight = module.weight.detach().double().numpy()
    ratio = weight / units.reshape(-1, *([1] * (weight.ndim - 1)))
    levels = np.round(ratio)
    if weight.size and np.abs(ratio - levels).max() > 1e-3:
        raise ProgramError(f"layer {name!r}: weights are not integer multiples of the step")
    if weight.size and np.abs(levels).max() > 127:
        raise ProgramError(f"layer {name!r}: weight levels do not fit int8")
    return units, levels.astype(np.int8), int(bits)


def _flatten_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Sequential) or type(model).body is not _base_body():
        raise ProgramError(
            f"{type(model).__name__}: only sequential networks (a plain 'net' stack) can be "
            "lowered; residual networks are not supported yet"
        )
    items: list[tuple[str, nn.Module]] = []

    def add(prefix: str, module: nn.Module) -> None:
        if isinstance(module, TimeFold):
            add(prefix + ".module", module.module)
        elif isinstance(module, nn.Sequential):
            for key, sub in module.named_children():
                add(f"{prefix}.{key}", sub)
        else:
            items.append((prefix, module))

    for key, sub in net.named_children():
        add(f"net.{key}", sub)
    return items


def _base_body():
    from ..models.common import SpikingModel

    return SpikingModel.body


def _gate_keep(layer, name: str) -> np.ndarray | None:
    """Output channels a statically decided gate keeps (None: no gate)."""
    gate = layer.channel_gate
    if gate is None:
        return None
    weight = gate.proj.weight.detach().double().reshape(gate.proj.out_channels, -1)
    bias = gate.proj.bias.detach().double()
    cut = math.log(gate.threshold / (1 - gate.threshold))
    low = (bias + weight.min(1).values).numpy()
    high = (bias + weight.max(1).values).numpy()
    closed = high <= cut - _GATE_MARGIN
    opened = low > cut + _GATE_MARGIN
    dynamic = ~(closed | opened)
    if dynamic.any():
        raise ProgramError(
            f"the channel gate of {name!r} depends on the input for {int(dynamic.sum())} of "
            f"{len(bias)} channels; the integer runtime supports only gates that are constant "
            "(always open or always closed)"
        )
    return opened


def _neuron_spec(layer, name: str, out_channels: int) -> dict:
    from ..spquant.neuron import QLIF

    if not isinstance(layer, QLIF):
        raise ProgramError(
            f"{name!r} is a {type(layer).__name__}; the integer runtime runs QLIF neurons "
            "(neuron: qlif) only"
        )
    if layer.levels is None:
        raise ProgramError(
            f"{name!r} keeps a float membrane; deploy needs a quantized membrane "
            "(neuron_kwargs: {membrane: ternary})"
        )
    leak_shift = -math.log2(layer.decay) if layer.decay > 0 else float("inf")
    if leak_shift != round(leak_shift) or not 1 <= leak_shift <= 16:
        raise ProgramError(
            f"{name!r}: decay = {layer.decay} is not a power of two 2^-j, j in 1..16"
        )
    threshold = layer.threshold.detach()
    if threshold.requires_grad or layer.threshold.requires_grad:
        threshold = threshold.clamp(min=layer.min_threshold)
    threshold = threshold.double().reshape(-1).numpy()
    threshold = np.broadcast_to(threshold, (out_channels,)).copy()
    return {
        "module": layer,
        "leak_shift": int(leak_shift),
        "levels": [layer.levels.low_index, layer.levels.high_index],
        "step": float(layer.levels.step),
        "binary_membrane": bool(layer.binary_membrane),
        "spatial_prune": float(layer.spatial_prune),
        "threshold": threshold,
        "keep": _gate_keep(layer, name),
    }


def _walk(model: nn.Module, in_shape: list[int]) -> list[dict]:
    from ..neurons import SpikingNeuron

    layers: list[dict] = []
    shape = list(in_shape)
    pool = 1
    flat = False
    for name, module in _flatten_modules(model):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if layers and layers[-1]["neuron"] is None:
                raise ProgramError(f"{name!r}: two synapse layers without a neuron in between")
            entry = {
                "name": name,
                "module": module,
                "in_shape": shape,
                "pool": pool,
                "bn": None,
                "neuron": None,
            }
            if isinstance(module, nn.Conv2d):
                if flat or len(shape) != 3:
                    raise ProgramError(f"{name!r}: a conv layer needs a [C, H, W] input")
                plain = module.dilation == (1, 1) and module.padding_mode == "zeros"
                if module.groups != 1 or not plain:
                    raise ProgramError(f"{name!r}: grouped, dilated or non-zero-padded conv")
                k, s, p = module.kernel_size, module.stride, module.padding
                if k[0] != k[1] or s[0] != s[1] or not isinstance(p, tuple) or p[0] != p[1]:
                    raise ProgramError(f"{name!r}: only square kernels, strides and paddings")
                h, w = shape[1] // pool, shape[2] // pool
                ho = (h + 2 * p[0] - k[0]) // s[0] + 1
                wo = (w + 2 * p[0] - k[0]) // s[0] + 1
                entry.update(
                    op="conv",
                    kernel=k[0],
                    stride=s[0],
                    padding=p[0],
                    out_shape=[module.out_channels, ho, wo],
                )
            else:
                if len(shape) == 3 and not flat:
                    raise ProgramError(f"{name!r}: a linear layer after a conv needs a Flatten")
                fan_in = (
                    shape[0]
                    if len(shape) == 1
                    else shape[0] * (shape[1] // pool) * (shape[2] // pool)
                )
                if fan_in != module.in_features:
                    raise ProgramError(
                        f"{name!r}: expects {module.in_features} inputs, gets {fan_in}"
                    )
                entry.update(
                    op="linear", kernel=1, stride=1, padding=0, out_shape=[module.out_features]
                )
            layers.append(entry)
            shape, pool, flat = entry["out_shape"], 1, False
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not layers or layers[-1]["bn"] is not None or layers[-1]["neuron"] is not None:
                raise ProgramError(f"{name!r}: a batch norm must follow a conv/linear layer")
            layers[-1]["bn"] = module
        elif isinstance(module, nn.AvgPool2d):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            stride = module.stride if isinstance(module.stride, int) else module.stride[0]
            padded = module.padding not in (0, (0, 0))
            if module.kernel_size not in (k, (k, k)) or stride != k or padded or module.ceil_mode:
                raise ProgramError(f"{name!r}: only non-overlapping k x k average pooling")
            if not layers or layers[-1]["neuron"] is None:
                raise ProgramError(f"{name!r}: pooling must follow a spiking layer")
            pool *= k
        elif type(module).__name__ == "Flatten":
            flat = True
        elif isinstance(module, SpikingNeuron):
            if not layers or layers[-1]["neuron"] is not None:
                raise ProgramError(f"{name!r}: a neuron must follow a conv/linear layer")
            layers[-1]["neuron"] = _neuron_spec(module, name, layers[-1]["out_shape"][0])
        elif isinstance(module, (nn.Identity, nn.Dropout)):
            continue
        else:
            kind = type(module).__name__
            raise ProgramError(f"{name!r}: the integer runtime cannot lower {kind}")
    if not layers or layers[-1]["neuron"] is not None:
        raise ProgramError("the network must end with a linear/conv read-out without a neuron")
    if layers[-1]["op"] != "linear":
        raise ProgramError("the read-out must be a linear layer")
    return layers


def _affine(entry: dict, units: np.ndarray, in_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``current = a * acc + b`` per output channel (float64, in membrane levels)."""
    module = entry["module"]
    pool = entry["pool"]
    a = units * in_scale / (pool * pool)
    b = np.zeros_like(a)
    if module.bias is not None:
        b = b + module.bias.detach().double().numpy()
    bn = entry["bn"]
    if bn is not None:
        gain = bn.weight.detach().double().numpy() if bn.affine else np.ones_like(a)
        shift = bn.bias.detach().double().numpy() if bn.affine else np.zeros_like(a)
        inv = gain / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        a = a * inv
        b = (b - bn.running_mean.detach().double().numpy()) * inv + shift
    if entry["neuron"] is not None:
        step = entry["neuron"]["step"]
        a, b = a / step, b / step
    return a, b


def _fixed_point(a: np.ndarray, b: np.ndarray, acc_bound: int, readout: bool, timesteps: int):
    magnitude = float(np.abs(a).max(initial=0.0)) * acc_bound + float(np.abs(b).max(initial=0.0))
    if readout:
        shift = 0
        frac = math.floor(61 - math.log2(timesteps * magnitude + 1))
    else:
        shift = max(1, math.ceil(math.log2(acc_bound + 1)) + 1)
        frac = math.floor(61 - shift - math.log2(magnitude + 1))
    frac = min(_MAX_FRAC_BITS, frac)
    if frac < _MIN_FRAC_BITS:
        raise ProgramError("layer scale too large for the 64-bit fixed-point membrane")
    scale = 2.0 ** (frac + shift)
    multiplier = np.array([int(round(v * scale)) for v in a], dtype=np.int64)
    offset = np.array([int(round(v * scale)) for v in b], dtype=np.int64)
    if shift:
        offset = offset + (1 << (shift - 1))  # floor(x + 1/2): round to nearest
    return frac, shift, multiplier, offset


def _refuse_unsupported(model: nn.Module) -> None:
    from ..convert.calif import CaLIF
    from ..quant.qat import QuantReLU

    if getattr(model, "method", None) == "calif":
        raise ProgramError(
            "a Ca-LIF converted network is lowered by spikequant.runtime.lower_calif.lower_calif "
            "(spikequant deploy does this for a calif run)"
        )
    if any(isinstance(m, (CaLIF, QuantReLU)) for m in model.modules()):
        raise ProgramError(
            "a QAT network (quantized ReLUs) is not a spiking network: convert it with "
            "`spikequant convert RUN --method calif --save-run OUT`, then deploy OUT"
        )
    missing = [k for k in ("input_size", "in_channels", "timesteps") if not hasattr(model, k)]
    if missing:
        raise ProgramError(
            f"{type(model).__name__} has no {', '.join(missing)}: deploy lowers the spiking "
            "models of Quant-SNN / SpQuant-SNN runs"
        )


@torch.no_grad()
def lower_model(
    model: nn.Module,
    *,
    input_kind: str = "analog",
    input_scale: float = 1.0 / 255.0,
    code_max: int = 255,
    source: dict | None = None,
) -> Program:
    """Lower ``model`` (eval mode) to an integer :class:`Program`.

    ``input_kind="analog"``: inputs are non-negative codes ``round(x / input_scale)`` in
    ``[0, code_max]`` repeated over the model's T steps (direct coding; 8-bit pixels of the bundled
    digits: ``input_scale = 1/255``). ``"spikes"``: binary event frames ``[T, C, H, W]``.
    """
    if input_kind not in ("analog", "spikes"):
        raise ProgramError(f"input kind must be 'analog' or 'spikes', got {input_kind!r}")
    if input_kind == "spikes":
        input_scale, code_max = 1.0, 1
    if not (input_scale > 0 and math.isfinite(input_scale)):
        raise ProgramError(f"input scale must be a positive number, got {input_scale!r}")
    _refuse_unsupported(model)
    model.eval()
    size = model.input_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    in_shape = [int(model.in_channels), int(h), int(w)]
    entries = _walk(model, in_shape)
    timesteps = int(model.timesteps)

    # static channel removal: a layer's closed channels leave its outputs and the next inputs
    for entry in entries:
        keep = entry["neuron"]["keep"] if entry["neuron"] else None
        entry["keep_out"] = (
            np.arange(entry["out_shape"][0]) if keep is None else np.flatnonzero(keep)
        )
    header_layers, tensors = [], {}
    max_in = code_max
    scale = input_scale
    for index, entry in enumerate(entries):
        units, levels, bits = _unit_and_levels(entry["module"], entry["name"])
        a, b = _affine(entry, units, scale)
        keep_out = entry["keep_out"]
        levels = levels[keep_out]
        a, b = a[keep_out], b[keep_out]
        in_shape_kept = list(entry["in_shape"])
        if index > 0:
            keep_in = entries[index - 1]["keep_out"]
            previous_channels = entries[index - 1]["out_shape"][0]
            if entry["op"] == "conv":
                levels = levels[:, keep_in]
            elif len(entry["in_shape"]) == 3:
                c, hh, ww = entry["in_shape"]
                p = entry["pool"]
                blocks = levels.reshape(levels.shape[0], c, (hh // p) * (ww // p))
                levels = blocks[:, keep_in].reshape(levels.shape[0], -1)
            else:
                levels = levels[:, keep_in]
            if len(keep_in) != previous_channels:
                in_shape_kept[0] = int(len(keep_in))
        out_shape = list(entry["out_shape"])
        out_shape[0] = int(len(keep_out))
        fan_in = int(np.prod(levels.shape[1:]))
        acc_bound = (
            fan_in * max(1, int(np.abs(levels).max(initial=0))) * max_in * entry["pool"] ** 2
        )
        if acc_bound >= 2**31:
            raise ProgramError(f"{entry['name']!r}: accumulator may overflow 32 bits")
        neuron = entry["neuron"]
        frac, shift, multiplier, offset = _fixed_point(a, b, acc_bound, neuron is None, timesteps)
        ternary = bits == 2 and (levels.size == 0 or np.abs(levels).max() <= 1)
        layer = {
            "name": entry["name"],
            "op": entry["op"],
            "in_shape": [int(v) for v in in_shape_kept],
            "pool": int(entry["pool"]),
            "out_shape": [int(v) for v in out_shape],
            "kernel": int(entry["kernel"]),
            "stride": int(entry["stride"]),
            "padding": int(entry["padding"]),
            "weight_bits": int(bits),
            "weight_encoding": "ternary2" if ternary else "int8",
            "frac_bits": int(frac),
            "shift": int(shift),
            "acc_bound": int(acc_bound),
            "removed_channels": [
                int(c) for c in sorted(set(range(entry["out_shape"][0])) - set(keep_out.tolist()))
            ],
            "neuron": None,
        }
        tensors[f"layers.{index}.weight"] = pack_ternary(levels) if ternary else levels
        tensors[f"layers.{index}.multiplier"] = multiplier
        tensors[f"layers.{index}.offset"] = offset
        if neuron is not None:
            threshold = neuron["threshold"][keep_out] / neuron["step"]
            codes = np.array([math.ceil(v * 2.0 ** (frac + 1)) for v in threshold], dtype=np.int64)
            if codes.size and codes.min() <= 0:
                raise ProgramError(f"{entry['name']!r}: thresholds must be positive")
            drop = 0
            if neuron["spatial_prune"] > 0 and entry["op"] == "conv":
                drop = int(round(neuron["spatial_prune"] * out_shape[1] * out_shape[2]))
            layer["neuron"] = {
                "leak_shift": neuron["leak_shift"],
                "levels": [int(v) for v in neuron["levels"]],
                "binary_membrane": neuron["binary_membrane"],
                "spatial_drop": drop,
            }
            tensors[f"layers.{index}.threshold"] = codes
        header_layers.append(layer)
        max_in, scale = 1, 1.0
    header = {
        "timesteps": timesteps,
        "num_classes": int(header_layers[-1]["out_shape"][0]),
        "input": {
            "shape": in_shape,
            "kind": input_kind,
            "scale": float(input_scale),
            "code_max": int(code_max),
        },
        "layers": header_layers,
        "source": dict(source or {}),
    }
    return Program(header=header, tensors=tensors)


def quantize_input(program: Program, x) -> np.ndarray:
    """Float input ``x`` (``[B, C, H, W]`` static or ``[T, B, C, H, W]`` frames) -> int32 codes
    ``clamp(round(x / scale), 0, code_max)`` (binary frames for a spiking input)."""
    spec = program.header["input"]
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if spec["kind"] == "isi":  # a Ca-LIF program: 8-bit pixels round(255 x), as its network
        codes = np.clip(np.rint(array.astype(np.float64) * spec["code_max"]), 0, spec["code_max"])
        return codes.astype(np.int32)
    codes = np.clip(np.rint(array.astype(np.float64) / spec["scale"]), 0, spec["code_max"])
    return codes.astype(np.int32)


__all__ = ["lower_model", "quantize_input"]
