"""TTFS layers: init, bias input, conv = dense on silently padded patches, pooling, QAT, loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from spikequant.errors import ConfigError, ShapeError
from spikequant.registry import create_model
from spikequant.temporal import (
    DEFAULT_Z_MAX,
    TTFSAvgPool2d,
    TTFSConv2d,
    TTFSEncoder,
    TTFSLinear,
    TTFSMaxPool2d,
    clip_row_normalised,
    quantize_symmetric,
    set_weight_bits,
    solve_spike_times,
    ttfs_data_loss,
    ttfs_loss,
    weight_sum_penalty,
)


def test_paper_initialisation_and_zero_bias():
    torch.manual_seed(0)
    layer = TTFSLinear(784, 800)
    bound = 8 / 785
    assert layer.weight.min() >= 0 and layer.weight.max() <= bound
    assert (
        layer.weight.max() > 0.95 * bound and abs(layer.weight.mean().item() - bound / 2) < 1e-3 * 8
    )
    assert torch.all(layer.bias == 0)
    conv = TTFSConv2d(32, 16, 5, 2)
    assert conv.weight.max() <= 8 / (32 * 25 + 1)


def test_bias_is_a_sync_input_at_t0():
    layer = TTFSLinear(2, 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.6, 0.8]]))
        layer.bias.fill_(0.5)
    z = torch.exp(torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    # same neuron as the worked example with the t = 0 input moved to the bias
    expected = solve_spike_times(
        torch.exp(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)),
        torch.tensor([[0.5, 0.6, 0.8]], dtype=torch.float64),
    )
    assert layer(z).item() == pytest.approx(expected.item())


def test_encoder_t_equals_alpha_one_minus_p():
    enc = TTFSEncoder(alpha=3.0).eval()
    p = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(torch.log(enc(p)), torch.tensor([3.0, 2.25, 0.0]))
    with pytest.raises(ConfigError):
        TTFSEncoder(alpha=0)


def test_conv_equals_dense_on_patches_with_silent_padding():
    torch.manual_seed(1)
    conv = TTFSConv2d(2, 3, 3, stride=2).double()
    with torch.no_grad():
        conv.weight.uniform_(-0.1, 0.5)
        conv.bias.uniform_(0, 0.3)
    z = torch.exp(3 * torch.rand(2, 2, 7, 7, dtype=torch.float64))
    out = conv(z)
    assert out.shape == (2, 3, 4, 4)  # SAME, stride 2: ceil(7/2)
    # pad 1 before / 1 after: (4-1)*2 + 3 - 7 = 2
    padded = F.pad(z, (1, 1, 1, 1), value=DEFAULT_Z_MAX)
    w = torch.cat([conv.weight.reshape(3, -1), conv.bias[:, None]], 1)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                patch = padded[b, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(1, -1)
                ref = solve_spike_times(
                    torch.cat([patch, torch.ones(1, 1, dtype=patch.dtype)], 1), w
                )
                assert torch.allclose(out[b, :, i, j], ref[0])


def test_padding_never_spikes_even_with_huge_weights():
    conv = TTFSConv2d(1, 1, 3, stride=1).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 10.0  # only ever sees the top-left neighbour
    z = torch.full((1, 1, 3, 3), 2.0, dtype=torch.float64)
    out = conv(z)
    assert (
        out[0, 0, 0, 0] == DEFAULT_Z_MAX and out[0, 0, 0, 1] == DEFAULT_Z_MAX
    )  # neighbour is padding
    assert out[0, 0, 1, 1].item() == pytest.approx(10 * 2 / 9)


def test_pooling_modes():
    z = torch.tensor([[[[1.0, 5.0], [3.0, DEFAULT_Z_MAX]]]])
    assert TTFSMaxPool2d(2)(z).item() == 1.0
    assert TTFSMaxPool2d(2, mode="latest")(z).item() == 5.0
    assert TTFSAvgPool2d(2)(z).item() == pytest.approx(3.0)
    silent = torch.full((1, 1, 2, 2), DEFAULT_Z_MAX)
    for pool in (TTFSMaxPool2d(2), TTFSMaxPool2d(2, mode="latest"), TTFSAvgPool2d(2)):
        assert pool(silent).item() == DEFAULT_Z_MAX
    with pytest.raises(ConfigError):
        TTFSMaxPool2d(2, mode="middle")


def test_scnn_shapes_and_weight_count():
    model = create_model("ttfs_scnn")
    assert model.n_weights() == (25 * 32 + 32) + (25 * 32 * 16 + 16) + (7 * 7 * 16 * 10 + 10)
    out = model(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)
    pooled = create_model("ttfs_scnn", conv=[[4, 3, 1]], pool="max")
    assert pooled(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ShapeError):
        model(torch.rand(2, 3, 5))


def test_quantizer_levels_and_ste():
    w = torch.tensor([-1.0, -0.3, 0.1, 0.26, 0.55])
    q4 = quantize_symmetric(w, 4)  # delta = 1/7
    assert torch.allclose(q4 * 7, torch.round(w * 7))
    q2 = quantize_symmetric(w, 2)  # delta = max|w|: {-1, 0, 1}
    assert set(q2.tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(quantize_symmetric(w, 32), w)
    layer = TTFSLinear(5, 2)
    set_weight_bits(layer, 4)
    wm = layer.weight_matrix()
    delta = wm.detach().abs().max() / 7
    assert torch.allclose(wm / delta, torch.round(wm / delta), atol=1e-5)
    wm.sum().backward()
    assert torch.all(layer.weight.grad == 1)  # straight-through
    assert int(layer.state_dict()["quant_bits"]) == 4
    with pytest.raises(ConfigError):
        set_weight_bits(layer, 1)


def test_loss_forms_and_penalties():
    z = torch.tensor([[2.0, 3.0, 10.0]])
    target = torch.tensor([0])
    assert ttfs_data_loss(z, target).item() == pytest.approx(F.cross_entropy(-z, target).item())
    paper = -math.log((1 / 2) / (1 / 3 + 1 / 10))
    assert ttfs_data_loss(z, target, "paper").item() == pytest.approx(paper, rel=1e-6)
    with pytest.raises(ConfigError):
        ttfs_data_loss(z, target, "other")
    layer = TTFSLinear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, 0.3], [1.0, 0.5]]))
    # neuron 0: max(0, 1 - 0.5) = 0.5; neuron 1: 0 -> mean 0.25
    assert weight_sum_penalty(layer, beta=1.0).item() == pytest.approx(0.25)
    full = ttfs_loss(layer, z[:, :2], target, K=100, beta=1.0, l2=1e-3)
    expected = F.cross_entropy(-z[:, :2], target) + 25 + 1e-3 * (0.04 + 0.09 + 1 + 0.25)
    assert full.item() == pytest.approx(expected.item(), rel=1e-6)


def test_row_normalised_clipping():
    layer = TTFSLinear(3, 4)
    layer.weight.grad = torch.full((4, 3), 100.0)
    layer.bias.grad = torch.full((4,), 100.0)
    norms = clip_row_normalised(layer, 10.0)
    assert norms[0] == pytest.approx(100 * math.sqrt(16) / 4)
    g = torch.cat([layer.weight.grad.flatten(), layer.bias.grad])
    assert g.norm().item() / 4 == pytest.approx(10.0, rel=1e-5)
    layer.weight.grad = torch.full((4, 3), 1.0)
    layer.bias.grad = torch.zeros(4)
    clip_row_normalised(layer, 10.0)
    assert torch.all(layer.weight.grad == 1.0)  # under the limit: untouched


def test_quantile_range_option_clips_codes_and_loads_old_state():
    w = torch.linspace(-1, 1, 101)
    q = quantize_symmetric(w, 2, range_quantile=0.5)  # r = median |w| = 0.5: levels {-.5, 0, .5}
    assert set(torch.round(q * 1000).tolist()) == {-500.0, 0.0, 500.0}
    assert (q != 0).float().mean() > 0.4  # with r = max|w| only |w| >= 0.5 would survive
    with pytest.raises(ConfigError):
        quantize_symmetric(w, 4, range_quantile=0.0)
    layer = TTFSLinear(4, 3)
    set_weight_bits(layer, 2, range_quantile=0.9)
    assert float(layer.quant_range_quantile) == pytest.approx(0.9)
    state = {k: v for k, v in layer.state_dict().items() if k != "quant_range_quantile"}
    fresh = TTFSLinear(4, 3)
    fresh.load_state_dict(state)  # a checkpoint from before the option: spec range (max|w|)
    assert float(fresh.quant_range_quantile) == 1.0 and fresh.weight_bits == 2
