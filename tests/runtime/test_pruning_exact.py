"""Spatial pruning: the float model ranks its pruning scores exactly like the integer program, so
a trained SpQuant-SNN (2-bit weights, ternary membranes, 35 % spatial pruning, channel gates) and
its deployed program agree on every spike, stored membrane and prediction of real test digits.

The float32 convolutions sum identical spike patterns in a different order at image borders, so
one integer accumulator gives currents a few ulps apart; ranked as they are (the ranking QLIF
uses while training) the float model drops other locations than the program at tied cuts. The
evaluation ranking snaps each current to its accumulator class first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikequant.data import get_dataset
from spikequant.neurons import reset_state
from spikequant.runtime.lower import lower_model, quantize_input
from spikequant.runtime.native import NativeRuntime
from spikequant.runtime.reference import ReferenceInterpreter
from spikequant.spquant.build import build_spquant_model
from spikequant.spquant.neuron import _CLASS_TOLERANCE, _snap_to_classes
from spikequant.spquant.pruning import qlif_layers

from .conftest import spec

TEST_DIGITS = 256


@pytest.fixture(scope="module")
def trained(calibration):
    """BN statistics from 256 real training digits, then 10 Adam steps on them (the network
    reaches about 70 % on test digits: a trained model whose layers fire at working rates)."""
    torch.manual_seed(0)
    model_spec, spq = spec(spatial_prune=0.35)  # the runtime tests' SpQuant digits network
    model = build_spquant_model(model_spec, spq)
    x, y = calibration
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # cumulative statistics over the calibration digits
    model.train()
    with torch.no_grad():
        for chunk in x.split(64):
            reset_state(model)
            model(chunk)
    for norm in norms:
        norm.momentum = 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(10):
        batch = slice(64 * (step % 4), 64 * (step % 4) + 64)
        reset_state(model)
        loss = torch.nn.functional.cross_entropy(model(x[batch]).mean(0), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reset_state(model)
    model.eval()
    test = get_dataset("mnist5k", "test")
    xt = torch.stack([test[i][0] for i in range(TEST_DIGITS)])
    yt = torch.tensor([int(test[i][1]) for i in range(TEST_DIGITS)])
    return model, xt, yt


def float_run(model, x, *, snapped: bool):
    """Logits and per-layer traces of the float model; ``snapped=False`` ranks the pruning scores
    without snapping (the training-mode ranking) while everything else stays in eval mode."""
    layers = [layer for _, layer in qlif_layers(model)]
    currents: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: currents.append(args[0].detach()))
        for layer in layers
    ]
    for layer in layers:
        layer.record_trace = True
        layer.training = not snapped
    try:
        with torch.no_grad():
            reset_state(model)
            out = model(x).mean(0)
            reset_state(model)
        return out, [layer.trace for layer in layers], currents
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers:
            layer.record_trace = False
            layer.trace = None
            layer.training = False


def mismatches(program, traces, trace) -> tuple[int, int]:
    spikes = membranes = 0
    for index, float_trace in enumerate(traces):
        removed = program.layers[index]["removed_channels"]
        keep = [c for c in range(float_trace["spikes"].shape[2]) if c not in removed]
        spikes += int(
            (float_trace["spikes"][:, :, keep].long() != torch.stack(trace.spikes[index])).sum()
        )
        stored = float_trace["stored"][:, :, keep].long()
        membranes += int((stored != torch.stack(trace.membranes[index])).sum())
    return spikes, membranes


def test_trained_spquant_snn_with_spatial_pruning_equals_its_program(trained):
    model, x, y = trained
    program = lower_model(model)
    drops = [layer["neuron"]["spatial_drop"] for layer in program.layers[:2]]
    assert drops == [round(0.35 * 28 * 28), round(0.35 * 14 * 14)]
    codes = quantize_input(program, x)
    logits_int, trace = ReferenceInterpreter(program).run(torch.from_numpy(codes), trace=True)
    # what `spikequant run` executes: the C++ engine, equal to the reference interpreter
    assert np.array_equal(NativeRuntime(program, batch=len(codes)).run(codes), logits_int.numpy())
    predictions_int = logits_int.argmax(1)
    accuracy_int = float((predictions_int == y).float().mean())
    assert accuracy_int > 0.5, "the network is not trained: the comparison would be vacuous"

    # the mismatch: currents ranked as float32 computed them (border sums rounded differently)
    logits_raw, traces_raw, _ = float_run(model, x, snapped=False)
    spikes_raw, _ = mismatches(program, traces_raw, trace)
    assert spikes_raw > 0

    logits_float, traces, currents = float_run(model, x, snapped=True)
    for index, float_trace in enumerate(traces):
        rate = float(float_trace["spikes"].mean())
        assert 0.01 < rate < 0.6, f"layer {index} fires at {rate}: the comparison is vacuous"
    assert mismatches(program, traces, trace) == (0, 0)
    assert torch.equal(logits_float.argmax(1), predictions_int)
    assert float((logits_float.argmax(1) == y).float().mean()) == accuracy_int

    # the snapping's two conditions hold (checked on the first 32 digits): within a class the
    # currents lie closer than the tolerance, so snapped values and integer current codes
    # correspond one to one on the kept locations, and distinct accumulators are further apart
    for index in (0, 1):
        layer = program.layers[index]
        current = currents[index][:, :32]  # [T, B, C, H, W] float32, before pruning
        t, b, c = current.shape[:3]
        snapped = _snap_to_classes(current.reshape(t * b, c, *current.shape[3:])).view_as(current)
        codes = torch.stack(trace.currents[index])[:, :32]
        kept_locations = codes.ne(0).any(2, keepdim=True).expand_as(codes)
        key = torch.arange(t * b * c).view(t, b, c, 1, 1).expand_as(codes)[kept_locations]
        value = snapped.double()[kept_locations]
        code = codes[kept_locations]
        assert determines(key, value, code) and determines(key, code, value)
        scale = 2.0 ** (layer["frac_bits"] + layer["shift"])
        a = program.tensors[f"layers.{index}.multiplier"].astype(float) / scale
        offset = program.tensors[f"layers.{index}.offset"].astype(float) / scale
        assert (layer["acc_bound"] + abs(offset / a)).max() < 1 / _CLASS_TOLERANCE


def determines(key: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Within each key, equal ``a`` means equal ``b``."""
    order = torch.sort(a, stable=True).indices
    order = order[torch.sort(key[order], stable=True).indices]
    key, a, b = key[order], a[order], b[order]
    same = (key[1:] == key[:-1]) & (a[1:] == a[:-1])
    return bool(torch.equal(b[1:][same], b[:-1][same]))
