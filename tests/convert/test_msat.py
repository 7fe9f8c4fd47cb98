"""MSAT checks from msat.md (closed forms and constant-input traces, derived independently)."""

import math

import pytest
import torch

from spikequant.convert.msat import MSAT, PRESETS, msat_hyperparameters, resting_threshold
from spikequant.errors import ConfigError
from spikequant.neurons import IF


def _run(neuron, a, steps=16):
    x = torch.full((1, 1), float(a))
    state = neuron.initial_state(x)
    thresholds, outputs = [], []
    for _ in range(steps):
        out, state = neuron.step(x, state)
        thresholds.append(state.thr.item())
        outputs.append(out.item())
    return thresholds, outputs


def test_closed_form_resting_thresholds():
    assert resting_threshold("vgg16") == pytest.approx(2 / 3, abs=1e-12)
    assert resting_threshold("resnet20") == pytest.approx(
        1 / (1 + math.exp(-math.log(2) / 2)), abs=1e-12
    )
    assert resting_threshold("resnet34") == pytest.approx(0.585786, abs=1e-6)
    # the neuron itself: membrane at its running mean and no input -> same threshold
    for preset, expected in (("vgg16", 2 / 3), ("resnet20", 0.585786)):
        n = MSAT(1.0, preset=preset)
        x = torch.zeros(1, 1)
        state = n.initial_state(x)
        for _ in range(3):
            _, state = n.step(x, state)
        assert state.thr.item() == pytest.approx(expected, abs=1e-6)


def test_constant_input_traces_vgg16():
    thr, out = _run(MSAT(1.0, preset="vgg16"), 0.3)
    assert thr[:6] == pytest.approx([1, 0.6536, 0.6720, 0.6363, 0.6675, 0.6301], abs=5e-5)
    spikes = [t + 1 for t, o in enumerate(out) if o > 0]
    assert spikes[0] == 3 and len(spikes) == 7
    assert sum(out) / 16 == pytest.approx(0.294, abs=5e-4)
    _, out = _run(MSAT(1.0, preset="vgg16"), 0.1)
    assert [t + 1 for t, o in enumerate(out) if o > 0][0] == 7
    _, out = _run(MSAT(1.0, preset="vgg16"), 1.0)
    assert sum(out) / 16 == pytest.approx(0.766, abs=5e-4)  # clip error: thr < 1
    _, out = _run(MSAT(1.0, preset="resnet20"), 0.3)
    assert [t + 1 for t, o in enumerate(out) if o > 0][0] == 2


def test_plain_if_reference_traces():
    # a = 0.1: msat.md says t = 11, which is float64 rounding (ten 0.1 sum to 0.9999999999999999);
    # exactly, and in float32, the membrane reaches 1 at t = 10
    ten = IF(1.0)(torch.full((16, 1), 0.1, dtype=torch.float64)).flatten()
    assert (torch.nonzero(ten).flatten() + 1).tolist() == [11]
    for a, first, count, decoded in ((0.3, 4, 4, 0.25), (0.1, 10, 1, None), (1.0, 1, 16, 1.0)):
        out = IF(1.0, scale_output=True)(torch.full((16, 1), a)).flatten()
        spikes = (torch.nonzero(out).flatten() + 1).tolist()
        assert spikes[0] == first and len(spikes) == count
        if decoded is not None:
            assert out.sum().item() / 16 == pytest.approx(decoded)


def test_real_units_scale_and_confidence():
    # lambda = 2: input 0.6 is the normalised 0.3 trace, outputs are twice as large
    _, out = _run(MSAT(2.0, preset="vgg16"), 0.6)
    assert sum(out) / 16 == pytest.approx(2 * 0.294, abs=1e-3)
    n = MSAT(1.0, confidence=0.0, confidence_steps=16)
    _, out = _run(n, 1.0, steps=20)
    assert sum(out[:16]) == 0 and sum(out[16:]) > 0  # all early spikes filtered


def test_hyperparameter_validation():
    assert msat_hyperparameters("resnet20")["alpha"] == PRESETS["resnet20"]["alpha"] == 0.3
    with pytest.raises(ConfigError):
        msat_hyperparameters("vgg99")
    with pytest.raises(ConfigError):
        msat_hyperparameters("vgg16", beta=1)
    with pytest.raises(ConfigError):
        MSAT(-1.0)
