"""Cost model: the spec's VGG-9 / ResNet-19 counts, FLOPs arithmetic, CLI, measured activity."""

import json

import pytest
import torch

from spikequant import create_model, reset_state
from spikequant.cli import main
from spikequant.cost import energy_per_op, measure_activity, model_cost
from spikequant.io import command_line
from spikequant.spquant.pruning import attach_channel_gates, configure_pruning


@pytest.fixture(scope="module")
def vgg9_dvs():
    return create_model("vgg9", in_channels=2, input_size=48, timesteps=1, neuron="qlif")


def test_vgg9_48_neurons_and_membrane_memory(vgg9_dvs):
    fp = model_cost(vgg9_dvs, torch.zeros(1, 2, 48, 48), membrane_bits=32)
    assert fp["neurons"] == 921_600
    assert fp["memory_mb"]["membrane"] == pytest.approx(3.6864, abs=1e-9)
    ternary = model_cost(vgg9_dvs, torch.zeros(1, 2, 48, 48))  # qlif stores 2 bits
    assert ternary["memory_mb"]["membrane"] == pytest.approx(0.2304, abs=1e-9)


def test_resnet19_32_neurons_and_membrane_memory():
    model = create_model("resnet19", timesteps=1, neuron="qlif")
    cost = model_cost(model, torch.zeros(1, 3, 32, 32), membrane_bits=32)
    assert cost["neurons"] == 1_442_048
    assert cost["memory_mib"]["membrane"] == pytest.approx(5.50, abs=0.005)


def test_vgg9_dense_macs_and_sparse_flops():
    # The spec's 1,362,935,808 is the conv layers of VGG-9 on a 3-channel 48x48 input.
    model = create_model("vgg9", in_channels=3, input_size=48, timesteps=1, neuron="qlif")
    cost = model_cost(
        model, torch.zeros(1, 3, 48, 48), sparsity={"spatial": 0.35, "channel": 0.6923}
    )
    conv = sum(l["dense_macs_per_step"] for l in cost["layers"] if l["type"] == "Conv2d")
    assert conv == 1_362_935_808
    conv_sparse = sum(
        l["dense_macs_per_step"] * (1 - l["spatial_sparsity"]) * (1 - l["channel_sparsity"])
        for l in cost["layers"]
        if l["type"] == "Conv2d"
    )
    assert 1 - conv_sparse / conv == pytest.approx(0.80, abs=1e-4)
    assert conv / conv_sparse == pytest.approx(5.0, abs=1e-2)
    assert cost["flops_reduction"] == pytest.approx(5.0, abs=1e-2)


def test_energy_table():
    assert energy_per_op(32) == (0.38, 1.31)
    assert energy_per_op(16) == (0.16, 0.34)
    assert energy_per_op(2) == (0.007, 0.07)


def test_cli_cost_model_name(capsys):
    assert main(["cost", "vgg9", "--input-size", "2,48,48", "--membrane-bits", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["neurons"] == 921_600
    assert report["memory_mb"]["membrane"] == pytest.approx(0.2304)


def test_cli_cost_out_file_is_headed_by_its_command(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["cost", "vgg9", "--input-size", "2,48,48", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert saved.pop("command") == command_line()  # the process's own command line
    assert saved == printed


def test_cli_cost_bad_input(capsys):
    assert main(["cost", "vgg9", "--input-size", "2,48"]) == 2
    assert main(["cost", "no_such_model", "--input-size", "1,8,8"]) == 2
    assert main(["cost", "vgg9"]) == 2


def test_measure_activity_counts_masked_outputs():
    torch.manual_seed(0)
    model = create_model("cnn_digits", neuron="qlif", timesteps=2, widths=[4, 8], hidden=16)
    x = torch.rand(4, 1, 28, 28)
    dense = measure_activity(model, x)
    assert dense["effective_synops"] == pytest.approx(dense["spike_synops"])
    assert dense["sparsity"] == 0.0
    attach_channel_gates(model, x)
    configure_pruning(model, spatial=0.35)
    sparse = measure_activity(model, x)
    assert sparse["spatial_sparsity"] == pytest.approx(0.35, abs=0.01)
    assert sparse["effective_synops"] <= sparse["spike_synops"]
    keep = (1 - sparse["spatial_sparsity"]) * (1 - sparse["channel_sparsity"])
    assert sparse["sparsity"] == pytest.approx(1 - keep, abs=0.02)


def _brute_force_synops(model, x):
    """SynOps counted without spikequant.metrics: every conv/linear layer after the first (gates
    excluded) is re-run with all-ones weights and no bias on its 0/1 input mask; each output then
    holds the number of non-zero inputs it is connected to, so the sum is (input, output) pairs."""
    from torch import nn

    gates = {id(s) for m in model.modules() if getattr(m, "cost_role", None) == "gate"
             for s in m.modules()}  # fmt: skip
    seen = []

    def hook(module, inputs, output):
        mask = (inputs[0] != 0).float()
        ones = torch.ones_like(module.weight)
        if isinstance(module, nn.Linear):
            counted = torch.nn.functional.linear(mask, ones)
        else:
            counted = module._conv_forward(mask, ones, None)
        seen.append(float(counted.sum()))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in gates
    ]
    try:
        with torch.no_grad():
            reset_state(model)
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sum(seen[1:]) / x.shape[0]


def test_spike_monitor_and_measure_activity_count_the_same_synops_on_digits():
    from spikequant.data import load_arrays
    from spikequant.metrics import SpikeMonitor

    x, _ = load_arrays("digits8x8", "test")
    x = x[:96]
    torch.manual_seed(0)
    model = create_model(
        "cnn_digits",
        neuron="qlif",
        timesteps=4,
        input_size=8,
        neuron_kwargs={"threshold": 0.5, "membrane": "fp"},
    ).eval()

    def monitored():
        with SpikeMonitor(model) as monitor, torch.no_grad():
            for batch in x.split(40):  # three passes: the counts are per sample
                reset_state(model)
                model(batch)
        return monitor.report()

    report, activity = monitored(), measure_activity(model, x)
    assert report["theta"] > 0.01  # enough spikes for the count to mean something
    expected = _brute_force_synops(model, x)
    assert report["synops"] == pytest.approx(expected, rel=1e-12)
    assert activity["spike_synops"] == pytest.approx(expected, rel=1e-12)
    assert activity["effective_synops"] == pytest.approx(expected, rel=1e-12)
    assert report["first_layer_macs"] == activity["first_layer_macs"] == 16 * 9 * 64 * 4
    # channel gates are not synapses for either API; pruning only lowers effective_synops
    attach_channel_gates(model, x[:8])
    configure_pruning(model, spatial=0.35)
    report, activity = monitored(), measure_activity(model, x)
    expected = _brute_force_synops(model, x)
    assert report["synops"] == pytest.approx(expected, rel=1e-12)
    assert activity["spike_synops"] == pytest.approx(expected, rel=1e-12)
    assert activity["effective_synops"] < 0.9 * activity["spike_synops"]
