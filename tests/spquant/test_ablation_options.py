"""The options the SpQuant ablation studies vary: the stacked term of SGS (Table 2) and the
learned threshold's gradient (separate path vs the spike surrogate, Table 4)."""

import pytest
import torch

from spikequant import ConfigError
from spikequant.quant.membrane import MembraneLevels
from spikequant.spquant.neuron import QLIF
from spikequant.surrogate import Atan, Rectangle, Triangle


def test_sigmoid_shape_is_the_spec_sgs():
    u = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, 2.0])
    grad = MembraneLevels(shape="sigmoid").surrogate_grad(u)
    spec = [0.786448, 0.709987, 0.709987, 0.483577, 0.483577, 0.245313, 0.103649]
    assert grad.tolist() == pytest.approx(spec, abs=1e-6)


@pytest.mark.parametrize("surrogate", [Triangle, Atan, Rectangle])
def test_other_shapes_stack_that_surrogate_at_the_level_midpoints(surrogate):
    levels = MembraneLevels(low=-2.0, high=2.0, step=0.5, smoothness=2.0, shape=surrogate.kind)
    u = torch.linspace(-3, 3, 61)
    term = surrogate(alpha=2.0)
    expected = sum(term.grad((u - s) / 0.5) for s in levels.midpoints().tolist())
    assert torch.allclose(levels.surrogate_grad(u), expected)


def test_the_shape_reaches_the_backward_of_the_quantizer():
    u = torch.tensor([0.5, 0.2, -0.9], requires_grad=True)
    MembraneLevels(shape="triangle", smoothness=2.0)(u).sum().backward()
    # triangle of half-width 1/2 and peak 2 around the midpoints -0.5, 0.5
    assert u.grad.tolist() == pytest.approx([2.0, 0.8, 0.4])


def test_an_unknown_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="shape must be one of"):
        MembraneLevels(shape="gauss")
    with pytest.raises(ConfigError, match="shape must be one of"):
        QLIF(membrane={"shape": "gauss"})


def test_qlif_takes_the_shape_in_its_membrane_dict():
    assert QLIF(membrane={"shape": "atan"}).levels == MembraneLevels(shape="atan")


def test_surrogate_threshold_grad_is_the_negated_triangle():
    neuron = QLIF(learn_threshold=True, threshold_grad="surrogate")
    u = torch.tensor([[0.6, 1.2, 1.5, 0.95]], requires_grad=True)
    neuron(u.unsqueeze(0)).sum().backward()
    tri = torch.clamp(1 - (u.detach() - 1.0).abs(), min=0)
    # no sigmoid window and no 1[u >= V_th]: the unfired 0.6 and 0.95 contribute too
    assert neuron.threshold.grad.item() == pytest.approx(-tri.sum().item(), abs=1e-6)
    assert torch.allclose(u.grad, tri)
    separate = QLIF(learn_threshold=True)
    separate(u.detach().unsqueeze(0)).sum().backward()
    assert separate.threshold.grad.item() != pytest.approx(neuron.threshold.grad.item())


def test_an_unknown_threshold_grad_is_a_config_error():
    with pytest.raises(ConfigError, match="threshold_grad must be one of"):
        QLIF(threshold_grad="shared")


def test_one_bit_membrane_is_not_read_as_true():
    # 1 == True in Python: the one-bit membrane {0, 1} must not become the ternary one
    assert QLIF(membrane=1).levels.values().tolist() == [0.0, 1.0]
    assert QLIF(membrane=1).membrane_bits == 1
    assert QLIF(membrane=True).levels.values().tolist() == [-1.0, 0.0, 1.0]
    assert QLIF(membrane=False).levels is None


@pytest.mark.parametrize("bits", [8, 9])
def test_wide_grids_sum_the_nearest_midpoints_to_float32_rounding(bits):
    from spikequant.quant import membrane

    levels = MembraneLevels.from_bits(bits)
    assert levels.num_levels - 1 > membrane.SGS_FULL_SUM_MAX  # the windowed path
    u = torch.linspace(-600, 5, 20001)
    shifts = levels.midpoints()
    z = 2.0 * (u.unsqueeze(-1) - shifts)
    full = (2.0 * torch.sigmoid(z) * (1 - torch.sigmoid(z))).sum(-1)
    assert torch.allclose(levels.surrogate_grad(u), full, rtol=1e-6, atol=1e-7)
    u = torch.tensor([-3.2, 0.4], requires_grad=True)
    levels(u).sum().backward()
    assert torch.allclose(u.grad, levels.surrogate_grad(u.detach()))
