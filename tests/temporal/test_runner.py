"""End-to-end TTFS training on the bundled real MNIST digits through the recipe runner."""

import json

import pytest
import torch

from spikequant.config import load_recipe, run_recipe
from spikequant.errors import ConfigError
from spikequant.pipeline import load_run_model

pytestmark = pytest.mark.slow


def test_fc100_one_epoch_reaches_080(tmp_path):
    # spec: FC 784-100-10, alpha 3, Adam 1e-3, batch 10, one epoch -> >= 0.80 (reference ~0.86)
    cfg = load_recipe("ttfs-fc100", ["train.epochs=1"])
    metrics = run_recipe(cfg, out_dir=tmp_path, progress=False)
    assert metrics["test_accuracy"] >= 0.80
    assert metrics["history"][0]["bits"] == 32 and len(metrics["history"]) == 1
    assert 0 < metrics["fraction_spiking"] <= 1
    assert metrics["n_weights"] == 785 * 100 + 101 * 10
    assert metrics["energy_nJ"] == pytest.approx(
        metrics["n_weights"] * metrics["fraction_spiking"] * 1e-2
    )
    model, meta = load_run_model(tmp_path)
    assert meta["model"]["name"] == "ttfs_fc" and meta["epoch"] == 1 and meta["method"] == "ttfs"
    assert (
        json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"]
        == metrics["test_accuracy"]
    )


def test_qat_stages_resume_and_checkpoints(tmp_path):
    overrides = [
        "data.train_subset=300",
        "data.test_subset=200",
        "train.epochs=1",
        "method.bits=[32, 4]",
        "model.kwargs.sizes=[784, 20, 10]",
    ]
    cfg = load_recipe("ttfs-fc100", overrides)
    first = run_recipe(cfg, out_dir=tmp_path, progress=False)
    assert [h["bits"] for h in first["history"]] == [32, 4]
    assert set(first["accuracy_by_bits"]) == {"32", "4"}
    model, meta = load_run_model(tmp_path / "bits4")
    assert meta["weight_bits"] == 4 and all(layer.weight_bits == 4 for layer in model.layers)
    w = model.layers[0].weight_matrix().detach()
    delta = w.abs().max() / 7
    assert torch.allclose(w / delta, torch.round(w / delta), atol=1e-4)
    # resume after everything is done: no extra epoch, same final model
    again = run_recipe(cfg, out_dir=tmp_path, resume=True, progress=False)
    assert len(again["history"]) == 2 and again["test_accuracy"] == first["test_accuracy"]


def test_bad_recipe_values_raise_config_error():
    for override, words in (
        ("method.form=nonsense", "method.form"),
        ("method.bits=[8, 4]", "method.bits"),
        ("data.batch_size=0", "data.batch_size"),
        ("method.K=.nan", "method.K"),
        ("model.timesteps=4", "model.timesteps"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_recipe("ttfs-fc100", [override])
