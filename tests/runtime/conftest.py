"""A small SpQuant digits model (2-bit weights, ternary membranes, learned-style thresholds,
channel gates with three statically closed channels), saved as a checkpoint the way the spquant
runner saves one, and a slice of the real MNIST test digits; a Ca-LIF LeNet converted from a
briefly trained 4-bit QAT model (shared by the Ca-LIF program and C emitter tests)."""

from __future__ import annotations

import pytest
import torch
from benchmarks.bench_runtime import CALIF_LENET, CALIF_T, trained_calif_lenet

from spikequant.checkpoint import save_checkpoint
from spikequant.data import get_dataset, load_arrays
from spikequant.methods.spquant import spquant_options
from spikequant.neurons import reset_state
from spikequant.spquant.build import build_spquant_model
from spikequant.spquant.pruning import qlif_layers

CLOSED = (0, 3, 7)  # channels of the second conv layer whose gate is closed for every input


def spec(spatial_prune: float) -> tuple[dict, dict]:
    model = {
        "name": "cnn_digits",
        "kwargs": {
            "num_classes": 10,
            "in_channels": 1,
            "input_size": 28,
            "timesteps": 4,
            "neuron": "qlif",
            "neuron_kwargs": {"membrane": "ternary", "learn_threshold": True},
        },
    }
    spq = spquant_options(
        **{
            "weight_bits": 2,
            "weight_alpha": 4.0,
            "weight_rescale": True,
            "learn_threshold": True,
            "spatial_prune": spatial_prune,
            "channel_gates": True,
        }
    )
    return model, spq


@pytest.fixture(scope="session")
def digits():
    test = get_dataset("mnist5k", "test")
    x = torch.stack([test[i][0] for i in range(48)])
    y = torch.tensor([int(test[i][1]) for i in range(48)])
    return x, y


def build(spatial_prune: float, calibration: torch.Tensor, seed: int = 0):
    torch.manual_seed(seed)
    model_spec, spq = spec(spatial_prune)
    model = build_spquant_model(model_spec, spq)
    x, y = calibration
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(8):  # a few quantization-aware steps: weights, BN and gates move
        batch = slice(32 * step, 32 * step + 32)
        reset_state(model)
        loss = torch.nn.functional.cross_entropy(model(x[batch]).mean(0), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reset_state(model)
    with torch.no_grad():
        for index, (_, layer) in enumerate(qlif_layers(model)):
            layer.threshold.fill_((0.93, 0.9, 0.88)[index])
            if layer.channel_gate is not None:
                layer.channel_gate.proj.bias[list(CLOSED)] = -5.0
    model.eval()
    return model, model_spec, spq


@pytest.fixture(scope="session")
def calibration():
    train = get_dataset("mnist5k", "train")
    x = torch.stack([train[i][0] for i in range(256)])
    return x, torch.tensor([int(train[i][1]) for i in range(256)])


@pytest.fixture(scope="session")
def quant_model(calibration):
    """The Quant-SNN with channel gates, no spatial pruning (trained on its own: the pruned
    network's weights silence its last hidden layer once the pruning is switched off)."""
    return build(0.0, calibration)[0]


@pytest.fixture(scope="session")
def spquant_model(spquant_run):
    return spquant_run[1]


@pytest.fixture(scope="session")
def spquant_run(calibration, tmp_path_factory):
    """A run folder holding a checkpoint like the spquant runner writes."""
    model, model_spec, spq = build(0.35, calibration)
    folder = tmp_path_factory.mktemp("run") / "checkpoint"
    meta = {
        "kind": "spquant",
        "name": "test-spquant",
        "dataset": "mnist5k",
        "model": model_spec,
        "spquant": spq,
    }
    save_checkpoint(folder, model.state_dict(), meta)
    return folder, model


T = CALIF_T  # 2^bits: the Ca-LIF codes equal the quantized ANN's
LENET = CALIF_LENET
SAMPLES = 16  # Ca-LIF LeNet test digits


@pytest.fixture(scope="session")
def lenet():
    """A Ca-LIF LeNet: 4-bit QAT with power-of-two steps, trained briefly on real digits, converted
    with T steps; and SAMPLES test digits."""
    model, net = trained_calif_lenet()  # the runtime benchmark's LeNet
    x_test, y_test = load_arrays("mnist5k", "test")
    return model, net, x_test[:SAMPLES], y_test[:SAMPLES]
