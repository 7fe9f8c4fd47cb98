"""The conversion papers' recipes (MSAT: CIFAR VGG-16 / ResNet-20, ImageNet ResNet-34; Ca-LIF:
CIFAR-10 VGG-9 / ResNet-11H / MobileNet-20) validate as shipped and run end to end -- train the
ANN, (QAT: fold BN and fine-tune), convert, write the conversion report -- on tiny fixtures written
in each dataset's real on-disk format.

Only the length is cut: one epoch, batches of 4, the networks at a small ``width``, short
simulations. The Ca-LIF runs use 3-bit QAT and T = 2^3 = 8, so the run's own exactness check
(every integer activation of the Ca-LIF network equals the quantized ANN's) is asserted too.
"""

import json

import pytest
import torch

from spikequant.cli import main
from spikequant.config import load_recipe, run_recipe
from spikequant.pipeline import load_run_model

from ..data.conftest import make_cifar10, make_cifar100, make_imagenet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

MSAT = {
    "cifar10-vgg16-msat": ("cifar10", "vgg16", 0.0625),
    "cifar100-vgg16-msat": ("cifar100", "vgg16", 0.0625),
    "cifar10-resnet20-msat": ("cifar10", "resnet20", 0.25),
    "cifar100-resnet20-msat": ("cifar100", "resnet20", 0.25),
    "imagenet-resnet34-msat": ("imagenet", "resnet34", 0.0625),
}
CALIF = {
    "cifar10-vgg9-calif": ("cifar10", "vgg9_lee", 0.0625),
    "cifar10-resnet11h-calif": ("cifar10", "resnet11h", 0.0625),
    "cifar10-mobilenet20-calif": ("cifar10", "mobilenet20", 0.0625),
}
PRESETS = {"vgg16": "vgg16", "resnet20": "resnet20", "resnet34": "resnet34"}
CALIF_BITS = 3
IMAGENET_CLASSES = ["n01440764", "n01443537"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """One folder per dataset: CIFAR-10 (10 train / 2 test images), CIFAR-100 (4 / 4) and
    ImageNet class folders (2 classes, 2 train and 1 validation JPEG each)."""
    cifar10 = tmp_path_factory.mktemp("cifar10")
    make_cifar10(cifar10, per_batch=2)
    cifar100 = tmp_path_factory.mktemp("cifar100")
    make_cifar100(cifar100, n=4)
    imagenet = tmp_path_factory.mktemp("imagenet")
    make_imagenet(imagenet, IMAGENET_CLASSES)
    return {"cifar10": cifar10, "cifar100": cifar100, "imagenet": imagenet}


@pytest.mark.parametrize("name", [*MSAT, *CALIF])
def test_recipe_validates_as_shipped(name):
    cfg = load_recipe(name)
    dataset, arch, _ = {**MSAT, **CALIF}[name]
    assert cfg["data"]["name"] == dataset
    assert cfg["model"]["name"] == "ann_zoo" and cfg["model"]["kwargs"]["arch"] == arch
    assert cfg["method"]["name"] == "qat"
    convert = cfg["method"]["convert"]
    if name in MSAT:
        assert convert["methods"] == ["rate", "msat"]
        assert convert["options"]["msat"]["preset"] == PRESETS[arch]
        assert not cfg["model"]["kwargs"].get("qat")
    else:
        assert convert["methods"] == ["calif"]
        assert cfg["model"]["kwargs"]["qat"] is True and cfg["model"]["kwargs"]["bits"] == 8
        assert max(convert["timesteps"]) == 2**8  # the exactness check runs at the largest T


def _short(name, roots):
    dataset, _, width = {**MSAT, **CALIF}[name]
    overrides = [
        f"data.root={roots[dataset]}",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "train.epochs=1",
        "train.eval_every=0",
        "train.device=cpu",
        f"model.kwargs.width={width}",
    ]
    if name in CALIF:
        overrides += [
            f"model.kwargs.bits={CALIF_BITS}",
            "method.fold_epochs=1",
            f"method.convert.timesteps=[{2**CALIF_BITS}]",
        ]
    else:
        overrides.append("method.convert.timesteps=[2]")
    return load_recipe(name, overrides)


@pytest.mark.parametrize("name", [*MSAT, *CALIF])
def test_recipe_trains_and_converts(name, roots, tmp_path):
    cfg = _short(name, roots)
    out = tmp_path / "run"
    metrics = run_recipe(cfg, out_dir=out, progress=False)
    assert json.loads((out / "metrics.json").read_text())["conversion"] == metrics["conversion"]
    report = json.loads((out / "conversion" / f"{name}.json").read_text())
    assert (out / "conversion" / f"{name}.md").is_file()
    expected = ["rate", "msat"] if name in MSAT else ["calif"]
    assert list(report["methods"]) == expected
    for entry in report["methods"].values():
        (row,) = entry["rows"]
        assert row["T"] == cfg["method"]["convert"]["timesteps"][0]
        assert 0.0 <= row["accuracy"] <= 100.0
    model, meta = load_run_model(out)  # the checkpoint rebuilds (what `spikequant convert` loads)
    if cfg["data"]["name"] == "imagenet":  # the command reads the run's data folder, 2 images
        command = f"convert {out} --method rate --timesteps 2 --calibration-samples 2 "
        command += f"--test-samples 2 --out {tmp_path} --name conversion"
        assert main(command.split()) == 0
        assert json.loads((tmp_path / "conversion.json").read_text())["test_samples"] == 2
    side = 224 if cfg["data"]["name"] == "imagenet" else 32
    with torch.no_grad():
        logits = model.eval()(torch.rand(1, 3, side, side))
    assert logits.shape == (1, cfg["model"]["kwargs"]["num_classes"])
    if name in MSAT:
        assert report["methods"]["msat"]["preset"] == PRESETS[cfg["model"]["kwargs"]["arch"]]
    else:
        assert meta["model"]["kwargs"]["bn"] is False
        # trained with BN, folded, fine-tuned: the converted network is exact at T = 2^bits
        assert "accuracy_after_fold" in metrics
        assert report["calif_exactness"]["T"] == 2**CALIF_BITS
        assert report["calif_exactness"]["layers"]
        assert metrics["calif_layer_mismatches"] == 0


def test_conversion_images_of_a_file_dataset_are_spread_over_its_classes(roots):
    """ImageNet's files are sorted by class: calibrating on the first images would see one class,
    and decoding the whole split would not fit in memory, so the sweep decodes an even spread."""
    from spikequant.data import get_dataset, limit_dataset, load_arrays

    x, y = load_arrays("imagenet", "train", roots["imagenet"], limit=2)
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [0, 1]
    x, y = load_arrays("imagenet", "test", roots["imagenet"])
    assert y.tolist() == [0, 1]
    # a recipe's train_subset / test_subset and eval --subset take the same spread
    train = get_dataset("imagenet", "train", root=roots["imagenet"])
    assert [int(limit_dataset(train, 2)[i][1]) for i in range(2)] == [0, 1]
    assert limit_dataset(train, None) is train
    x, y = load_arrays("cifar10", "train", roots["cifar10"], limit=3)  # in memory: the first ones
    assert x.shape == (3, 3, 32, 32)
    labels = make_cifar10(roots["cifar10"] / "again", per_batch=2)["train"][1][:3]
    assert y.tolist() == labels.tolist()
