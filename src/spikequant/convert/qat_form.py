"""The quantization-aware (QAT) form of any convertible ANN, ready for exact Ca-LIF conversion.

:func:`quantize_for_calif` rewrites the traced float graph (BatchNorm already folded):

* a :class:`~spikequant.quant.qat.QuantInput` (8-bit pixels) in front of everything;
* Conv1d/Conv2d (grouped and depthwise too) and Linear -> QuantConv1d/QuantConv2d/QuantLinear
  (per-channel fake-quantized weights, ``bits``) holding the folded weights;
* every ReLU (clipped ones too) -> :class:`~spikequant.quant.qat.QuantReLU` (``bits``, LSQ step);
* every average pooling (``AvgPool1d/2d`` with stride = kernel, global ``AdaptiveAvgPool(1)``)
  moves into the QuantReLU in front of it (``pool=k``: the integer codes are averaged and rounded
  half up, which the Ca-LIF pool neuron reproduces exactly); a pooling with no QuantReLU directly
  in front of it (or one whose ReLU has other users) is refused.

Residual adds need nothing: the Ca-LIF neuron after the add integrates both currents.
With ``fold_bn=False`` every BatchNorm stays after its (now quantized) conv, so that QAT trains
with BN and folds it afterwards, as the ``qat`` training method does.
With ``calibration`` images the LSQ steps are initialised from them (the QAT's first-batch rule);
the result is an ``nn.Module`` to fine-tune like any other (QAT), then ``convert(qat, "calif")``.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConversionError
from ..quant.qat import (
    QuantConv1d,
    QuantConv2d,
    QuantInput,
    QuantLinear,
    QuantReLU,
    check_bits,
)
from .graph import POOL_TYPES, _module, _set_module, is_activation, prepare, validate


def _quant_layer(m: nn.Module, bits: int) -> nn.Module:
    if isinstance(m, nn.Linear):
        q = QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, bits=bits)
    else:
        cls = QuantConv1d if isinstance(m, nn.Conv1d) else QuantConv2d
        q = cls(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
            bits=bits,
        )
    with torch.no_grad():
        q.weight.copy_(m.weight)
        if m.bias is not None:
            q.bias.copy_(m.bias)
    return q


def _single(value, what: str, target: str) -> int:
    """An int from an int or a tuple of equal ints (square pooling)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(set(values)) != 1:
        raise ConversionError(
            f"{target}: {what} {value!r} is not square; calif pools square windows"
        )
    return int(values[0])


def _pool_kernel(m: nn.Module, node: fx.Node) -> int:
    target = str(node.target)
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        shape = node.args[0].meta["tensor_meta"].shape
        return _single(tuple(shape[2:]), "global pooling window", target)
    kernel = _single(m.kernel_size, "kernel", target)
    stride = _single(m.stride, "stride", target)
    if stride != kernel or m.ceil_mode:
        raise ConversionError(
            f"{target}: calif pools non-overlapping windows (stride = kernel, no ceil_mode)"
        )
    return kernel


@torch.no_grad()
def quantize_for_calif(
    model: nn.Module,
    example: torch.Tensor,
    *,
    bits: int = 8,
    calibration: torch.Tensor | None = None,
    fold_bn: bool = True,
) -> fx.GraphModule:
    """The QAT form of ``model`` (a float ANN or a zoo model built with ``neuron="relu"``).

    ``example`` is one input batch (its shape sets the global-pooling windows); ``calibration``
    (images in [0, 1]) initialises the LSQ steps; ``fold_bn=False`` keeps the BatchNorms (to be
    trained and folded later). Returns a trainable ``GraphModule``."""
    bits = check_bits(bits)
    from .methods import ann_form

    gm = prepare(ann_form(model)) if fold_bn else validate(ann_form(model))
    ShapeProp(gm).propagate(example[:1].to(next(gm.parameters()).dtype))
    for node in list(gm.graph.nodes):
        m = _module(gm, node)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            _set_module(gm, node.target, _quant_layer(m, bits))
        elif m is not None and is_activation(gm, node):
            if not isinstance(m, QuantReLU):
                _set_module(gm, node.target, QuantReLU(bits))
        elif isinstance(m, POOL_TYPES):
            src = node.args[0]
            act = _module(gm, src) if isinstance(src, fx.Node) else None
            if act is None or not is_activation(gm, src) or len(src.users) != 1:
                raise ConversionError(
                    f"{node.target}: calif needs average pooling directly after a ReLU (whose "
                    "only user it is), so that the pool neuron averages integer codes"
                )
            kernel = _pool_kernel(m, node)
            relu = gm.get_submodule(src.target)
            if relu.pool != 1:
                raise ConversionError(f"{node.target}: two poolings after one ReLU")
            relu.pool = kernel
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    gm.add_submodule("quant_input", QuantInput())
    with gm.graph.inserting_after(placeholder):
        quantized = gm.graph.call_module("quant_input", (placeholder,))
    placeholder.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    if calibration is not None:
        initialise_steps(gm, calibration)
    return gm.eval()


@torch.no_grad()
def initialise_steps(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """LSQ's first-batch step rule on ``images`` for every QuantReLU (nothing else in train
    mode, so dropout and BN statistics are untouched)."""
    was = {m: m.training for m in model.modules()}
    for m in model.modules():
        m.train(isinstance(m, QuantReLU))
        if isinstance(m, QuantReLU):
            m.initialized.fill_(False)
    try:
        model(images)
    finally:
        for m, mode in was.items():
            m.training = mode
    return model
