"""The paper-scale SpQuant studies (ResNet-19 on CIFAR-10, VGG-9 on DVS-CIFAR10) are staged
FP SNN -> Quant-SNN -> SpQuant-SNN chains; each chain trains end to end, one epoch a stage at
1/16 width (DVS-CIFAR10 at T = 2), on a tiny folder in the dataset's real on-disk format."""

import json

import pytest

from spikequant.cli import main
from spikequant.config import load_recipe
from spikequant.study import load_study

from .conftest import make_cifar10
from .test_events import random_events, write_aedat2

pytestmark = pytest.mark.slow

# study -> (dataset, model, weight bits of the quantized stages, timesteps)
STAGED = {
    "spquant-resnet19-cifar10": ("cifar10", "resnet19", 4, 2),
    "spquant-vgg9-dvscifar10": ("dvs_cifar10", "vgg9", 2, 10),
}
TINY = ["train.epochs=1", "train.eval_every=0", "data.batch_size=4", "data.eval_batch_size=8",
        "data.num_workers=0", "model.kwargs.width=0.0625"]  # fmt: skip


@pytest.mark.parametrize("name", list(STAGED))
def test_the_stages_chain_fp_quant_spquant(name):
    dataset, model, bits, timesteps = STAGED[name]
    study = load_study(name)
    assert list(study["rows"]) == ["fp", "quant", "spquant"]
    assert study["rows"]["quant"]["init_from"] == {"row": "fp", "key": "method.init_from"}
    assert study["rows"]["spquant"]["init_from"] == {"row": "quant", "key": "method.init_from"}
    cfgs = {row: load_recipe(spec["recipe"]) for row, spec in study["rows"].items()}
    for cfg in cfgs.values():
        assert (cfg["data"]["name"], cfg["model"]["name"]) == (dataset, model)
        assert cfg["model"]["timesteps"] == timesteps and cfg["method"]["learn_threshold"]
    assert [c["method"]["weight_bits"] for c in cfgs.values()] == [32, bits, bits]
    membranes = [c["model"]["neuron_kwargs"]["membrane"] for c in cfgs.values()]
    assert membranes == ["fp", "ternary", "ternary"]
    assert [c["method"]["spatial_prune"] for c in cfgs.values()] == [0.0, 0.0, 0.35]
    assert cfgs["spquant"]["method"]["channel_gates"]
    assert cfgs["spquant"]["method"]["gate_threshold"] == 0.47


def _dvs_cifar10(root):
    for c in ("airplane", "cat", "truck"):
        for i in range(4):
            ev = random_events(hash((c, i)) % 1000, n=200)
            write_aedat2(root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat", ev)


@pytest.mark.parametrize("name", list(STAGED))
def test_the_staged_study_trains_on_a_tiny_folder(name, tmp_path):
    data = tmp_path / "data"
    if STAGED[name][0] == "cifar10":
        make_cifar10(data, per_batch=2)  # 10 training and 2 test images
    else:
        _dvs_cifar10(data)  # 9 training and 3 test recordings
    argv = ["study", name, "--work-dir", str(tmp_path / "runs"), "--no-progress",
            "--set", f"data.root={data}"]  # fmt: skip
    for item in TINY + (["model.timesteps=2"] if "dvs" in name else []):
        argv += ["--set", item]
    assert main(argv) == 0
    report = json.loads((tmp_path / "runs" / f"{name.replace('-', '_')}.json").read_text())
    runs = {r["row"]: r for r in report["runs"]}
    assert list(runs) == ["fp", "quant", "spquant"]
    assert runs["quant"]["recipe"]["method"]["init_from"] == runs["fp"]["dir"]
    assert runs["spquant"]["recipe"]["method"]["init_from"] == runs["quant"]["dir"]
    metrics = {row: r["metrics"] for row, r in runs.items()}
    assert metrics["quant"]["memory_mb"]["total"] < metrics["fp"]["memory_mb"]["total"]
    assert metrics["spquant"]["spatial_sparsity"] == pytest.approx(0.35, abs=0.02)
    assert metrics["fp"]["spatial_sparsity"] == 0
    assert set(report["checks"]) == {c["name"] for c in load_study(name)["checks"]}
