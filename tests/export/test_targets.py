"""Export presets (--target): the file, read by each library's own NIR importer, reproduces
spikequant's per-step outputs and predictions on real digits.

snnTorch is in the dev extra; Norse and SpikingJelly need torchvision by their metadata, so the
Makefile installs them with --no-deps (they import without it). None of these tests skips: a
missing library fails. Lava (lava-nc) supports Python < 3.11 only, so its test is a strict xfail
until it can be installed.
"""

import logging

import nir
import numpy as np
import pytest
import torch

import spikequant as sq
from spikequant.cli import main
from spikequant.data import load_arrays
from spikequant.errors import ConversionError
from spikequant.export import read_nir, write_nir
from spikequant.export.targets import TARGETS, adapt_graph, to_nir_for
from spikequant.export.to_nir import to_nir
from spikequant.metrics import SpikeMonitor

T = 4


def snntorch_network(graph):
    from snntorch.import_nir import import_from_nir

    return import_from_nir(graph)


def norse_network(graph):
    import norse.torch

    return norse.torch.from_nir(graph, dt=TARGETS["norse"].dt, ignore_warnings=True)


def spikingjelly_network(graph):
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    return import_from_nir(graph, dt=TARGETS["spikingjelly"].dt)


def lava_network(graph):  # pragma: no cover - lava-nc does not install on Python 3.11
    import lava.lib.dl.netx  # noqa: F401

    raise NotImplementedError("running a NIR graph in Lava is not wired up")


READERS = [
    pytest.param("snntorch", snntorch_network, id="snntorch"),
    pytest.param("norse", norse_network, id="norse"),
    pytest.param("spikingjelly", spikingjelly_network, id="spikingjelly"),
    pytest.param(
        "lava",
        lava_network,
        id="lava",
        marks=pytest.mark.xfail(
            strict=True,
            raises=ImportError,
            reason="lava-nc supports Python >=3.8,<3.11 only (no release installs on 3.11)",
        ),
    ),
]


@pytest.fixture(scope="module")
def digits():
    images, labels = load_arrays("digits8x8", "test")
    return images[:128] * 3, labels[:128]


def active_model(neuron):
    """cnn_digits with its random weights scaled up so that every layer fires (10-30 % of the
    neurons per step on these digits): an untrained network would hardly spike past layer 1."""
    torch.manual_seed(3)
    model = sq.create_model("cnn_digits", input_size=8, neuron=neuron, timesteps=T, norm=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.mul_(6)
    return model.eval()


def library_outputs(network, x, steps):
    """Run an imported network step by step (direct coding: the image enters every step)."""
    state, outputs = None, []
    with torch.no_grad():
        for _ in range(steps):
            out, state = network(x, state)
            outputs.append(out)
    return torch.stack(outputs)


@pytest.mark.parametrize("neuron", ["if_hard", "lif"])
@pytest.mark.parametrize(("target", "reader"), READERS)
def test_library_reproduces_spikequant(tmp_path, digits, target, reader, neuron):
    logging.disable(logging.WARNING)  # Norse warns about parameters it ignores
    x, labels = digits
    model = active_model(neuron)
    sq.reset_state(model)
    with SpikeMonitor(model) as monitor, torch.no_grad():
        expected = model(x)
    sq.reset_state(model)
    rates = [layer["firing_rate"] for layer in monitor.report()["layers"].values()]
    assert len(rates) == 3 and min(rates) > 0.1
    path = write_nir(tmp_path / "model.nir", to_nir_for(model, x[:1], target))
    network = reader(read_nir(path))  # the file, as a user of that library reads it
    got = library_outputs(network, x, T)
    # the per-step read-out W z + b differs for every sample: the last layer's spikes agree
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.equal(got.mean(0).argmax(1), expected.mean(0).argmax(1))


def chain_nodes(graph):
    return [type(graph.nodes[n]).__name__ for n in graph.nodes]


def test_presets_rewrite_only_what_each_reader_needs(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = sq.create_model("cnn_digits", input_size=8, neuron="lif", timesteps=T, norm=False)
    model.eval()
    plain = to_nir(model, x[:1], dt=1e-3)
    norse_graph = to_nir_for(model, x[:1], "norse")
    assert "SumPool2d" in chain_nodes(norse_graph) and "AvgPool2d" not in chain_nodes(norse_graph)
    # r folded into the weights before each LIF; 1/k^2 of each pool into the next layer
    assert np.allclose(norse_graph.nodes["net.1"].r, 1.0)
    r = float(plain.nodes["net.1"].r.flat[0])
    conv = norse_graph.nodes["net.0.module"].weight
    assert np.allclose(conv, r * plain.nodes["net.0.module"].weight)
    assert np.allclose(
        norse_graph.nodes["net.3.module"].weight, r * plain.nodes["net.3.module"].weight / 4
    )
    assert (norse_graph.nodes["net.6"].start_dim, norse_graph.nodes["net.6"].end_dim) == (-3, -1)
    sj = to_nir_for(model, x[:1], "spikingjelly")
    assert sj.metadata["dt"] == 1e-4 and sj.metadata["target"] == "spikingjelly"
    assert np.all(sj.nodes["net.1"].v_threshold == np.float32(1.0))  # V_th itself (fires on >=)
    snn = to_nir_for(
        sq.create_model("mlp", input_size=8, neuron="if_hard", hidden=[8]).eval(), x[:1], "snntorch"
    )
    lif = [n for n in snn.nodes.values() if isinstance(n, nir.LIF)][0]
    assert np.float32(1 - 1e-4 / float(lif.tau.flat[0])) == np.float32(1.0)  # no leak
    nir.NIRGraph(nodes=snn.nodes, edges=snn.edges)  # still a type-checked NIR graph


def test_presets_refuse_what_the_reader_cannot_run(digits):
    x, _ = digits
    model = sq.create_model("cnn_digits", input_size=8, neuron="if_hard", timesteps=T, norm=False)
    model.eval()
    graph = to_nir(model, x[:1], dt=1e-4)
    node = graph.nodes["net.1"]
    node.v_threshold = node.v_threshold * np.arange(1, node.v_threshold.shape[0] + 1).reshape(
        -1, 1, 1
    ).astype(np.float32)
    with pytest.raises(ConversionError, match="'net.1' for spikingjelly: .* one threshold per"):
        adapt_graph(graph, TARGETS["spikingjelly"])
    graph = to_nir(model, x[:1], dt=1e-3)
    graph.nodes["net.1"].v_reset = np.full_like(graph.nodes["net.1"].v_reset, 0.25)
    with pytest.raises(ConversionError, match="'net.1' for norse: its reader resets membranes"):
        adapt_graph(graph, TARGETS["norse"])


def test_cli_target_soft_reset_and_dt(tmp_path, capsys):
    from spikequant.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"neuron": "atif_u", "input_size": 8, "timesteps": 4}
    model = sq.create_model("cnn_digits", **kwargs)
    save_checkpoint(
        tmp_path / "ckpt", model.state_dict(), {"model": {"name": "cnn_digits", "kwargs": kwargs}}
    )
    out = tmp_path / "m.nir"
    argv = ["export", str(tmp_path / "ckpt"), "--out", str(out), "--target", "spikingjelly"]
    assert main(argv) == 2  # ATIF-u: soft reset refused, naming the opt-in
    assert "--soft-reset metadata" in capsys.readouterr().err
    assert main([*argv, "--soft-reset", "metadata"]) == 0
    assert "dt = 0.0001, for spikingjelly" in capsys.readouterr().out
    graph = read_nir(out)
    assert graph.metadata["target"] == "spikingjelly"
    assert graph.nodes["net.1"].metadata["spikequant_reset"] == "subtract"
    assert main([*argv, "--soft-reset", "metadata", "--dt", "1"]) == 2
    assert "drop --dt" in capsys.readouterr().err
