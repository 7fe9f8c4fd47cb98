"""End-to-end: a tiny SpQuant-SNN trained on real digits, reloaded, costed from the checkpoint."""

import json

import pytest
import torch

from spikequant import ConfigError
from spikequant.cli import main
from spikequant.data import get_dataset
from spikequant.methods import get_method
from spikequant.pipeline import run as run_recipe
from spikequant.spquant.build import evaluate_spquant, load_spquant_model
from spikequant.spquant.loss import tet_loss

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "mnist5k", "batch_size": 32, "train_subset": 96, "test_subset": 48},
    "model": {
        "name": "cnn_digits",
        "timesteps": 2,
        "neuron": "qlif",
        "kwargs": {"widths": [4, 8], "hidden": 16},
    },
    "optim": {"name": "adam", "lr": 0.001},
    "train": {"epochs": 1, "eval_every": 0},
    "method": {
        "name": "spquant",
        "weight_bits": 2,
        "spatial_prune": 0.35,
        "channel_gates": True,
        "learn_threshold": True,
    },
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spq")
    result = run_recipe(TINY, out_dir=out, progress=False)
    return out, result


def test_method_is_registered_as_spquant():
    assert get_method("spquant").name == "spquant"


def test_tiny_run_reports_measured_sparsity(tiny_run):
    out, result = tiny_run
    assert (out / "metrics.json").is_file()
    assert result["spatial_sparsity"] == pytest.approx(0.35, abs=0.01)
    assert 0 <= result["channel_sparsity"] <= 1
    assert result["effective_synops"] <= result["spike_synops"] + 1e-6
    assert 0 <= result["binary_membrane_accuracy"] <= 1
    assert result["memory_mb"]["membrane"] > 0


def test_checkpoint_reloads_to_the_same_accuracy(tiny_run):
    out, result = tiny_run
    model, meta = load_spquant_model(out)
    test = get_dataset("mnist5k", "test")
    subset = torch.utils.data.TensorDataset(*(t[:48] for t in test.tensors))
    again = evaluate_spquant(model, subset, ablation=False)
    assert again["accuracy"] == result["test_accuracy"]
    assert model.net[1].threshold.requires_grad  # learnable threshold survived


def test_cost_command_on_checkpoint(tiny_run, capsys):
    out, _ = tiny_run
    assert main(["cost", str(out), "--samples", "32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["measured"]["spatial_sparsity"] == pytest.approx(0.35, abs=0.01)
    assert report["memory_bits"]["membrane"] == 2 * report["neurons"]  # ternary: 2 bits each


def test_bad_spquant_section_is_a_config_error(tmp_path):
    bad = {**TINY, "method": {"name": "spquant", "weight_bits": 2, "prune": 0.3}}
    with pytest.raises(ConfigError, match="method.prune"):
        run_recipe(bad, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="spatial_prune"):
        run_recipe({**TINY, "method": {"name": "spquant", "spatial_prune": 1.2}}, out_dir=tmp_path)


def test_tet_loss_formula():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])
    y = torch.tensor([0])
    ce = torch.nn.functional.cross_entropy
    expected = 0.1 * (ce(logits[0], y) + ce(logits[1], y)) / 2 + 0.9 * ((logits - 1) ** 2).mean()
    assert tet_loss(logits, y, lam=0.9).item() == pytest.approx(expected.item())


def test_event_frames_are_fed_time_first():
    from spikequant import create_model
    from spikequant.spquant.build import example_input_from
    from spikequant.train.trainer import accept_frame_sequences

    frames = torch.zeros(4, 3, 2, 8, 8)  # 4 samples of [T=3, 2, 8, 8]
    frames[:, 0, 0, 0, 0] = 1.0  # an event at the first step only
    dataset = torch.utils.data.TensorDataset(frames, torch.zeros(4, dtype=torch.long))
    model = create_model(
        "cnn_digits",
        neuron="qlif",
        timesteps=3,
        in_channels=2,
        input_size=8,
        widths=[2, 2],
        hidden=4,
    )
    accept_frame_sequences(model, dataset)
    assert model(frames).shape == (3, 4, 10)  # [T, B, classes]
    assert example_input_from(dataset).shape == (1, 2, 8, 8)
