"""Weight quantizers: grids, straight-through gradients, idempotence, application to models."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikequant import ConfigError
from spikequant.cost import weight_bits_of as weight_bits
from spikequant.quant.pow2 import PowerOfTwoQuantizer, pow2_grid, pow2_quantize
from spikequant.quant.uniform import UniformQuantizer
from spikequant.spquant.weights import bake_weights, quantize_weights

weights = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=1, max_size=64)


def test_pow2_grids():
    assert pow2_grid(2).tolist() == [0.0, 1.0]
    assert pow2_grid(3).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert pow2_grid(4).tolist() == [0.0] + [2.0**-i for i in range(6, -1, -1)]
    with pytest.raises(ConfigError):
        pow2_grid(5)
    with pytest.raises(ConfigError):
        PowerOfTwoQuantizer(2, alpha=3.0)


def test_pow2_ternary_values_and_ties():
    q = PowerOfTwoQuantizer(2, alpha=4.0)
    w = torch.tensor([-9.0, -2.0, -1.9, 0.0, 2.0, 2.1, 5.0])
    assert q(w).tolist() == [-4, 0, 0, 0, 0, 4, 4]  # |w|/4 = 0.5 is a tie -> 0


@settings(max_examples=50, deadline=None)
@given(values=weights, bits=st.integers(2, 4), exponent=st.integers(-3, 3))
def test_pow2_idempotent_and_on_grid(values, bits, exponent):
    q = PowerOfTwoQuantizer(bits, alpha=2.0**exponent)
    w = torch.tensor(values)
    once = q(w)
    assert torch.equal(q(once), once)
    levels = set((pow2_grid(bits) * 2.0**exponent).tolist())
    assert set(once.abs().tolist()) <= levels


@settings(max_examples=50, deadline=None)
@given(values=weights, bits=st.sampled_from([4, 8]))
def test_uniform_idempotent_and_integer(values, bits):
    w = torch.tensor(values)
    q = UniformQuantizer(bits, w)
    once = q(w)
    assert torch.equal(q(once), once)
    codes = once / q.step
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4


def test_straight_through_gradients():
    w = torch.tensor([0.3, -1.0, 9.0], requires_grad=True)
    pow2_quantize(w, 4.0, 2).sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 0.0]  # 9 is clipped
    q = PowerOfTwoQuantizer(2, alpha=4.0)
    q(torch.tensor([3.0, 1.0, 9.0])).sum().backward()
    # d/dalpha = (q - w/alpha) inside + sign(w) outside = (1 - .75) + (0 - .25) + 1,
    # times d alpha / d log2(alpha) = alpha ln 2
    assert q.log2_alpha.grad.item() == pytest.approx(1.0 * 4 * torch.log(torch.tensor(2.0)).item())


def test_quantize_weights_on_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    names = quantize_weights(model, 2)
    assert names == ["0", "2"]
    assert weight_bits(model[0]) == 2
    w = model[0].weight
    alpha = model[0].parametrizations.weight[1].alpha
    assert set((w / alpha).unique().tolist()) <= {-1.0, 0.0, 1.0}
    out = model(torch.rand(2, 1, 8, 8))
    out.sum().backward()
    assert model[0].parametrizations.weight.original.grad is not None
    state = model.state_dict()
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    quantize_weights(fresh, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(torch.ones(1, 1, 8, 8)), model(torch.ones(1, 1, 8, 8)))
    baked = bake_weights(fresh)
    assert torch.equal(baked[0].weight, w.detach())


def test_quantize_weights_8bit_and_errors():
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 2))
    assert quantize_weights(model, 8, exclude=["1"]) == ["0"]
    assert weight_bits(model[0]) == 8 and weight_bits(model[1]) == 32
    with pytest.raises(ConfigError):
        quantize_weights(model, 8)  # already quantized
    with pytest.raises(ConfigError):
        quantize_weights(nn.Linear(2, 2), 1)
    with pytest.raises(ConfigError):
        quantize_weights(nn.Linear(2, 2), 4, exclude=["nope"])


def test_default_pow2_setup_keeps_weights_of_uniform_init():
    # alpha = 4 on weights standardised to std 4: ternary threshold at half a std
    conv = nn.Conv2d(16, 32, 3)
    quantize_weights(conv, 2)
    nonzero = (conv.weight != 0).float().mean().item()
    assert 0.6 < nonzero < 0.8


def test_rescaled_pow2_keeps_the_layer_scale():
    torch.manual_seed(0)
    layer = nn.Linear(128, 10)
    std = layer.weight.detach().std()
    quantize_weights(layer, 2, rescale=True)
    w = layer.weight.detach()
    levels = (w / (std / 4 * 4)).unique()  # ternary levels of alpha = 4 mapped back by std / 4
    assert torch.allclose(levels, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-3)
    layer(torch.ones(2, 128)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
