"""Mixed precision: under bf16 autocast the digits CNN's spikes agree with float32 (neurons
integrate in float32; only the convolutions and linear layers run in bf16), and a bf16 training
run through the pipeline trains."""

import pytest
import torch

from spikequant.config import load_recipe, run_recipe
from spikequant.data import load_arrays
from spikequant.neurons import SpikingNeuron, reset_state
from spikequant.pipeline import load_run_model

AGREEMENT = 0.98  # measured 0.9997, 0.9976, 0.9939 for the three spiking layers (64 digits)


def _spikes(model, x, autocast: bool):
    outputs = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: outputs.append(out.detach().float()))
        for m in model.modules()
        if isinstance(m, SpikingNeuron)
    ]
    reset_state(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(x)
    for h in hooks:
        h.remove()
    return outputs


SETS = [
    "train.epochs=1",
    "data.train_subset=1024",
    "data.test_subset=256",
    "model.kwargs.widths=[8,16]",
    "model.kwargs.hidden=32",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    out = {}
    for precision in ("32", "bf16"):
        cfg = load_recipe("mnist-quick", [*SETS, f"train.precision={precision}"])
        out[precision] = (
            root / precision,
            run_recipe(cfg, out_dir=root / precision, progress=False),
        )
    return out


def test_bf16_spikes_agree_with_float32_on_the_digits_cnn(runs):
    model, _ = load_run_model(runs["32"][0])
    model.eval()
    x, _ = load_arrays("mnist5k", "test")
    x = x[:64]
    full, half = _spikes(model, x, False), _spikes(model, x, True)
    assert len(full) == len(half) >= 2
    for a, b in zip(full, half, strict=True):
        assert a.dtype == b.dtype == torch.float32  # membranes stayed float32
        assert a.sum() > 0  # the layer spikes at all
        assert (a == b).float().mean() >= AGREEMENT


def test_a_bf16_run_trains_like_float32(runs):
    fp32, bf16 = runs["32"][1], runs["bf16"][1]
    assert bf16["precision"] == "bf16" and fp32["precision"] == "32"
    assert fp32["test_accuracy"] > 0.3, fp32["test_accuracy"]  # 16 steps: well above chance
    assert abs(bf16["test_accuracy"] - fp32["test_accuracy"]) < 0.1, bf16["test_accuracy"]
