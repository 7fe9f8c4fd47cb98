r"""Export a sequential spiking network to a NIR graph (:func:`to_nir`).

The network is read as a chain of operations: ``nn.Sequential`` and
:class:`~spikequant.layers.TimeFold` are walked into, a registered model
(:class:`~spikequant.models.SpikingModel`) contributes its ``net``, and each leaf must be one of
Conv2d, Linear, BatchNorm1d/2d, AvgPool2d, Flatten, Identity/Dropout or an IF / LIF / ATIF-u
neuron. Anything else (residual blocks, max pooling, ReLU, ATIF-nu, SpQuant's quantized LIF, ...)
raises :class:`~spikequant.errors.ConversionError` naming the module.

Two rewrites keep the graph small and exact up to float rounding:

* BatchNorm (running statistics) is folded into the preceding conv/linear:
  ``W' = W gamma / sqrt(var + eps)``, ``b' = (b - mean) gamma / sqrt(var + eps) + beta``.
* A neuron that emits ``V_th z`` (ATIF-u, or any ``scale_output=True``) is exported as a binary
  neuron and ``V_th`` is multiplied into the input columns of the next conv/linear (it commutes with
  average pooling and flattening); with no weighted layer before the next neuron or the output, a
  NIR ``Scale`` node carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .._optional import require
from ..errors import ConversionError, ShapeError
from ..layers import MeanOverTime, RepeatTime, TimeFold
from ..neurons import IF, LIF, ATIFu, SpikingNeuron, reset_state
from ..neurons.reset import Subtract, Zero
from .mapping import (
    READOUT_MEAN,
    RESET_KEY,
    SOFT_RESET,
    if_resistance,
    lif_to_nir,
    strict_threshold,
)

SOFT_RESET_POLICIES = ("error", "metadata")
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)

nir = require("nir", "NIR export")


@dataclass
class _Op:
    """One leaf of the chain: dotted path, module, and whether it runs on folded ``[T*B, ...]``."""

    path: str
    module: nn.Module
    folded: bool
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None


@dataclass
class _Item:
    """A NIR-bound operation with torch parameters, before scale folding and node creation."""

    kind: str  # conv | linear | pool | flatten | neuron | scale
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)


def _time_first_flatten_types() -> tuple[type, ...]:
    from ..models.common import Flatten

    return (Flatten,)


def _model_body(model: nn.Module) -> nn.Module | None:
    """The chain of a registered model (its ``net``) when its forward is the plain ``net`` call."""
    from ..models.common import SpikingModel

    if not isinstance(model, SpikingModel):
        return None
    if type(model).body is not SpikingModel.body or not isinstance(
        getattr(model, "net", None), nn.Module
    ):
        raise ConversionError(
            f"cannot export model {type(model).__name__}: its forward is not a single sequential "
            "chain (only sequential networks map onto a NIR chain here; residual blocks do not)"
        )
    return model.net


def _walk(module: nn.Module, path: str, folded: bool, ops: list[_Op]) -> None:
    label = path or "<model>"
    body = _model_body(module)
    if body is not None:
        _walk(body, f"{path}.net" if path else "net", folded, ops)
        return
    if isinstance(module, TimeFold):
        _walk(module.module, f"{path}.module" if path else "module", True, ops)
        return
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            _walk(child, f"{path}.{name}" if path else name, folded, ops)
        return
    if isinstance(module, MeanOverTime):
        ops.append(_Op(label, module, folded))  # the rate read-out; must end the chain
        return
    if isinstance(module, (RepeatTime, *_PASS_THROUGH)):
        return  # input coding / identity at inference: no node
    if isinstance(module, SpikingNeuron):
        if type(module) not in (IF, LIF, ATIFu):
            raise ConversionError(_unsupported_neuron(label, module))
        ops.append(_Op(label, module, folded))
        return
    supported = (
        nn.Conv2d,
        nn.Linear,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.AvgPool2d,
        nn.Flatten,
        *_time_first_flatten_types(),
    )
    if _plain_type(module) in supported:
        ops.append(_Op(label, module, folded))
        return
    raise ConversionError(
        f"cannot export module {label!r} ({type(module).__name__}): NIR export supports Conv2d, "
        "Linear, BatchNorm (folded), AvgPool2d, Flatten and IF/LIF/ATIF-u neurons in a sequential "
        "chain"
    )


def _plain_type(module: nn.Module) -> type:
    """The module's class, seen through ``torch.nn.utils.parametrize`` (which swaps in a subclass).

    Subclasses with their own forward (e.g. fake-quantized QAT layers) are not their base class:
    exporting their stored weights would describe a different computation.
    """
    cls = type(module)
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]
    return cls


def _unsupported_neuron(label: str, module: nn.Module) -> str:
    name = type(module).__name__
    reasons = {
        "ATIFnu": "its threshold changes every timestep (T trained levels); NIR neurons have one "
        "constant threshold",
        "QLIF": "its membrane is quantized (ternary/binary) after every step; NIR neurons have a "
        "real-valued membrane",
        "MSAT": "it has several thresholds and multi-valued spikes; NIR neurons emit binary spikes "
        "at one threshold",
        "CaLIF": "its rounding phase and per-step threshold schedule have no NIR node",
        "EventLIF": "its event-driven update has no NIR node",
    }
    why = reasons.get(name, "only IF, LIF and ATIF-u map onto NIR's IF/LIF nodes")
    return f"cannot export neuron {label!r} ({name}): {why}"


def _probe_shapes(model: nn.Module, ops: list[_Op], sample_input: torch.Tensor) -> None:
    """Run ``sample_input`` once with hooks recording each op's per-step input/output shape, and
    check that the ops ran exactly once each, in chain order (else the chain is not the forward)."""
    order: list[int] = []
    index = {id(op.module): i for i, op in enumerate(ops)}
    if len(index) != len(ops):
        raise ConversionError("cannot export: a module instance appears twice in the chain")

    def hook(module, inputs, output):
        i = index[id(module)]
        op = ops[i]
        lead = 1 if op.folded else 2  # [T*B, ...] or [T, B, ...]
        op.in_shape = tuple(inputs[0].shape[lead:])
        # the mean over time drops the T axis: [T, B, ...] -> [B, ...]
        op.out_shape = tuple(output.shape[1 if isinstance(module, MeanOverTime) else lead :])
        order.append(i)

    handles = [op.module.register_forward_hook(hook) for op in ops]
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        reset_state(model)
        with torch.no_grad():
            model(sample_input)
    except (ShapeError, RuntimeError) as exc:  # torch reports size mismatches as RuntimeError
        raise ShapeError(
            f"sample input of shape {tuple(sample_input.shape)} does not fit the model: {exc}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training:
            m.training = flag
        reset_state(model)
    if order != list(range(len(ops))):
        ran = [ops[i].path for i in order]
        raise ConversionError(
            "cannot export: the forward pass does not run the modules as one sequential chain "
            f"(expected {[op.path for op in ops]}, ran {ran})"
        )


def _to_items(ops: list[_Op], dt: float, soft_reset: str) -> list[_Item]:
    items: list[_Item] = []
    for position, op in enumerate(ops):
        m = op.module
        shape_in, shape_out = op.in_shape, op.out_shape
        if isinstance(m, MeanOverTime):
            if position != len(ops) - 1:
                raise ConversionError(
                    f"cannot export {op.path!r}: MeanOverTime is only supported as the final "
                    "read-out (NIR has no reduction over time)"
                )
            continue
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise ConversionError(
                    f"cannot export {op.path!r}: Conv2d padding_mode {m.padding_mode!r} "
                    "(NIR pads with zeros)"
                )
            bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_channels)
            items.append(
                _Item(
                    "conv",
                    op.path,
                    shape_in,
                    shape_out,
                    dict(
                        weight=_dense_conv_weight(m.weight.detach().double(), m.groups),
                        bias=bias.clone().double(),
                        stride=m.stride,
                        padding=m.padding,
                        dilation=m.dilation,
                        groups=1,
                    ),
                )
            )
        elif isinstance(m, nn.Linear):
            if len(shape_in) != 1:
                raise ConversionError(
                    f"cannot export {op.path!r}: Linear over steps of shape {shape_in} "
                    "(NIR Affine maps vectors)"
                )
            items.append(
                _Item(
                    "linear",
                    op.path,
                    shape_in,
                    shape_out,
                    dict(
                        weight=m.weight.detach().clone().double(),
                        bias=None if m.bias is None else m.bias.detach().clone().double(),
                    ),
                )
            )
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _fold_batch_norm(items, op)
        elif isinstance(m, nn.AvgPool2d):
            items.append(_Item("pool", op.path, shape_in, shape_out, _pool_params(op)))
        elif isinstance(m, nn.Flatten) or isinstance(m, _time_first_flatten_types()):
            if isinstance(m, nn.Flatten):
                lead = 1 if op.folded else 2  # NIR dims exclude [T*B] (or [T, B])
                start = m.start_dim - lead if m.start_dim >= 0 else m.start_dim
                end = m.end_dim - lead if m.end_dim >= 0 else m.end_dim
                if m.start_dim >= 0 and start < 0 or m.end_dim >= 0 and end < 0:
                    raise ConversionError(
                        f"cannot export {op.path!r}: Flatten must keep the time and batch "
                        "dimensions"
                    )
            else:
                start, end = 0, -1
            items.append(_Item("flatten", op.path, shape_in, shape_out, dict(start=start, end=end)))
        else:
            items.append(
                _Item("neuron", op.path, shape_in, shape_out, _neuron_params(op, dt, soft_reset))
            )
    return items


def _dense_conv_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight as the equivalent dense one (zeros between groups).

    NIR 1.0.8 derives a Conv2d's input type from ``weight.shape[1]`` without the groups, so a
    grouped conv fails NIR's own type check on write and read; the dense form is the same map.
    """
    if groups == 1:
        return weight.clone()
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    out_per_group = out_channels // groups
    dense = weight.new_zeros(out_channels, in_per_group * groups, *weight.shape[2:])
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * in_per_group : (g + 1) * in_per_group] = weight[rows]
    return dense


def _fold_batch_norm(items: list[_Item], op: _Op) -> None:
    bn = op.module
    prev = items[-1] if items else None
    want = "conv" if isinstance(bn, nn.BatchNorm2d) else "linear"
    if prev is None or prev.kind != want or prev.params.get("bn_folded"):
        raise ConversionError(
            f"cannot export {op.path!r} ({type(bn).__name__}): batch norm is folded into the "
            f"preceding {'Conv2d' if want == 'conv' else 'Linear'}, and there is none directly "
            "before it"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError(
            f"cannot export {op.path!r}: batch norm without running statistics has no "
            "inference form"
        )
    if len(op.in_shape) > 1 and isinstance(bn, nn.BatchNorm1d):
        raise ConversionError(f"cannot export {op.path!r}: BatchNorm1d over a sequence dimension")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    factor = gamma / torch.sqrt(var + bn.eps)
    w = prev.params["weight"]
    prev.params["weight"] = w * factor.view(-1, *([1] * (w.ndim - 1)))
    bias = prev.params["bias"] if prev.params["bias"] is not None else torch.zeros_like(mean)
    prev.params["bias"] = (bias - mean) * factor + beta
    prev.params["bn_folded"] = op.path
    prev.out_shape = op.out_shape


def _pool_params(op: _Op) -> dict:
    m = op.module
    if m.ceil_mode or m.divisor_override is not None:
        raise ConversionError(
            f"cannot export {op.path!r}: AvgPool2d with ceil_mode or divisor_override"
        )
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))  # noqa: E731
    padding = pair(m.padding)
    if any(padding) and not m.count_include_pad:
        raise ConversionError(
            f"cannot export {op.path!r}: padded AvgPool2d with count_include_pad=False"
        )
    kernel = pair(m.kernel_size)
    stride = pair(m.stride if m.stride is not None else m.kernel_size)
    return dict(kernel=kernel, stride=stride, padding=padding)


def _effective_threshold(neuron: IF) -> torch.Tensor:
    th = neuron.threshold.detach()
    if neuron.threshold.requires_grad:  # same clamp as IF.effective_threshold
        th = th.clamp(min=neuron.min_threshold)
    return th


def _neuron_params(op: _Op, dt: float, soft_reset: str) -> dict:
    neuron: IF = op.module
    shape = op.in_shape
    if op.in_shape != op.out_shape:
        raise ConversionError(f"cannot export {op.path!r}: neuron changes the shape")
    th = _effective_threshold(neuron)
    if th.ndim == 1 and (len(shape) == 0 or shape[0] != th.shape[0]):
        raise ConversionError(
            f"cannot export {op.path!r}: {th.shape[0]} per-channel thresholds for steps of "
            f"shape {shape}"
        )
    th_full = th.view(-1, *([1] * (len(shape) - 1))).expand(shape) if th.ndim else th.expand(shape)
    metadata: dict[str, Any] = {}
    reset = neuron.reset
    if isinstance(reset, Subtract):
        if soft_reset == "error":
            raise ConversionError(
                f"cannot export neuron {op.path!r} ({type(neuron).__name__}) with soft reset "
                "(V = H - V_th z): NIR IF/LIF reset to v_reset (hard reset). Use reset='zero', or "
                "soft_reset='metadata' (--soft-reset metadata) to annotate the nodes for "
                "spikequant (other NIR tools will then run a hard reset)"
            )
        metadata[RESET_KEY] = SOFT_RESET
        v_reset = 0.0
    elif isinstance(reset, Zero):
        v_reset = float(reset.v_reset)
    else:  # pragma: no cover - create_reset only builds these two
        raise ConversionError(f"cannot export neuron {op.path!r}: unknown reset {reset!r}")
    params = dict(
        neuron=type(neuron).__name__,
        threshold=th_full.numpy().astype(np.float32),
        v_reset=np.full(shape, v_reset, dtype=np.float32),
        metadata=metadata,
        output_scale=th if neuron.scale_output else None,
    )
    if isinstance(neuron, LIF):
        tau, r = lif_to_nir(neuron.tau, neuron.decay_input, dt)
        params.update(
            tau=np.full(shape, tau, dtype=np.float32), r=np.full(shape, r, dtype=np.float32)
        )
    else:
        params.update(r=np.full(shape, if_resistance(dt), dtype=np.float32))
    return params


def _channel_scale(scale: torch.Tensor, where: str) -> torch.Tensor:
    """The per-channel values of a scale ``[C, ...]`` that is constant within each channel."""
    per_channel = scale.reshape(scale.shape[0], -1)
    if not bool(
        (per_channel == per_channel[:, :1]).all()
    ):  # pragma: no cover - neurons are per-channel
        raise ConversionError(
            f"cannot export: the output scale entering {where!r} is not per channel"
        )
    return per_channel[:, 0]


def _fold_output_scales(items: list[_Item]) -> list[_Item]:
    """Multiply each ``V_th z`` output into the next conv/linear; else emit a NIR Scale node."""
    out: list[_Item] = []
    pending: torch.Tensor | None = None  # per-step-shaped scale waiting for a weighted layer
    for item in items:
        if pending is not None:
            if item.kind == "conv":
                s = _channel_scale(pending, item.name).double()
                groups = item.params["groups"]
                w = item.params["weight"]
                per_group = s.view(groups, -1).repeat_interleave(w.shape[0] // groups, dim=0)
                item.params["weight"] = w * per_group[:, :, None, None]
                pending = None
            elif item.kind == "linear":
                item.params["weight"] = item.params["weight"] * pending.reshape(1, -1).double()
                pending = None
            elif item.kind == "pool":
                s = _channel_scale(pending, item.name)
                pending = s.view(-1, 1, 1).expand(item.out_shape).clone()
            elif item.kind == "flatten":
                pending = pending.reshape(item.out_shape)
            else:  # a neuron directly after a scaled neuron: the scale must stay explicit
                out.append(
                    _Item(
                        "scale",
                        f"{item.name}.input_scale",
                        item.in_shape,
                        item.in_shape,
                        dict(scale=pending),
                    )
                )
                pending = None
        out.append(item)
        if item.kind == "neuron" and item.params["output_scale"] is not None:
            th = item.params["output_scale"]
            shape = item.out_shape
            pending = (
                th.view(-1, *([1] * (len(shape) - 1))).expand(shape)
                if th.ndim
                else th.expand(shape)
            ).clone()
    if pending is not None:
        last = out[-1]
        out.append(
            _Item(
                "scale",
                f"{last.name}.output_scale",
                last.out_shape,
                last.out_shape,
                dict(scale=pending),
            )
        )
    return out


def _nir_node(item: _Item, dt: float) -> nir.NIRNode:
    p = item.params
    f32 = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)  # noqa: E731
    if item.kind == "conv":
        padding = (
            p["padding"] if isinstance(p["padding"], str) else tuple(int(v) for v in p["padding"])
        )
        return nir.Conv2d(
            input_shape=tuple(int(v) for v in item.in_shape[1:]),
            weight=f32(p["weight"]),
            stride=tuple(int(v) for v in p["stride"]),
            padding=padding,
            dilation=tuple(int(v) for v in p["dilation"]),
            groups=int(p["groups"]),
            bias=f32(p["bias"]),
        )
    if item.kind == "linear":
        if p["bias"] is None:
            return nir.Linear(weight=f32(p["weight"]))
        return nir.Affine(weight=f32(p["weight"]), bias=f32(p["bias"]))
    if item.kind == "pool":
        return nir.AvgPool2d(
            kernel_size=np.array(p["kernel"]),
            stride=np.array(p["stride"]),
            padding=np.array(p["padding"]),
        )
    if item.kind == "flatten":
        return nir.Flatten(
            input_type={"input": np.array(item.in_shape)}, start_dim=p["start"], end_dim=p["end"]
        )
    if item.kind == "scale":
        return nir.Scale(scale=f32(p["scale"]))
    meta = dict(p["metadata"])
    v_threshold = strict_threshold(p["threshold"])
    if "tau" in p:
        return nir.LIF(
            tau=p["tau"],
            r=p["r"],
            v_leak=np.zeros_like(p["r"]),
            v_threshold=v_threshold,
            v_reset=p["v_reset"],
            metadata=meta,
        )
    return nir.IF(r=p["r"], v_threshold=v_threshold, v_reset=p["v_reset"], metadata=meta)


def to_nir(
    model: nn.Module,
    sample_input: torch.Tensor,
    *,
    dt: float = 1.0,
    soft_reset: str = "error",
) -> nir.NIRGraph:
    """Export a sequential spiking network to a :class:`nir.NIRGraph`.

    Args:
        model: an ``nn.Sequential`` / registered model built from TimeFold-wrapped Conv2d, Linear,
            BatchNorm, AvgPool2d, Flatten and IF / LIF / ATIF-u neurons.
        sample_input: an input the model accepts (``[T, B, ...]``, or ``[B, C, H, W]`` for a
            registered model); run once in eval mode to learn the per-step shapes (the neuron
            state is reset before and after).
        dt: the simulation step the NIR time constants refer to (``tau_NIR = dt * tau``).
        soft_reset: ``"error"`` (default) refuses soft-reset neurons, which NIR cannot express;
            ``"metadata"`` exports them as NIR IF/LIF annotated with ``spikequant_reset: subtract``.

    Returns:
        A type-checked chain ``input -> ... -> output`` whose node names are the module paths.
        The graph input is the per-step input current ``x[t]`` of the first layer.
    """
    if not isinstance(model, nn.Module):
        raise ConversionError(f"to_nir expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(sample_input, torch.Tensor):
        raise ShapeError(f"sample_input must be a tensor, got {type(sample_input).__name__}")
    if soft_reset not in SOFT_RESET_POLICIES:
        raise ConversionError(
            f"soft_reset must be one of {SOFT_RESET_POLICIES}, got {soft_reset!r}"
        )
    if not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
        raise ConversionError(f"dt must be a positive finite number, got {dt!r}")
    ops: list[_Op] = []
    _walk(model, "", False, ops)
    if not ops:
        raise ConversionError(
            f"cannot export {type(model).__name__}: it contains no exportable layer"
        )
    _probe_shapes(model, ops, sample_input)
    items = _fold_output_scales(_to_items(ops, float(dt), soft_reset))
    if not items:
        raise ConversionError(f"cannot export {type(model).__name__}: it has no layer to export")

    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type={"input": np.array(items[0].in_shape)})
    }
    edges: list[tuple[str, str]] = []
    previous = "input"
    for item in items:
        name = item.name
        nodes[name] = _nir_node(item, float(dt))
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(output_type={"output": np.array(items[-1].out_shape)})
    edges.append((previous, "output"))
    metadata = {
        "dt": float(dt),
        "producer": "spikequant",
        "time": "discrete steps of dt, forward Euler",
    }
    if isinstance(ops[-1].module, MeanOverTime):
        # the per-step output is the graph's; decoding by the mean over time is the reader's job
        metadata["readout"] = READOUT_MEAN
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    except (ValueError, AssertionError) as exc:  # pragma: no cover - a mapping bug, not bad input
        raise ConversionError(f"the exported NIR graph does not type-check: {exc}") from None
