"""Converter stages on small hand-built and registered ANNs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikequant.convert import convert
from spikequant.convert.graph import calibrate, prepare, validate
from spikequant.errors import ConfigError, ConversionError
from spikequant.registry import create_model


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_max_pooling_is_refused_with_the_alternative():
    model = create_model("ann_lenet", pool="max")
    with pytest.raises(ConversionError, match=r"average pooling \(nn.AvgPool2d\)"):
        convert(model, "rate", torch.rand(4, 1, 28, 28))

    class Functional(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 2)

    with pytest.raises(ConversionError, match="average pooling"):
        validate(Functional())


def test_unsupported_operations_are_named():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.Sigmoid()

        def forward(self, x):
            return self.act(x)

    with pytest.raises(ConversionError, match="Sigmoid"):
        validate(Sig())
    with pytest.raises(ConfigError, match="calibration data"):
        convert(create_model("ann_mlp"), "rate")
    with pytest.raises(ConfigError, match="unknown conversion method"):
        convert(create_model("ann_mlp"), "ttfs")


def test_bn_folding_preserves_the_function():
    torch.manual_seed(0)
    model = _randomise_bn(create_model("ann_cnn", width=4, residual=True))
    folded = prepare(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_functional_relu_becomes_a_neuron_population():
    gm = validate(nn.Sequential(nn.Flatten(), nn.Linear(4, 4)))
    assert sum(isinstance(m, nn.ReLU) for m in gm.modules()) == 0

    class F2(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(F.relu(self.fc(x)) + torch.relu(x))

    gm = validate(F2())
    assert sum(isinstance(m, nn.ReLU) for m in gm.modules()) == 2


def test_calibration_max_percentile_per_channel():
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))
    x = torch.linspace(0, 1, 1000).view(10, 1, 10, 10)
    gm = prepare(model)
    per_layer = calibrate(gm, [x])
    assert per_layer["1"].item() == pytest.approx(3.0)
    per_channel = calibrate(gm, [x], per_channel=True)
    torch.testing.assert_close(per_channel["1"], torch.tensor([1.0, 3.0]))
    pct = calibrate(gm, [x], method="percentile", percentile=50.0, per_channel=True)
    torch.testing.assert_close(pct["1"], torch.tensor([0.5, 1.5]), atol=2e-3, rtol=0)
    clipped = prepare(nn.Sequential(nn.Linear(3, 3), nn.ReLU6()))
    assert calibrate(clipped, [])["1"].item() == 6.0


@pytest.mark.parametrize("method", ["rate", "msat"])
def test_converted_residual_cnn_tracks_the_ann(method):
    torch.manual_seed(0)
    model = _randomise_bn(create_model("ann_cnn", width=4, residual=True))
    x = torch.rand(40, 1, 28, 28)
    snn = (
        convert(model, method, x[:32], confidence=False)
        if method == "msat"
        else convert(model, method, x[:32])
    )
    out = snn.simulate(x[32:], [4, 64])
    ann = model(x[32:])
    err = {t: (out[t]["logits"] - ann).abs().mean().item() for t in (4, 64)}
    assert err[64] < err[4]
    if method == "rate":
        assert err[64] < 0.03 * ann.abs().mean().item() + 1e-3


def test_msat_reports_sin_statistics_and_sets_confidence():
    torch.manual_seed(0)
    model = create_model("ann_mlp", hidden=[16, 16]).eval()
    x = torch.rand(64, 1, 28, 28)
    snn = convert(model, "msat", x)
    sin = snn.info["sin"]
    assert len(sin) == 2
    for stats in sin.values():
        assert 0 <= stats["sin_neurons"] <= stats["fired_neurons"]
        assert stats["confidence"] == pytest.approx(1 - stats["sin_ratio"])
    last = snn.info["confidence_layer"]
    assert snn.stages()[last].neuron.confidence == pytest.approx(sin[last]["confidence"])
