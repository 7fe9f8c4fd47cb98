"""The MSAT paper's energy model (E_MAC 4.6 pJ, E_AC 0.9 pJ) on a converted MLP of real digits:
the counts equal an independent count from the spike totals of each stage."""

import pytest
import torch

from spikequant.convert import convert
from spikequant.convert.ann import train_epochs
from spikequant.convert.energy import AC_PJ, MAC_PJ, energy_model, measure_energy
from spikequant.data import load_arrays
from spikequant.errors import ConfigError
from spikequant.registry import create_model


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    x, y = load_arrays("mnist5k", "train")
    model = create_model("ann_mlp", hidden=(32, 16))
    train_epochs(model, x[:1024], y[:1024], epochs=1, lr=0.05, batch_size=64, cfg={},
                 generator=torch.Generator())  # fmt: skip
    return model.eval(), x[:64]


def test_energy_model_arithmetic():
    e = energy_model(ann_macs=1000.0, first_layer_macs=600.0, synops=2000.0, timesteps=4)
    assert e["ann_pj"] == pytest.approx(4600.0)
    assert e["snn_pj"] == pytest.approx(4.6 * 4 * 600 + 0.9 * 2000)
    assert e["snn_fraction_of_ann"] == pytest.approx(e["snn_pj"] / 4600.0)
    assert (MAC_PJ, AC_PJ) == (4.6, 0.9)


@pytest.mark.parametrize("method", ["rate", "msat"])
def test_counts_equal_the_spike_totals_of_each_stage(mlp, method):
    model, x = mlp
    net = convert(model, method, x)
    T = 8
    e = measure_energy(net, x, T)
    # MLP 784-32-16-10: the first layer's MACs and the ANN's, from the layer sizes
    assert e["first_layer_macs"] == 784 * 32
    assert e["ann_macs"] == 784 * 32 + 32 * 16 + 16 * 10
    # every spike of the 32 hidden neurons reaches 16 outputs, every spike of the 16 reaches 10
    stages = list(net.stages().values())
    net.simulate(x, [T])
    spikes = [s.spikes for s in stages]
    assert len(spikes) == 2
    assert e["synops"] == pytest.approx((spikes[0] * 16 + spikes[1] * 10) / len(x))
    assert 0 < e["snn_fraction_of_ann"] < T  # the analog first layer alone costs T x its MACs


def test_calif_networks_are_refused(mlp):
    model, x = mlp

    class Fake:
        method = "calif"

    with pytest.raises(ConfigError, match="rate and msat"):
        measure_energy(Fake(), x, 4)
