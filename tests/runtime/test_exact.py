"""The integer program against the float fake-quant model, qlif_integer_reference and the C++
runtime, on a SpQuant digits model and real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikequant.neurons import reset_state
from spikequant.quant.membrane import MembraneLevels
from spikequant.runtime.lower import lower_model, quantize_input
from spikequant.runtime.native import NativeRuntime
from spikequant.runtime.reference import ReferenceInterpreter
from spikequant.spquant.neuron import qlif_integer_reference
from spikequant.spquant.pruning import qlif_layers

from .conftest import CLOSED


def float_forward(model, x):
    layers = qlif_layers(model)
    for _, layer in layers:
        layer.record_trace = True
    try:
        with torch.no_grad():
            reset_state(model)
            out = model(x)
            reset_state(model)
        return out.mean(0), [layer.trace for _, layer in layers]
    finally:
        for _, layer in layers:
            layer.record_trace = False
            layer.trace = None


def kept(program, index, tensor):
    removed = program.layers[index]["removed_channels"]
    keep = [c for c in range(tensor.shape[2]) if c not in removed]
    return tensor[:, :, keep]


def test_quant_snn_spikes_membranes_and_predictions_equal_float_model(quant_model, digits):
    x, y = digits
    program = lower_model(quant_model)
    assert program.layers[1]["removed_channels"] == list(CLOSED)
    assert program.layers[1]["out_shape"][0] == 32 - len(CLOSED)
    assert program.layers[2]["in_shape"][0] == 32 - len(CLOSED)
    logits_float, traces = float_forward(quant_model, x)
    logits_int, trace = ReferenceInterpreter(program).run(
        torch.from_numpy(quantize_input(program, x)), trace=True
    )
    for index, float_trace in enumerate(traces):
        spikes = float_trace["spikes"]
        rate = float(spikes.mean())
        assert 0.002 < rate < 0.6, f"layer {index} fires at {rate}: the comparison is vacuous"
        removed = program.layers[index]["removed_channels"]
        if removed:  # a closed channel never fires in the float model either
            assert spikes[:, :, removed].abs().sum() == 0
        assert torch.equal(kept(program, index, spikes).long(), torch.stack(trace.spikes[index]))
        membranes = kept(program, index, float_trace["stored"]).long()
        assert torch.equal(membranes, torch.stack(trace.membranes[index]))
    assert torch.equal(logits_float.argmax(1), logits_int.argmax(1))
    accuracy_float = float((logits_float.argmax(1) == y).float().mean())
    accuracy_int = float((logits_int.argmax(1) == y).float().mean())
    assert accuracy_int == accuracy_float


def test_spquant_with_spatial_pruning_predictions_equal_float_model(spquant_model, digits):
    x, y = digits
    program = lower_model(spquant_model)
    assert program.layers[0]["neuron"]["spatial_drop"] == round(0.35 * 28 * 28)
    logits_float, traces = float_forward(spquant_model, x)
    logits_int, trace = ReferenceInterpreter(program).run(
        torch.from_numpy(quantize_input(program, x)), trace=True
    )
    # the float model ranks pruning scores by the program's rule (tests/runtime/test_pruning_exact)
    for index, float_trace in enumerate(traces):
        assert torch.equal(
            kept(program, index, float_trace["spikes"]).long(), torch.stack(trace.spikes[index])
        )
        membranes = kept(program, index, float_trace["stored"]).long()
        assert torch.equal(membranes, torch.stack(trace.membranes[index]))
    assert torch.equal(logits_float.argmax(1), logits_int.argmax(1))


@pytest.mark.parametrize("which", ["quant_model", "spquant_model"])
def test_native_runtime_equals_reference_batched_and_streaming(which, request, digits):
    model = request.getfixturevalue(which)
    x, _ = digits
    program = lower_model(model)
    codes = quantize_input(program, x)
    logits, trace = ReferenceInterpreter(program).run(torch.from_numpy(codes), trace=True)
    native = NativeRuntime(program, batch=len(codes), threads=2)
    assert np.array_equal(native.run(codes), logits.numpy())
    for index, layer in enumerate(program.layers):
        if layer["neuron"] is None:
            continue
        spikes, membranes = native.trace(index)
        assert np.array_equal(spikes, trace.spikes[index][-1].numpy())
        assert np.array_equal(membranes, trace.membranes[index][-1].numpy())
    stream = NativeRuntime(program, batch=1)
    for b in (0, 5):
        stream.reset()
        total = sum(stream.step(codes[b : b + 1]) for _ in range(program.timesteps))
        assert np.array_equal(total, logits.numpy()[b : b + 1])


def test_neuron_layers_equal_qlif_integer_reference(spquant_model, digits):
    x, _ = digits
    program = lower_model(spquant_model)
    _, trace = ReferenceInterpreter(program).run(
        torch.from_numpy(quantize_input(program, x[:8])), trace=True
    )
    for index, layer in enumerate(program.layers[:-1]):
        frac = layer["frac_bits"]
        threshold = program.tensors[f"layers.{index}.threshold"]
        assert len(set(threshold.tolist())) == 1  # one learned threshold per layer
        lo, hi = layer["neuron"]["levels"]
        spikes, stored = qlif_integer_reference(
            torch.stack(trace.currents[index]),
            frac_bits=frac,
            threshold=int(threshold[0]) / 2 ** (frac + 1),
            levels=MembraneLevels(low=float(lo), high=float(hi), step=1.0),
        )
        assert torch.equal(spikes, torch.stack(trace.spikes[index]))
        assert torch.equal(stored, torch.stack(trace.membranes[index]))
