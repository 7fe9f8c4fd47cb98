"""rsnn_kws: the recurrent LIF network of Cramer et al. (the ATIF paper's GSC baseline)."""

import torch

import spikequant as sq
from spikequant.neurons.integrate_fire import LIF


def test_matches_a_hand_written_recurrent_loop():
    torch.manual_seed(0)
    model = sq.create_model("rsnn_kws", num_classes=4, input_size=(5, 3), timesteps=2, hidden=6)
    assert isinstance(model.cell, LIF)
    x = torch.randn(3, 1, 5, 3) * 3
    out = model(x)
    assert out.shape == (2, 3, 4)
    cell = LIF()
    spikes = torch.zeros(3, 6)
    state = cell.initial_state(spikes)
    readouts = torch.zeros(2, 3, 4)
    with torch.no_grad():
        for f in range(5):
            for t in range(2):
                current = model.input(x[:, 0, f]) + model.recurrent(spikes)
                spikes, state = cell.step(current, state)
                readouts[t] += model.readout(spikes) / 5
    torch.testing.assert_close(out.detach(), readouts)
    assert spikes.sum() > 0  # the input is strong enough to make the layer fire


def test_gsc_shape_and_ann_baseline():
    model = sq.create_model("rsnn_kws", timesteps=1)
    assert model(torch.rand(2, 1, 49, 10)).shape == (1, 2, 35)
    ann = sq.create_model("rsnn_kws", timesteps=1, neuron="relu")
    assert ann(torch.rand(2, 1, 49, 10)).shape == (1, 2, 35)
