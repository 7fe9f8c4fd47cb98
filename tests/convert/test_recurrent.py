"""LSTM / bi-LSTM -> MSAT spiking network: the SNN's logits approach the LSTM's as T grows."""

import pytest
import torch

from spikequant.convert.msat import MSAT
from spikequant.convert.recurrent import (
    LSTMClassifier,
    SpikingLSTM,
    convert_lstm,
    lstm_layer_outputs,
)
from spikequant.errors import ConfigError


def _tiny(bidirectional=False, layers=1, seed=0):
    torch.manual_seed(seed)
    model = LSTMClassifier(3, hidden=4, num_classes=3, num_layers=layers,
                           bidirectional=bidirectional)  # fmt: skip
    return model, torch.rand(8, 3, 3)


@pytest.mark.parametrize(
    "neuron,bidirectional,layers", [("msat", False, 1), ("msat", True, 2), ("if", False, 1)]
)
def test_snn_logits_approach_lstm_logits(bidirectional, layers, neuron):
    model, x = _tiny(bidirectional, layers)
    with torch.no_grad():
        reference = model(x)
    snn = convert_lstm(model, x, neuron=neuron)
    errors = [float((snn(x, t) - reference).abs().max()) for t in (2, 16, 160)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.025, errors


def test_scales_are_the_largest_hidden_magnitude_per_layer_and_direction():
    model, x = _tiny(bidirectional=True, layers=2)
    snn = convert_lstm(model, x)
    outputs = lstm_layer_outputs(model, x)
    with torch.no_grad():
        full, _ = model.lstm(x)
    torch.testing.assert_close(outputs[-1], full)  # the per-layer replay matches nn.LSTM
    for layer, out in enumerate(outputs):
        for d in range(2):
            peak = out[..., 4 * d : 4 * (d + 1)].abs().max()
            assert float(snn.scales[layer, d]) == pytest.approx(float(peak))


def test_msat_neurons_are_the_library_msat():
    model, x = _tiny()
    snn = convert_lstm(model, x, neuron="msat", preset="resnet20")
    neuron = snn._make_neuron(snn.scales[0, 0])
    assert isinstance(neuron, MSAT) and neuron.preset == "resnet20"
    assert isinstance(snn, SpikingLSTM)


def test_embedding_inputs_and_bad_arguments():
    torch.manual_seed(0)
    model = LSTMClassifier(5, hidden=4, num_classes=2, vocab_size=11)
    tokens = torch.randint(0, 11, (6, 3))
    snn = convert_lstm(model, tokens)
    with torch.no_grad():
        gap = (snn(tokens, 160) - model(tokens)).abs().max()
    assert float(gap) < 0.025
    with pytest.raises(ConfigError):
        convert_lstm(model, tokens, neuron="lif")
    with pytest.raises(ConfigError):
        snn(tokens, 0)


def test_seqdigits_cli_answers_bad_input_with_exit_code_2(capsys):
    from spikequant.cli import main

    assert main(["seqdigits", "--models", "gru"]) == 2
    assert main(["seqdigits", "--timesteps", "4,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("spikequant seqdigits: error:") for line in err)
