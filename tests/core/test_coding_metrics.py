import math

import pytest
import torch
from torch import nn

import spikequant as sq
from spikequant import coding
from spikequant.errors import ConfigError, NonFiniteError, ShapeError
from spikequant.layers import TimeFold
from spikequant.metrics import SpikeMonitor, sparsity_theta, sqnr_db


def test_isi_counts_from_the_spec():
    s = coding.isi(torch.tensor([255, 128, 1, 0]), 128)
    assert s.sum(0).tolist() == [128, 64, 0, 0]
    steps = torch.nonzero(coding.isi(torch.tensor([128]), 16)[:, 0]).flatten() + 1
    assert steps.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert s.max() <= 1  # at most one spike per step


def test_isi_rejects_out_of_range_and_fractional_input():
    with pytest.raises(ConfigError):
        coding.isi(torch.tensor([256]), 8)
    with pytest.raises(ConfigError):
        coding.isi(torch.tensor([0.5]), 8)
    with pytest.raises(ConfigError, match="timesteps"):
        coding.isi(torch.tensor([3]), 0)


def test_direct_and_rate_coding():
    x = torch.rand(5, 3)
    assert torch.equal(coding.direct(x, 4)[2], x)
    g = torch.Generator().manual_seed(0)
    s = coding.bernoulli_rate(torch.full((20000,), 0.3), 8, generator=g)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(s.mean()) - 0.3) < 0.01
    with pytest.raises(NonFiniteError):
        coding.bernoulli_rate(torch.tensor([float("nan")]), 4)


def test_latency_round_trip_and_decoders():
    x = torch.tensor([1.0, 0.5, 0.0, 0.25])
    s = coding.latency(x, 5)
    assert coding.spike_count(s).tolist() == [1, 1, 0, 1]
    t = coding.first_spike_time(s)
    assert t[:2].tolist() == [0.0, 2.0] and math.isinf(t[2]) and t[3] == 3.0
    assert torch.allclose(coding.rate_decode(s), s.mean(0))
    assert torch.allclose(
        coding.latency_times(torch.tensor([1.0, 0.0]), 3.0), torch.tensor([0.0, 3.0])
    )


def test_sqnr_db():
    y = torch.tensor([1.0, 2.0, 3.0])
    assert sqnr_db(y, y) == math.inf
    assert sqnr_db(y, y + 1) == pytest.approx(10 * math.log10(14 / 3))
    with pytest.raises(ShapeError):
        sqnr_db(y, y[:2])


def test_monitor_counts_spikes_and_synops_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=1)
    fc = nn.Linear(3 * 6 * 6, 4)
    model = nn.Sequential(
        TimeFold(nn.Conv2d(1, 2, 3, padding=1)),
        sq.IF(0.3),
        TimeFold(conv),
        sq.IF(0.3),
        TimeFold(nn.Flatten()),
        TimeFold(fc),
    )
    x = torch.rand(5, 2, 1, 6, 6)  # T = 5, B = 2
    captured = {}
    model[1].register_forward_hook(lambda m, i, o: captured.__setitem__("s1", o))
    model[3].register_forward_hook(lambda m, i, o: captured.__setitem__("s2", o))
    with SpikeMonitor(model) as mon:
        model(x)
    r = mon.report()
    s1, s2 = captured["s1"], captured["s2"]
    assert r["samples"] == 2
    assert r["layers"]["1"]["firing_rate"] == pytest.approx(sparsity_theta(s1))
    assert r["theta"] == pytest.approx((sparsity_theta(s1) + sparsity_theta(s2)) / 2)
    # brute force: each input spike reaches (#outputs in whose window it lies) * out_channels
    ones = torch.ones(3, 2, 3, 3)
    reach = nn.functional.conv2d(s1.reshape(10, 2, 6, 6), ones, padding=1).sum()
    expected_conv = float(reach.detach())
    expected_fc = float((s2 != 0).sum()) * 4
    assert r["synapses"]["2.module"]["ops"] == pytest.approx(expected_conv / 2)
    assert r["synops"] == pytest.approx((expected_conv + expected_fc) / 2)
    assert r["first_layer_macs"] == r["synapses"]["0.module"]["dense_macs"] == 2 * 9 * 36 * 5
    assert "0.module" in r["synapses"] and r["synops"] < r["dense_macs"]
    assert r["spikes_per_neuron"] == pytest.approx(
        float((s1 != 0).sum() + (s2 != 0).sum()) / (2 * (72 + 108))
    )


def test_registry_errors_name_the_choices():
    with pytest.raises(ConfigError, match="known: .*atif_u"):
        sq.create_neuron("nope")


def test_monitor_counts_samples_without_spiking_neurons():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with SpikeMonitor(model) as mon:
        model(torch.rand(4, 3, 4))
        model(torch.rand(2, 3, 4))
    r = mon.report()
    assert r["samples"] == 6
    assert r["dense_macs"] == pytest.approx(12 * 5)
