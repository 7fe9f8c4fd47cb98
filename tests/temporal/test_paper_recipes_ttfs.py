"""The temporal-coding paper's CIFAR-10 SpikingVGG16 and ImageNet SpikingGoogleNet recipes validate
as shipped and train end to end (augmented full-precision epoch, a 2-bit QAT stage, evaluation,
checkpoint that rebuilds) on tiny fixtures in each dataset's real on-disk format.

Only the length is cut: one epoch and one fine-tune stage, batches of 4, the networks at 1/32
width."""

import json

import pytest
import torch

from spikequant.config import load_recipe, run_recipe
from spikequant.data import get_dataset
from spikequant.errors import ConfigError
from spikequant.pipeline import load_run_model
from spikequant.temporal import TTFSConcat, TTFSConv2d, ttfs_weighted_layers
from spikequant.train.trainer import Trainer

from ..data.conftest import make_cifar10, make_imagenet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# the paper: crop, flip and whitening (CIFAR-10), scale/aspect crops (ImageNet); nothing else
NO_CUTOUT_OR_RAND_AUGMENT = {"cutout": 0, "rand_augment_ops": 0, "rand_augment_magnitude": 9}

RECIPES = {
    "cifar10-vgg16-ttfs": ("cifar10", "ttfs_vgg16", (3, 32, 32)),
    "imagenet-googlenet-ttfs": ("imagenet", "ttfs_googlenet", (3, 224, 224)),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """CIFAR-10 (10 train / 2 test images) and ImageNet class folders (2 classes, 2 train and
    1 validation JPEG each)."""
    cifar10 = tmp_path_factory.mktemp("cifar10")
    make_cifar10(cifar10, per_batch=2)
    imagenet = tmp_path_factory.mktemp("imagenet")
    make_imagenet(imagenet, ("n01440764", "n01443537"))
    return {"cifar10": cifar10, "imagenet": imagenet}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validates_as_shipped(name):
    cfg = load_recipe(name)
    dataset, model, shape = RECIPES[name]
    assert cfg["data"]["name"] == dataset and cfg["model"]["name"] == model
    assert cfg["method"]["name"] == "ttfs" and cfg["method"]["bits"] == [32, 8, 4, 2]
    kwargs = cfg["model"]["kwargs"]
    assert tuple(kwargs["input_shape"]) == shape and kwargs["bright_first"] is False  # t = alpha p
    if name == "cifar10-vgg16-ttfs":
        # the paper's lr 0.01 -> 0.0001 over 320 epochs at batch 128, crop and flip
        assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["method"]["lr_end"]) == (
            "adam",
            1e-2,
            1e-4,
        )
        assert cfg["train"]["epochs"] == 320 and cfg["data"]["batch_size"] == 128
        assert cfg["data"]["augment"] == {"crop_padding": 4, "random_resize": False, "flip": True,
                                          **NO_CUTOUT_OR_RAND_AUGMENT}  # fmt: skip
        from spikequant.registry import create_model

        shipped = create_model(model, **kwargs)
        paper = create_model(model, num_classes=10)  # the default is Table 1's SpikingVGG16
        assert shipped.n_weights() == paper.n_weights()
    else:
        assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["momentum"]) == (
            "sgd",
            0.1,
            0.9,
        )
        assert cfg["data"]["batch_size"] == 256
        assert cfg["data"]["augment"] == {"crop_padding": 0, "random_resize": True, "flip": True,
                                          **NO_CUTOUT_OR_RAND_AUGMENT}  # fmt: skip


def _short(name, roots):
    dataset = RECIPES[name][0]
    return load_recipe(
        name,
        [
            f"data.root={roots[dataset]}",
            "data.batch_size=4",
            "data.eval_batch_size=8",
            "data.num_workers=0",
            "train.epochs=1",
            "train.device=cpu",
            "method.bits=[32, 2]",
            "method.epochs_per_stage=1",
            "model.kwargs.width=0.03125",
        ],
    )


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_a_fixture(name, roots, tmp_path, monkeypatch):
    cfg = _short(name, roots)
    out = tmp_path / "run"
    seen = []
    forward = Trainer.forward

    def recording_forward(trainer, x):
        seen.append(x.detach().clone())
        return forward(trainer, x)

    monkeypatch.setattr(Trainer, "forward", recording_forward)
    metrics = run_recipe(cfg, out_dir=out, progress=False)
    monkeypatch.undo()
    # the training batches are the recipe's crops and flips of the images, not the images
    raw = get_dataset(cfg["data"]["name"], "train", root=cfg["data"]["root"])
    raw = torch.stack([raw[i][0] for i in range(len(raw))])
    seen = torch.cat(seen)
    assert len(seen) == 2 * len(raw)  # the full-precision epoch and the 2-bit one
    unchanged = [any(torch.equal(x, r) for r in raw) for x in seen]
    assert sum(unchanged) < len(seen) // 2
    assert [row["bits"] for row in metrics["history"]] == [32, 2]
    assert set(metrics["accuracy_by_bits"]) == {"32", "2"}
    assert (
        json.loads((out / "metrics.json").read_text())["test_accuracy"]
        == (metrics["test_accuracy"])
    )
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["fraction_spiking"] <= 1.0
    assert metrics["energy_nJ"] == pytest.approx(
        metrics["n_weights"] * metrics["fraction_spiking"] * 1e-2
    )
    model, meta = load_run_model(out / "bits2")
    assert meta["model"]["name"] == RECIPES[name][1] and meta["weight_bits"] == 2
    assert all(layer.weight_bits == 2 for layer in ttfs_weighted_layers(model))
    shape = RECIPES[name][2]
    with torch.no_grad():
        z = model.eval()(torch.rand(1, *shape))
    assert z.shape == (1, cfg["model"]["kwargs"]["num_classes"])
    if name == "imagenet-googlenet-ttfs":
        assert sum(isinstance(m, TTFSConcat) for m in model.modules()) == 9
    else:
        assert sum(isinstance(m, TTFSConv2d) for m in model.modules()) == 13


def test_mixup_is_refused():
    with pytest.raises(ConfigError, match="mixup_alpha"):
        load_recipe("cifar10-vgg16-ttfs", ["data.mixup_alpha=0.2"])
