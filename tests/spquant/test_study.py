"""The SpQuant study pipeline (FP -> Quant-SNN -> SpQuant-SNN per seed) on a few real digits."""

import json

import pytest
import torch
from spikequant.spquant.runner import float_to_parametrized_keys, run_recipe

from spikequant import CheckpointError, ConfigError, create_model
from spikequant.cli import main
from spikequant.spquant.study import mean_std
from spikequant.spquant.weights import quantize_weights

TINY = {
    "kind": "spquant",
    "name": "tiny",
    "seed": 0,
    "data": {"name": "mnist5k", "batch_size": 32, "train_subset": 64, "test_subset": 32},
    "model": {
        "name": "cnn_digits",
        "timesteps": 2,
        "neuron": "qlif",
        "kwargs": {"widths": [4, 8], "hidden": 16},
    },
    "optim": {"name": "adam", "lr": 0.001},
    "train": {"epochs": 1, "eval_every": 0},
    "spquant": {"weight_bits": 32},
}


def _study(work, out, *extra, seeds="0", epochs=1):
    """``spikequant spquant-study`` on 64 / 32 digits with one-epoch stages; its exit code."""
    return main(
        ["spquant-study", "--seeds", seeds, "--fp-epochs", str(epochs), "--quant-epochs", "1",
         "--finetune-epochs", "1", "--train-subset", "64", "--test-subset", "32",
         "--work-dir", str(work), "--out", str(out), *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    code = _study(root / "work", root / "out", "--quiet", seeds="0,1")
    assert code == 0
    return root, json.loads((root / "out" / "spquant_study.json").read_text())


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_study_trains_every_stage_per_seed_and_checks_the_mean(study):
    root, report = study
    assert report["seeds"] == [0, 1]
    assert report["quant_init"] == "fp"
    for seed in (0, 1):
        for stage in ("fp", "quant", "spquant"):
            assert (root / "work" / f"seed{seed}" / stage / "metrics.json").is_file()
    quant = json.loads((root / "work" / "seed0" / "quant" / "metrics.json").read_text())
    # started from the FP SNN: only the quantizers' scales were not in its checkpoint
    assert quant["initialised_missing_keys"]
    assert all(key.endswith("log2_alpha") for key in quant["initialised_missing_keys"])
    check = report["checks"]["quant_within_2_points"]
    drops = [
        100
        * (
            report["per_seed"][s]["fp"]["test_accuracy"]
            - report["per_seed"][s]["quant"]["test_accuracy"]
        )
        for s in ("0", "1")
    ]
    assert check["mean"] == pytest.approx(sum(drops) / 2)
    assert check["pass"] == (check["mean"] <= 2.0)
    acc = report["summary"]["fp"]["test_accuracy"]
    assert acc["values"] == [report["per_seed"][s]["fp"]["test_accuracy"] for s in ("0", "1")]
    spq = report["summary"]["spquant"]
    assert spq["spatial_sparsity"]["mean"] == pytest.approx(0.35, abs=0.01)
    assert report["per_seed"]["0"]["quant"]["weight_alpha"]  # PoT scales are reported
    text = (root / "out" / "spquant_study.md").read_text()
    assert "Seeds 0, 1" in text and "initialised from the FP SNN" in text
    assert "quant_within_2_points" in text and "+-" in text


def test_study_rerun_only_re_evaluates(study, capsys):
    root, report = study
    code = _study(root / "work", root / "again", "--quiet")
    assert code == 0
    again = json.loads((root / "again" / "spquant_study.json").read_text())
    assert (
        again["per_seed"]["0"]["quant"]["test_accuracy"]
        == (report["per_seed"]["0"]["quant"]["test_accuracy"])
    )


def test_study_refuses_a_work_dir_of_other_recipes(study, capsys):
    root, _ = study
    code = _study(root / "work", root / "x", epochs=2)
    assert code == 2
    assert "different recipe" in capsys.readouterr().err


def test_bad_study_arguments_exit_2(tmp_path, capsys):
    assert main(["spquant-study", "--seeds", "a,b", "--work-dir", str(tmp_path)]) == 2
    assert main(["spquant-study", "--fp-epochs", "0", "--work-dir", str(tmp_path)]) == 2


def test_resume_refuses_a_run_of_another_recipe(tmp_path):
    run_recipe(TINY, out_dir=tmp_path, progress=False)
    longer = {**TINY, "train": {"epochs": 2, "eval_every": 0}}
    with pytest.raises(CheckpointError, match="different recipe"):
        run_recipe(longer, out_dir=tmp_path, progress=False, resume=True)


def test_float_checkpoint_initialises_the_quantized_weights():
    fp = create_model("cnn_digits", neuron="qlif", widths=[4, 8], hidden=16)
    quant = create_model("cnn_digits", neuron="qlif", widths=[4, 8], hidden=16)
    quantize_weights(quant, 2, rescale=True)
    state = float_to_parametrized_keys(fp.state_dict(), quant)
    result = quant.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(key.endswith("log2_alpha") for key in result.missing_keys)
    original = quant.net[0].module[0].parametrizations.weight.original
    assert torch.equal(original, fp.net[0].module[0].weight)


def test_unknown_quant_init_is_a_config_error(tmp_path):
    from spikequant.spquant.study import run_study

    with pytest.raises(ConfigError, match="quant_init"):
        run_study(out_dir=tmp_path, work_dir=tmp_path, quant_init="ann")


def test_variant_reuses_the_fp_and_quant_runs(study):
    root, report = study
    code = _study(
        root / "work", root / "variant", "--variant", "nogates",
        "--set", "spquant.channel_gates=false", "--quiet",
    )  # fmt: skip
    assert code == 0
    variant = json.loads((root / "variant" / "spquant_study.json").read_text())
    assert (root / "work" / "seed0" / "spquant-nogates" / "metrics.json").is_file()
    assert (
        variant["per_seed"]["0"]["fp"]["test_accuracy"]
        == (report["per_seed"]["0"]["fp"]["test_accuracy"])
    )
    assert variant["summary"]["spquant"]["channel_sparsity"]["mean"] == 0.0
    assert main(["spquant-study", "--variant", "../x", "--work-dir", str(root / "w2")]) == 2
