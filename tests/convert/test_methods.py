"""Conversion methods as registered objects: options dataclasses, stages, CLI flags from fields."""

import argparse
import dataclasses

import pytest
import torch

import spikequant as sq
from spikequant.cli.commands.convert import add_method_options, method_options
from spikequant.convert import (
    CONVERSION_METHODS,
    ConversionMethod,
    MSATOptions,
    RateOptions,
    convert,
    create_method,
    list_methods,
    register_method,
)
from spikequant.convert.network import replace_rate
from spikequant.errors import ConfigError


def test_the_three_methods_are_registered_with_options():
    assert list_methods() == ["calif", "msat", "rate"]
    assert create_method("msat", per_channel=True).options == MSATOptions(per_channel=True)
    assert create_method("rate", {"percentile": 99.0}).options.percentile == 99.0
    with pytest.raises(ConfigError, match="known: calibration_method"):
        create_method("rate", confidence=False)  # an MSAT option
    with pytest.raises(ConfigError, match="calibration_method must be one of max, percentile"):
        RateOptions(calibration_method="mean")
    with pytest.raises(ConfigError, match="unknown conversion method 'ttfs'"):
        create_method("ttfs")
    assert sq.list_neurons("conversion") == ["ca_lif", "msat"]


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("rate", {"percentile": "high"}, "percentile must be int or float, got 'high'"),
        ("rate", {"percentile": 0}, "percentile must be > 0, got 0"),
        ("rate", {"percentile": 100.5}, "percentile must be <= 100, got 100.5"),
        ("rate", {"initial_membrane": 1.0}, "initial_membrane must be < 1, got 1.0"),
        ("rate", {"batch_size": True}, "batch_size must be int, got True"),
        ("msat", {"confidence_steps": -1}, "confidence_steps must be >= 0"),
        ("msat", {"preset": "vgg"}, "preset must be one of None, "),  # was a TypeError
        ("msat", {"architecture": 3}, "architecture must be str, got 3"),
        ("calif", {"tie": "even"}, "tie must be one of up, down, got 'even'"),
    ],
)
def test_conversion_options_are_checked_when_made(method, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        create_method(method, options)


def test_stages_run_in_order_and_a_new_method_gets_cli_flags():
    @dataclasses.dataclass(frozen=True)
    class HalfOptions(RateOptions):
        factor: float = dataclasses.field(default=0.5, metadata={"help": "threshold factor"})

    class Half(ConversionMethod):
        """rate with every threshold scaled by ``factor``."""

        name = "test_half"
        Options = HalfOptions

        def calibrate(self, graph, data):
            return create_method("rate").calibrate(graph, data)

        def replace(self, graph, statistics):
            scales = {k: v * self.options.factor for k, v in statistics["scales"].items()}
            return replace_rate(graph, scales)

    register_method(Half)
    try:
        torch.manual_seed(0)
        model = sq.create_model("ann_mlp", hidden=(8,)).eval()
        x = torch.rand(16, 1, 28, 28)
        snn = convert(model, "test_half", x, factor=0.25)
        full = convert(model, "rate", x).info["scales"]
        (name,) = full
        assert snn.stages()[name].neuron.threshold.item() == pytest.approx(full[name] * 0.25)
        parser = argparse.ArgumentParser()
        add_method_options(parser)
        args = parser.parse_args(["--factor", "2", "--no-per-channel"])
        args.seed = 3  # the command's own --seed
        options = method_options(args, ["test_half", "msat"], "resnet20")
        assert options["test_half"] == {"factor": 2.0, "per_channel": False}
        assert options["msat"] == {"per_channel": False, "architecture": "resnet20", "seed": 3}
    finally:
        for table in (CONVERSION_METHODS._entries, CONVERSION_METHODS._families):
            del table["test_half"]
