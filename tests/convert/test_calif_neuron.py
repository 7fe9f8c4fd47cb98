"""Checks of calif.md: single-neuron counterexample, exact rounding, ISI counts."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.convert.calif import CaLIF, CaPool, EventLIF, isi_encode, isi_spike_counts
from spikequant.errors import ConfigError


def _counterexample_current():
    w = torch.tensor([1.0, -1.5])
    spikes = torch.zeros(32, 2)
    spikes[:16, 0] = 1
    spikes[16:, 1] = 1
    return (spikes * w).sum(1).view(32, 1, 1)  # [T, B=1, neurons=1]


def test_counterexample_basic_lif_vs_calif():
    current = _counterexample_current()
    assert current.sum().item() == -8
    lif_out = EventLIF(1.0)(current)
    assert lif_out.sum().item() == 16
    ca = CaLIF(1.0)
    out = ca(current)
    assert (out == 1).sum().item() == 16
    assert (out == -1).sum().item() == 16
    assert ca.round_phase().sum().item() == 0
    assert ca.count.item() == 0  # ReLU(-8)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), T=st.integers(1, 40), qmax=st.sampled_from([None, 3, 7, 127]))
def test_calif_with_rounding_equals_clamped_round(seed, T, qmax):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = 12, 50
    w = torch.randn(n_in, n_out, generator=g, dtype=torch.float64) * 0.7
    signs = torch.randint(-1, 2, (T, n_in), generator=g).to(torch.float64)
    th = torch.rand(n_out, generator=g, dtype=torch.float64) * 1.5 + 0.2
    leak = torch.randn(n_out, generator=g, dtype=torch.float64) * 0.3
    current = (signs @ w).unsqueeze(1)  # [T, 1, n_out], random order of +/- input
    ca = CaLIF(th, leak, qmax=qmax)
    ca(current)
    ca.round_phase()
    z = current.sum(0).squeeze(0) - leak * T
    expected = torch.floor(z / th + 0.5).clamp(min=0)
    if qmax is not None:
        expected = expected.clamp(max=qmax)
    assert torch.equal(ca.count.squeeze(0), expected)


def test_rounding_phase_propagates_between_layers():
    # layer 2 must see layer 1's rounding spikes before rounding itself
    l1, l2 = CaLIF(1.0), CaLIF(1.0)
    x = torch.full((4, 1, 1), 0.4, dtype=torch.float64)  # z1 = 1.6 -> 2
    s1 = l1(x)
    l2(s1 * 0.8)  # during T: one spike of layer 1 -> 0.8
    r1 = l1.round_phase()
    assert l1.count.item() == 2 and r1.item() == 1
    l2.round_phase(r1 * 0.8)
    assert l2.count.item() == 2  # round(1.6)


def test_pool_neuron_rounds_mean():
    window_sum = torch.tensor([[0.0, 1, 2, 3, 5, 6, 7, 10]])
    seq = torch.zeros(12, 1, 8, dtype=torch.float64)
    for t in range(11):
        seq[t] = (window_sum > t).double()
    # a negative spike followed by a compensating positive one (bipolar input, no gate)
    seq[10, 0, 0] = -1
    seq[11, 0, 0] = 1
    pool = CaPool(2)
    pool(seq)
    pool.round_phase()
    assert pool.count.tolist() == [[0, 0, 1, 1, 1, 2, 2, 3]]  # half-up: 2/4 -> 1, 6/4 -> 2


def test_isi_counts_and_times():
    counts = isi_spike_counts(torch.tensor([255, 128, 1, 0]), 128)
    assert counts.tolist() == [128, 64, 0, 0]
    enc = isi_encode(torch.tensor([255, 128, 1, 0]), 128)
    assert enc.sum(0).tolist() == [128, 64, 0, 0]
    steps = torch.nonzero(isi_encode(torch.tensor(128), 16)).flatten() + 1
    assert steps.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert enc.max() <= 1


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 300), pix=st.integers(0, 255))
def test_isi_count_formula(T, pix):
    budget = min(T, 255)
    enc = isi_encode(torch.tensor([pix]), T, budget)
    assert enc.sum().item() == (budget * pix) // 255
    if T >= 255:
        assert enc.sum().item() == pix  # lossless budget
    assert set(enc.flatten().tolist()) <= {0.0, 1.0}


def test_isi_rejects_bad_input():
    import pytest

    with pytest.raises(ConfigError):
        isi_encode(torch.tensor([256]), 8)
    with pytest.raises(ConfigError):
        isi_encode(torch.tensor([3]), 8, max_spikes=9)
    with pytest.raises(ConfigError):
        CaLIF(-1.0)
