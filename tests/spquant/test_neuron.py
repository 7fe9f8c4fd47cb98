"""Quantized-membrane LIF: the spec's [check] values, the integer reference, pruning options."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant import ConfigError, create_model, create_neuron, reset_state
from spikequant.quant.membrane import (
    MembraneLevels,
    quantize_membrane,
    round_half_toward_zero,
    sgs_grad,
)
from spikequant.spquant import QLIF, qlif_integer_reference, to_fixed_point
from spikequant.spquant.analysis import clipping_fire_rate, clipping_sweep
from spikequant.surrogate import Triangle

TRACE_INPUT = torch.tensor([0.6, 0.6, 0.6, 1.2, -0.4]).view(5, 1, 1)


def run_trace(**kwargs):
    neuron = QLIF(**kwargs)
    neuron.record_trace = True
    spikes = neuron(TRACE_INPUT)
    return spikes.flatten().tolist(), neuron.trace["stored"].flatten()


def test_fp32_membrane_trace():
    spikes, stored = run_trace(membrane="fp")
    assert spikes == [0, 0, 1, 1, 0]
    assert torch.allclose(stored, torch.tensor([0.6, 0.9, 0.0, 0.0, -0.4]))


def test_ternary_membrane_trace():
    spikes, stored = run_trace()
    assert spikes == [0, 1, 0, 1, 0]
    assert stored.tolist() == [1, 0, 1, 0, 0]


def test_registered_qlif_is_the_ternary_neuron():
    neuron = create_neuron("qlif")
    assert neuron.levels.values().tolist() == [-1, 0, 1]
    assert neuron.membrane_bits == 2
    assert neuron.decay == 0.5
    assert "decay=0.5" in repr(neuron)


def test_decay_is_the_multiplicative_leak():
    # u = decay * u~ + I with a float membrane: 0.6, then 0.25 * 0.6 + 0.6 = 0.75, then 0.7875.
    neuron = QLIF(membrane="fp", decay=0.25)
    neuron.record_trace = True
    neuron(torch.full((3, 1, 1), 0.6))
    assert torch.allclose(neuron.trace["pre"].flatten(), torch.tensor([0.6, 0.75, 0.7875]))


@pytest.mark.parametrize("make", [lambda: QLIF(tau=0.5), lambda: create_neuron("qlif", tau=0.5)])
def test_tau_keyword_is_refused_with_the_new_name(make):
    with pytest.raises(ConfigError, match=r"now called 'decay' \(tau is a time constant"):
        make()


def test_old_run_with_qlif_tau_still_loads(tmp_path):
    from spikequant.checkpoint import save_checkpoint
    from spikequant.pipeline import load_run_model
    from spikequant.runfolder import read_run_file, write_run_file

    kwargs = {"input_size": 8, "timesteps": 2, "neuron": "qlif"}
    torch.manual_seed(0)
    model = create_model("cnn_digits", **kwargs, neuron_kwargs={"decay": 0.25})
    old_spec = {"name": "cnn_digits", "kwargs": {**kwargs, "neuron_kwargs": {"tau": 0.25}}}
    old_recipe = {"model": {"name": "cnn_digits", "neuron": "qlif", "neuron_kwargs": {"tau": 0.25}}}
    meta = {"method": "direct", "model": old_spec, "recipe": old_recipe}
    save_checkpoint(tmp_path / "ckpt", model.state_dict(), meta)
    loaded, meta = load_run_model(tmp_path / "ckpt")
    assert meta["model"]["kwargs"]["neuron_kwargs"] == {"decay": 0.25}
    assert meta["recipe"]["model"]["neuron_kwargs"] == {"decay": 0.25}
    assert {m.decay for m in loaded.modules() if isinstance(m, QLIF)} == {0.25}
    x = torch.rand(3, 1, 8, 8)
    model.eval(), loaded.eval()
    assert torch.equal(model(x), loaded(x))
    write_run_file(tmp_path, {"method": "direct", "recipe": old_recipe})
    assert read_run_file(tmp_path)["recipe"]["model"]["neuron_kwargs"] == {"decay": 0.25}


@pytest.mark.parametrize(
    "u, g", [(0.0, 0.786448), (0.5, 0.709987), (1.0, 0.483577), (1.5, 0.245313), (2.0, 0.103649)]
)
def test_sgs_values(u, g):
    for sign in (1, -1):
        x = torch.tensor(sign * u, requires_grad=True)
        quantize_membrane(x).backward()
        assert x.grad.item() == pytest.approx(g, abs=1e-6)
        assert sgs_grad(torch.tensor(sign * u)).item() == pytest.approx(g, abs=1e-6)


def test_triangle_surrogate_values():
    q = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.2, 3.0])
    assert Triangle(alpha=1.0).grad(q).tolist() == [1.0, 0.5, 0.5, 0.0, 0.0, 0.0]


def test_membrane_gradient_through_neuron_uses_triangle():
    x = torch.tensor([[[0.5]]], requires_grad=True)  # u = 0.5 -> tri(u - 1) = 0.5
    QLIF()(x).sum().backward()
    assert x.grad.item() == pytest.approx(0.5)


def test_quantizer_levels_and_ties_toward_zero():
    u = torch.tensor([-3.0, -1.5, -0.5, -0.4, 0.0, 0.5, 0.51, 1.49, 7.0])
    assert quantize_membrane(u).tolist() == [-1, -1, 0, 0, 0, 0, 1, 1, 1]
    assert round_half_toward_zero(torch.tensor([2.5, -2.5, 1.5])).tolist() == [2, -2, 1]
    four = MembraneLevels.from_bits(2)
    assert four.values().tolist() == [-2, -1, 0, 1] and four.bits == 2


def test_quantizer_rejects_bad_grids():
    with pytest.raises(ConfigError):
        MembraneLevels(low=0.5, high=1.0)
    with pytest.raises(ConfigError):
        MembraneLevels(low=-1.0, high=0.75, step=0.5)
    with pytest.raises(ConfigError):
        QLIF(spatial_prune=1.5)


def test_r_s_example():
    u1 = torch.tensor([-3.0, -2.0, 0.5, -1.5])
    o2 = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert clipping_fire_rate(u1, o2, -1.0) == pytest.approx(1 / 3)


def test_clipping_sweep_reports_every_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(QLIF(membrane="fp"), QLIF(membrane="fp"))
    report = clipping_sweep(model, torch.randn(6, 3, 50) * 2, clips=(-3, -1))
    assert set(report) == {"0", "1"}
    for layer in report.values():
        assert set(layer["clips"]) == {-3.0, -1.0}
        assert 0 <= layer["clips"][-1.0]["r_s"] <= 1


@settings(max_examples=60, deadline=None)
@given(
    frac_bits=st.integers(0, 6),
    codes=st.lists(st.integers(-200, 200), min_size=24, max_size=24),
    binary=st.booleans(),
    wide=st.booleans(),
)
def test_float_path_matches_integer_reference_bit_for_bit(frac_bits, codes, binary, wide):
    levels = MembraneLevels(low=-3.0, high=1.0) if wide else MembraneLevels()
    currents = torch.tensor(codes, dtype=torch.int64).view(6, 2, 2)
    spikes_int, index_int = qlif_integer_reference(
        currents, frac_bits=frac_bits, levels=levels, binary_membrane=binary
    )
    neuron = QLIF(membrane=levels, binary_membrane=binary)
    neuron.record_trace = True
    spikes = neuron(currents.to(torch.float32) / 2**frac_bits)
    assert torch.equal(spikes, spikes_int.to(torch.float32))
    assert torch.equal(neuron.trace["stored"], index_int.to(torch.float32))


def test_fixed_point_round_trip():
    x = torch.tensor([0.6, -0.4, 1.2])
    codes = to_fixed_point(x, 4)
    assert codes.tolist() == [10, -6, 19]


def test_binary_membrane_prunes_negative_level():
    neuron = QLIF(binary_membrane=True)
    neuron.record_trace = True
    neuron(torch.tensor([-0.8, 0.7, -2.0]).view(3, 1, 1))
    assert neuron.trace["stored"].flatten().tolist() == [0, 1, 0]
    assert neuron.membrane_bits == 1


def test_separate_threshold_gradient_path():
    neuron = QLIF(learn_threshold=True)
    u = torch.tensor([[0.6, 1.2, 1.5, 0.95]], requires_grad=True)
    neuron(u.unsqueeze(0)).sum().backward()
    q = u.detach() - 1.0
    tri = torch.clamp(1 - q.abs(), min=0)
    expected = -(tri * torch.sigmoid(q) * (q >= 0)).sum()
    assert neuron.threshold.grad.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(u.grad, tri)  # the membrane keeps the plain triangle


def test_learned_threshold_is_clamped():
    neuron = QLIF(learn_threshold=True)
    with torch.no_grad():
        neuron.threshold.fill_(-2.0)
    out = neuron(torch.full((1, 1, 1), 0.1))
    assert out.item() == 1.0  # 0.1 >= clamp(-2, 0.1)


def test_spatial_pruning_drops_35_percent_of_locations():
    torch.manual_seed(0)
    neuron = QLIF(spatial_prune=0.35)
    neuron.record_trace = True
    x = torch.randn(3, 2, 4, 10, 10) + 0.5
    neuron(x)
    pre = neuron.trace["pre"]
    unfed = (pre == 0).all(2)  # masked locations keep only the leak of a zero start at t = 1
    assert unfed[0].float().mean().item() == pytest.approx(0.35)
    assert neuron.sparsity()["spatial"] == pytest.approx(0.35)
    reset_state(neuron)
