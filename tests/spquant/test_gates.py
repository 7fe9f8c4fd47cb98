"""Channel gates start open and learn through the straight-through mask."""

import pytest
import torch

from spikequant import ConfigError, create_model
from spikequant.neurons import reset_state
from spikequant.spquant.pruning import (
    ChannelGate,
    attach_channel_gates,
    gate_density_penalty,
    qlif_layers,
)


def _gated_model():
    torch.manual_seed(0)
    model = create_model("cnn_digits", neuron="qlif", timesteps=2, widths=[4, 8], hidden=16)
    x = torch.rand(3, 1, 28, 28)
    attach_channel_gates(model, x)
    return model, x


def test_gates_start_with_every_channel_open():
    model, x = _gated_model()
    reset_state(model)
    model(x)
    gates = [layer.channel_gate for _, layer in qlif_layers(model) if layer.channel_gate]
    assert len(gates) == 1  # two spiking conv layers: the second is gated by the first
    assert torch.equal(gates[0].last_mask.detach(), torch.ones(3, 8))


def test_open_gate_gets_a_gradient_through_the_straight_through_mask():
    model, x = _gated_model()
    reset_state(model)
    model(x).mean(0).sum().backward()
    gate = model.net[4].channel_gate
    assert gate.proj.bias.grad is not None
    assert gate.proj.bias.grad.abs().sum() > 0


def test_unit_variance_init_closes_channels_at_random():
    torch.manual_seed(0)
    gate = ChannelGate(16, 32, init_std=1.0)
    mask = gate(torch.randn(64, 16))
    assert 0 < mask.mean() < 1


def test_negative_init_std_is_a_config_error():
    with pytest.raises(ConfigError, match="init_std"):
        ChannelGate(4, 8, init_std=-1.0)


def test_target_penalty_reopens_gates_closed_beyond_the_keep_ratio():
    # All gates closed (bias far below the 0.47 threshold): the one-sided cap sees nothing to
    # penalise, the two-sided target pushes every gate's bias up (toward reopening).
    model, x = _gated_model()
    gate = model.net[4].channel_gate
    with torch.no_grad():
        gate.proj.bias.fill_(-3.0)
    for mode, expect_push in (("cap", False), ("target", True)):
        model.zero_grad()
        reset_state(model)
        model(x)
        assert gate.last_mask.sum() == 0
        penalty = gate_density_penalty(model, keep=0.7, mode=mode)
        assert float(penalty) == pytest.approx(0.0 if mode == "cap" else 0.49)
        if expect_push:
            penalty.backward()
            assert (gate.proj.bias.grad < 0).all()  # gradient descent raises every bias


def test_unknown_gate_penalty_mode_is_a_config_error():
    model, _ = _gated_model()
    with pytest.raises(ConfigError, match="gate penalty mode"):
        gate_density_penalty(model, keep=0.5, mode="both")
