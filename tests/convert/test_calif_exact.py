"""Ca-LIF == quantized ANN, integer for integer, at T = 2^bits (power-of-two scales).

The reference is computed here with exact rational arithmetic (``fractions.Fraction``), so these
tests do not depend on how either side rounds in floating point.
"""

from fractions import Fraction
from math import floor

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikequant.convert import convert
from spikequant.convert.network import calif_agreement
from spikequant.errors import ConversionError
from spikequant.quant.qat import (
    QuantInput,
    QuantLinear,
    QuantReLU,
    fake_quant_weight,
    quantize_weight,
    weight_scale,
)


def _layer(n_in: int, n_out: int, bits: int, w_int: torch.Tensor, exponent: int, bias):
    layer = QuantLinear(n_in, n_out, bits=bits)
    with torch.no_grad():
        layer.weight.copy_(w_int * 2.0**exponent)
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


def test_saturated_pixel_half_way_rounds_up_like_the_ann():
    # 255 input spikes worth 1/255 each sum to just under 1 in floating point; the quantized ANN
    # computes 0.75 * 1 / 0.5 = 1.5 exactly and rounds it up to 2
    model = nn.Sequential(
        QuantInput(), _layer(1, 1, 8, torch.tensor([[3.0]]), -2, [0.0]), QuantReLU(8, init_step=0.5)
    ).eval()
    assert model[1].weight.item() == 0.75
    with torch.no_grad():
        ann_code = model(torch.ones(1, 1)).item() / 0.5
    assert ann_code == 2
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, torch.ones(1, 1), 256)
    assert agreement["input_spike_budget"] == 255
    assert snn.codes()["2"][0].item() == 2
    assert agreement["layers"]["2"]["mismatch_vs_decoded_input"] == 0
    assert agreement["layers"]["2"]["mismatch_vs_original_input"] == 0
    assert agreement["logits"].item() == 1.0  # 2 codes of 0.5


def test_half_way_values_from_unsaturated_pixels_are_exact_on_both_sides():
    # pixels p and 255 - p into equal weights 0.75: z = 0.75 exactly, z / 0.5 = 1.5 -> 2; summing
    # 0.75 (p / 255) in floating point misses 0.75 for some p, so both the SNN and the reference
    # (calif_agreement) must sum integer spike counts and divide by 255 once
    model = nn.Sequential(
        QuantInput(),
        _layer(2, 1, 8, torch.tensor([[3.0, 3.0]]), -2, [0.0]),
        QuantReLU(8, init_step=0.5),
    ).eval()
    pix = torch.arange(1, 255)
    x = torch.stack([pix, 255 - pix], 1).float() / 255
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, x, 256)
    assert snn.codes()["2"][0].flatten().tolist() == [2.0] * 254
    assert agreement["layers"]["2"]["mismatch_vs_decoded_input"] == 0
    assert agreement["layers"]["2"]["mismatch_vs_original_input"] == 0


def test_reference_uses_the_integer_weights_of_the_float32_model():
    # a row of a trained layer: w / Sw is 78.5 in float32 (wQ = 78) but 78.5000042 in float64
    # (wQ = 79); the SNN takes the float32 model's weights, so must the reference
    amax, w = float.fromhex("0x1.1dc6bap-3"), float.fromhex("0x1.614852p-4")
    layer = QuantLinear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[amax, w]]))
    wq32 = quantize_weight(layer.weight, 8)[0]
    wq64 = quantize_weight(layer.weight.double(), 8)[0]
    assert wq32.tolist() == [[127, 78]] and wq64.tolist() == [[127, 79]]
    step = float(weight_scale(layer.weight, 8))  # Sy = Sw: the code is wQ of the lit input
    model = nn.Sequential(QuantInput(), layer, QuantReLU(8, init_step=step)).eval()
    x = torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        assert round(model(x).item() / step) == 78  # the float32 ANN
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, x, 256)
    assert snn.codes()["2"][0].item() == 78
    assert agreement["layers"]["2"]["mismatch_vs_decoded_input"] == 0
    assert agreement["layers"]["2"]["mismatch_vs_original_input"] == 0


def _exact_codes(layers, pixels, budget):
    """Codes of every QuantReLU and the logits, in exact rationals.

    ``layers``: ``(w_int, weight exponent, bias, step exponent or None, qmax)`` per weight layer;
    ``yQ = clamp(floor(z / Sy + 1/2), 0, qmax)``, ``z = sum_i Sw wQ_i x_i + b``,
    input ``x = floor(K pix / 255) / K``."""
    x = [Fraction(budget * p // 255, budget) for p in pixels]
    codes = []
    for w_int, w_exp, bias, step_exp, qmax in layers:
        sw = Fraction(2) ** w_exp
        z = [
            sw * sum(int(w) * xi for w, xi in zip(row, x, strict=True)) + Fraction(float(b))
            for row, b in zip(w_int.tolist(), bias, strict=True)
        ]
        if step_exp is None:
            return codes, z
        sy = Fraction(2) ** step_exp
        q = [min(max(floor(zi / sy + Fraction(1, 2)), 0), qmax) for zi in z]
        codes.append(q)
        x = [qi * sy for qi in q]
    raise AssertionError("the last layer has no ReLU")


@settings(max_examples=50, deadline=None)
@given(
    bits=st.integers(2, 8),
    seed=st.integers(0, 2**31 - 1),
    ratios=st.lists(st.integers(-2, 1), min_size=3, max_size=3),
    with_bias=st.booleans(),
)
def test_every_integer_activation_agrees_at_T_2_pow_bits(bits, seed, ratios, with_bias):
    g = torch.Generator().manual_seed(seed)
    qw = 2 ** (bits - 1) - 1
    qmax = 2 ** (bits - 1) - 1
    sizes = [6, 5, 4, 3]
    steps = [-2, -3]  # Sy = 2^-2, 2^-3
    in_scale = [0, *steps]  # exponent of the worth of a spike into each layer (layer 1: 1/K)
    layers, modules = [], [QuantInput()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w_int = torch.randint(-qw, qw + 1, (n_out, n_in), generator=g).float()
        w_int[torch.arange(n_out), torch.randint(0, n_in, (n_out,), generator=g)] = qw
        # Sw Sx / Sy = 2^ratio: half-way values of z / Sy are frequent for ratio < 0
        step_exp = steps[i] if i < 2 else None
        w_exp = ratios[i] + (step_exp if step_exp is not None else -4) - in_scale[i]
        bias = torch.zeros(n_out)
        if with_bias:  # multiples of Sy / 2 (or of 2^-5 for the output layer)
            bias = torch.randint(-4, 5, (n_out,), generator=g) * 2.0 ** ((step_exp or -4) - 1)
        layers.append((w_int, w_exp, bias.tolist(), step_exp, qmax))
        modules.append(_layer(n_in, n_out, bits, w_int, w_exp, bias))
        if step_exp is not None:
            modules.append(QuantReLU(bits, init_step=2.0**step_exp))
    model = nn.Sequential(*modules).eval()
    # saturated and dark pixels are frequent, as in digits
    choice = torch.randint(0, 3, (8, sizes[0]), generator=g)
    pix = torch.where(
        choice == 0,
        0,
        torch.where(choice == 1, 255, torch.randint(0, 256, (8, sizes[0]), generator=g)),
    )
    timesteps = 2**bits
    budget = min(timesteps, 255)
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, pix.float() / 255, timesteps)
    held = snn.codes()
    for b, pixels in enumerate(pix.tolist()):
        codes, logits = _exact_codes(layers, pixels, budget)
        for name, expected in zip(("2", "4"), codes, strict=True):
            assert held[name][0][b].tolist() == expected, (name, b)
        assert agreement["logits"][b].tolist() == [float(z) for z in logits]
    for layer in agreement["layers"].values():
        assert layer["mismatch_vs_decoded_input"] == 0


def test_input_added_to_hidden_spikes_is_refused():
    class InputSkip(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = QuantInput()
            self.fc1 = QuantLinear(4, 4)
            self.act = QuantReLU(8, init_step=0.25)
            self.fc2 = QuantLinear(4, 2)

        def forward(self, x):
            x = self.quant(x)
            return self.fc2(self.act(self.fc1(x)) + x)

    with pytest.raises(ConversionError, match="skip connection from the input"):
        convert(InputSkip().eval(), "calif")


def _exact_forward(model: nn.Sequential, pixels: list[int], budget: int):
    """Codes of every QuantReLU and the logits of a QAT MLP in exact rationals, from the model's
    own float32 fake-quantized weights, biases and steps (input ``floor(K pix / 255) / K``)."""
    x = [Fraction(budget * p // 255, budget) for p in pixels]
    codes, z = [], None
    for m in model:
        if isinstance(m, QuantLinear):
            w = fake_quant_weight(m.weight, m.bits).tolist()
            z = [
                sum(Fraction(wi) * xi for wi, xi in zip(row, x, strict=True)) + Fraction(b)
                for row, b in zip(w, m.bias.tolist(), strict=True)
            ]
        elif isinstance(m, QuantReLU):
            sy = Fraction(float(m.step_size))
            q = [min(max(floor(zi / sy + Fraction(1, 2)), 0), m.qmax) for zi in z]
            codes.append(q)
            x = [qi * sy for qi in q]
    return codes, z


def _trained_like_mlp(seed: int, power_of_two: bool) -> nn.Sequential:
    """Arbitrary float32 weights and biases (no power-of-two scales), learned steps 0.3 and 0.7."""
    g = torch.Generator().manual_seed(seed)
    modules: list[nn.Module] = [QuantInput()]
    for i, (n_in, n_out) in enumerate(((12, 10), (10, 8), (8, 4))):
        layer = QuantLinear(n_in, n_out)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.6)
            layer.bias.copy_(torch.randn(n_out, generator=g) * 0.3)
        modules.append(layer)
        if i < 2:
            modules.append(QuantReLU(8, init_step=(0.3, 0.7)[i], power_of_two=power_of_two))
    return nn.Sequential(*modules).eval()


def test_power_of_two_steps_make_hidden_layers_exact_by_construction():
    reads: dict[bool, list[bool]] = {True: [], False: []}
    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        pix = torch.randint(0, 256, (16, 12), generator=g)
        for power_of_two in (True, False):
            model = _trained_like_mlp(seed, power_of_two)
            snn = convert(model, "calif")
            agreement = calif_agreement(model, snn, pix.float() / 255, 256)
            held = snn.codes()
            exact_logits = []
            for b, pixels in enumerate(pix.tolist()):
                codes, logits = _exact_forward(model, pixels, 255)
                for name, expected in zip(("2", "4"), codes, strict=True):
                    assert held[name][0][b].tolist() == expected, (seed, name, b)
                exact_logits.append(logits)
            assert all(l["mismatch_vs_decoded_input"] == 0 for l in agreement["layers"].values())
            reads[power_of_two] += [
                Fraction(v) == e
                for row, exact in zip(agreement["logits"].tolist(), exact_logits, strict=True)
                for v, e in zip(row, exact, strict=True)
            ]
    # with Sy = 2^k every sum of the SNN is exact: its read-out c Vth + V is the exact rational
    assert all(reads[True])
    # with arbitrary steps the float64 sums round (codes still agree: no z / Sy that close to 1/2)
    assert not all(reads[False])


def test_power_of_two_step_value_and_gradient():
    act = QuantReLU(4, init_step=0.3, power_of_two=True)
    assert act.step_size.item() == 0.25 and "power_of_two=True" in repr(act)
    x = torch.tensor([0.1, 0.13, 0.6, 5.0])
    y = act(x)
    assert y.tolist() == [0.0, 0.25, 0.5, 1.75]
    y.sum().backward()
    assert act.raw_step.grad is not None and act.raw_step.grad.item() != 0
