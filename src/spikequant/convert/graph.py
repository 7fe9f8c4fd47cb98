"""ANN -> SNN converter over ``torch.fx``, organised as recipes of four stages.

``validate`` (trace, refuse what cannot be converted, normalise functional ReLUs into modules),
``calibrate`` (activation scales from data: max or percentile, per layer or per channel),
``replace`` (activations -> spiking neurons, method specific) and ``finalize`` (recompile and wrap
into a :class:`~spikequant.convert.network.SpikingNetwork`).

Supported graph: Conv1d/Conv2d (grouped and depthwise included) and Linear (also their QAT
versions), BatchNorm directly after a weight layer (folded), ReLU / clipped ReLU (ReLU6,
Hardtanh(0, m)) / QuantReLU, AvgPool1d/AvgPool2d and global average pooling
(``AdaptiveAvgPool{1,2}d(1)``), residual ``+``, flatten/view/reshape, Dropout/Identity. Max pooling
is refused (use average pooling).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from ..quant.qat import (
    QuantConv1d,
    QuantConv2d,
    QuantInput,
    QuantLinear,
    QuantReLU,
    fake_quant_weight,
    fold_bn_into,
)

LEAF_TYPES = (QuantConv1d, QuantConv2d, QuantLinear, QuantReLU, QuantInput)
QUANT_WEIGHT_TYPES = (QuantConv1d, QuantConv2d, QuantLinear)
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
ACT_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, QuantReLU)
POOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
PASS_TYPES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, QuantInput)
PASS_TYPES = PASS_TYPES + POOL_TYPES
MAXPOOL_TYPES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
ADD_FUNCTIONS = (operator.add, torch.add, operator.iadd)
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
MAXPOOL_FUNCTIONS = (
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    torch.max_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
)
SHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
SHAPE_METHODS = ("view", "flatten", "reshape", "size", "contiguous")
MAXPOOL_MESSAGE = (
    "max pooling cannot be converted to spiking neurons (a spike train has no per-step maximum "
    "of rates); rebuild the ANN with average pooling (nn.AvgPool2d) and retrain"
)


class ConversionTracer(fx.Tracer):
    """Keeps the QAT modules as leaves (their fake-quantization is not traceable arithmetic)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace a copy of ``model`` (in eval mode) into a ``torch.fx.GraphModule``; untraceable
    control flow is a ConversionError."""
    model = copy.deepcopy(model).eval()
    try:
        graph = ConversionTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise ConversionError(f"cannot trace {type(model).__name__} with torch.fx: {exc}") from exc
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = _module(gm, node)
    if isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6):
        return m.min_val == 0.0
    return isinstance(m, ACT_TYPES)


def activation_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if is_activation(gm, n)]


# --------------------------------------------------------------------------- stage 1: validate
def validate(model: nn.Module | fx.GraphModule) -> fx.GraphModule:
    """Trace, check every operation, turn functional ReLUs into modules and un-share activations."""
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    used: dict[str, int] = {}
    for node in list(gm.graph.nodes):
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, MAXPOOL_TYPES):
                raise ConversionError(f"{node.target}: {MAXPOOL_MESSAGE}")
            if isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6) and m.min_val != 0.0:
                raise ConversionError(
                    f"{node.target}: Hardtanh must clip at 0 from below to convert"
                )
            if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)) and (m.padding not in (0, (0,), (0, 0))):
                raise ConversionError(f"{node.target}: padded average pooling is not supported")
            if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) and (
                m.output_size not in (1, (1,), (1, 1))
            ):
                raise ConversionError(
                    f"{node.target}: adaptive average pooling converts only as global pooling "
                    "(output_size 1)"
                )
            if not isinstance(m, WEIGHT_TYPES + BN_TYPES + ACT_TYPES + PASS_TYPES):
                raise ConversionError(
                    f"{node.target}: {type(m).__name__} is not convertible (supported: Conv1d, "
                    "Conv2d (grouped/depthwise too), Linear, BatchNorm, ReLU/ReLU6/Hardtanh(0,m)/"
                    "QuantReLU, AvgPool1d/2d, global average pooling, Flatten, Dropout, "
                    "residual add)"
                )
            if is_activation(gm, node):
                used[node.target] = used.get(node.target, 0) + 1
                if used[node.target] > 1:  # one neuron population per call site
                    name = f"{node.target.replace('.', '_')}_call{used[node.target]}"
                    gm.add_submodule(name, copy.deepcopy(m))
                    node.target = name
        elif node.op == "call_function":
            if node.target in MAXPOOL_FUNCTIONS:
                raise ConversionError(f"{node.name}: {MAXPOOL_MESSAGE}")
            if node.target in RELU_FUNCTIONS:
                name = f"relu_{node.name}"
                gm.add_submodule(name, nn.ReLU())
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_module(name, (node.args[0],))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
            elif node.target in (F.avg_pool1d, F.avg_pool2d):
                raise ConversionError(
                    f"{node.name}: use the nn.AvgPool1d/nn.AvgPool2d module instead of "
                    f"F.{node.target.__name__}"
                )
            elif node.target not in ADD_FUNCTIONS + SHAPE_FUNCTIONS and node.target is not getattr:
                raise ConversionError(
                    f"{node.name}: function "
                    f"{getattr(node.target, '__name__', node.target)} is not convertible"
                )
        elif node.op == "call_method":
            if node.target == "relu":
                raise ConversionError(
                    f"{node.name}: use nn.ReLU or F.relu instead of Tensor.relu()"
                )
            if node.target not in SHAPE_METHODS + ("add",):
                raise ConversionError(
                    f"{node.name}: tensor method .{node.target}() is not convertible"
                )
    gm.graph.lint()
    gm.recompile()
    return gm


def plain_layer(m: nn.Module) -> nn.Module:
    """A QuantConv1d/QuantConv2d/QuantLinear as the plain layer holding its effective
    (fake-quantized) weights; other modules are returned unchanged."""
    if not isinstance(m, QUANT_WEIGHT_TYPES):
        return m
    plain = copy.deepcopy(m)
    with torch.no_grad():
        plain.weight.copy_(fake_quant_weight(m.weight, m.bits))
    if isinstance(m, QuantConv1d):
        plain.__class__ = nn.Conv1d
    elif isinstance(m, QuantConv2d):
        plain.__class__ = nn.Conv2d
    else:
        plain.__class__ = nn.Linear
    del plain.bits
    return plain


def dequantize_weights(gm: fx.GraphModule) -> fx.GraphModule:
    """QuantConv1d/QuantConv2d/QuantLinear -> plain layers holding their effective weights."""
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if isinstance(m, QUANT_WEIGHT_TYPES):
            _set_module(gm, node.target, plain_layer(m))
    return gm


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every BatchNorm into the Conv/Linear feeding it (which must have no other user)."""
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, BN_TYPES):
            continue
        src = node.args[0]
        layer = _module(gm, src) if isinstance(src, fx.Node) else None
        if not isinstance(layer, WEIGHT_TYPES) or len(src.users) != 1:
            raise ConversionError(
                f"{node.target}: BatchNorm must directly follow a Conv/Linear to be folded"
            )
        if isinstance(layer, QUANT_WEIGHT_TYPES):
            raise ConversionError(
                f"{node.target}: dequantize the QAT layer before folding BatchNorm"
            )
        weight, bias = fold_bn_into(layer, bn)
        layer.weight = nn.Parameter(weight)
        layer.bias = nn.Parameter(bias)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)


# --------------------------------------------------------------------------- stage 2: calibrate
@torch.no_grad()
def collect_activations(
    gm: fx.GraphModule, batches: Iterable[torch.Tensor], *, inputs: bool = False
) -> dict[str, torch.Tensor]:
    """Outputs (or inputs) of every activation node over the calibration batches, concatenated."""
    store: dict[str, list[torch.Tensor]] = {}
    handles = []
    for node in activation_nodes(gm):
        m = gm.get_submodule(node.target)

        def hook(mod, args, out, name=node.target):
            value = args[0] if inputs else out
            store.setdefault(name, []).append(value.detach().float().cpu())

        handles.append(m.register_forward_hook(hook))
    try:
        gm.eval()
        for x in batches:
            gm(x)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def _statistic(values: torch.Tensor, method: str, percentile: float) -> torch.Tensor:
    if method == "max":
        return values.max() if values.numel() else torch.tensor(0.0)
    positive = values[values > 0]
    if positive.numel() == 0:
        return torch.tensor(0.0)
    if positive.numel() > 4_000_000:  # quantile's size limit: an evenly strided subsample
        positive = positive[:: positive.numel() // 4_000_000 + 1]
    return torch.quantile(positive, percentile / 100.0)


def calibrate(
    gm: fx.GraphModule,
    batches: Iterable[torch.Tensor],
    *,
    method: str = "max",
    percentile: float = 99.9,
    per_channel: bool = False,
) -> dict[str, torch.Tensor]:
    """Scale ``lambda`` per activation node: max ANN activation or the given percentile of the
    positive activations, per layer (0-d) or per channel (``[C]``, dead channels fall back to the
    layer value). Clipped and quantized ReLUs use their clip value instead (no data needed)."""
    if method not in ("max", "percentile"):
        raise ConversionError(f"calibration method must be 'max' or 'percentile', got {method!r}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    acts = collect_activations(gm, batches)
    scales: dict[str, torch.Tensor] = {}
    for node in activation_nodes(gm):
        m = gm.get_submodule(node.target)
        clip = _clip_value(m)
        if clip is not None:
            scales[node.target] = torch.tensor(float(clip))
            continue
        values = acts.get(node.target)
        if values is None:
            raise ConversionError(f"calibration data never reached {node.target}")
        layer = _statistic(values, method, percentile)
        if layer <= 0:
            layer = torch.tensor(1.0)  # a dead layer: any threshold gives zero output
        if per_channel and values.ndim >= 2:
            per = torch.stack(
                [_statistic(values[:, c], method, percentile) for c in range(values.shape[1])]
            )
            scales[node.target] = torch.where(per > 0, per, layer)
        else:
            scales[node.target] = layer.reshape(())
    return scales


def _clip_value(m: nn.Module) -> float | None:
    if isinstance(m, QuantReLU):
        return m.clip
    if isinstance(m, nn.ReLU6):
        return 6.0
    if isinstance(m, nn.Hardtanh):
        return float(m.max_val)
    return None


def prepare(model: nn.Module) -> fx.GraphModule:
    """validate + dequantize + fold BN: the float graph that rate/MSAT conversion starts from."""
    return fold_batchnorm(dequantize_weights(validate(model)))
