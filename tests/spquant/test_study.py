"""The SpQuant study pipeline (FP -> Quant-SNN -> SpQuant-SNN per seed) on a few real digits,
through `spikequant spquant-study` (an alias of `spikequant study spquant-study`)."""

import json
from pathlib import Path

import pytest
import torch

from spikequant import ConfigError, create_model
from spikequant.cli import main
from spikequant.errors import RunFolderError
from spikequant.pipeline import run as run_recipe
from spikequant.spquant.build import float_to_parametrized_keys
from spikequant.spquant.weights import quantize_weights
from spikequant.study.report import mean_std

TINY = {
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
    "method": {"name": "spquant", "weight_bits": 32},
}


def _study(work, out, *extra, seeds="0", epochs=1):
    """``spikequant spquant-study`` on 64 / 32 digits with one-epoch stages; its exit code."""
    if "--seeds" in extra:
        seeds = extra[extra.index("--seeds") + 1]
        extra = tuple(
            e
            for i, e in enumerate(extra)
            if i not in (extra.index("--seeds"), extra.index("--seeds") + 1)
        )
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


def _runs(report, row):
    return {r["seed"]: r for r in report["runs"] if r["row"] == row}


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_study_trains_every_stage_per_seed_and_checks_the_mean(study):
    root, report = study
    assert report["seeds"] == [0, 1]
    assert report["from_scratch"] == []
    for seed in (0, 1):
        for stage in ("fp", "quant", "spquant"):
            (run_dir,) = (root / "work" / f"seed{seed}").glob(f"{stage}-*")
            assert (run_dir / "metrics.json").is_file()
            assert _runs(report, stage)[seed]["dir"] == str(run_dir)
    quant = _runs(report, "quant")[0]
    assert quant["init_from_row"] == "fp"
    assert quant["recipe"]["method"]["init_from"] == _runs(report, "fp")[0]["dir"]
    # started from the FP SNN: only the quantizers' scales were not in its checkpoint
    missing = quant["metrics"]["initialised_missing_keys"]
    assert missing and all(key.endswith("log2_alpha") for key in missing)
    check = report["checks"]["quant_within_2_points"]
    fp, q = _runs(report, "fp"), _runs(report, "quant")
    drops = [
        100 * (fp[s]["metrics"]["test_accuracy"] - q[s]["metrics"]["test_accuracy"]) for s in (0, 1)
    ]
    assert check["mean"] == pytest.approx(sum(drops) / 2)
    assert check["pass"] == (check["mean"] <= 2.0)
    acc = report["summary"]["fp"]["test_accuracy"]
    assert acc["values"] == [fp[s]["metrics"]["test_accuracy"] for s in (0, 1)]
    spq = report["summary"]["spquant"]
    assert spq["spatial_sparsity"]["mean"] == pytest.approx(0.35, abs=0.01)
    assert q[0]["metrics"]["weight_alpha"]  # PoT scales are reported
    clip = report["analyses"]["spquant-clipping:fp"]
    assert set(clip["accuracy_with_clip"]) == {"none", "-5.0", "-4.0", "-3.0", "-2.0", "-1.0"}
    text = (root / "out" / "spquant_study.md").read_text()
    assert "Seeds 0, 1" in text and "initialised from its seed's `fp` run" in text
    assert "Quant-SNN within 2 points of the FP SNN" in text and "+-" in text
    assert "## Clipping analysis" in text


def test_study_rerun_reuses_the_finished_runs(study, capsys):
    root, report = study
    code = _study(root / "work", root / "again", "--quiet")
    assert code == 0
    again = json.loads((root / "again" / "spquant_study.json").read_text())
    first, second = _runs(report, "quant")[0], _runs(again, "quant")[0]
    assert second["reused"]
    assert second["metrics"]["test_accuracy"] == first["metrics"]["test_accuracy"]


def test_study_keeps_runs_of_other_recipes_apart(study, capsys):
    """Run folders are keyed by their recipe: longer FP training lands in a folder of its own
    (and so do the stages started from it), and the first runs stay as they were."""
    root, report = study
    code = _study(root / "work", root / "x", "--seeds", "0", epochs=2)
    assert code == 0
    other = json.loads((root / "x" / "spquant_study.json").read_text())
    for stage in ("fp", "quant", "spquant"):
        assert _runs(other, stage)[0]["dir"] != _runs(report, stage)[0]["dir"]
        assert len(list((root / "work" / "seed0").glob(f"{stage}-*"))) == 2
    assert _runs(other, "fp")[0]["metrics"]["epochs"] == 2


def test_study_refuses_a_run_folder_of_another_recipe(study, tmp_path, capsys):
    """A run folder whose record names another recipe is never resumed or reported."""
    import shutil

    root, report = study
    work = tmp_path / "work"
    shutil.copytree(root / "work" / "seed0", work / "seed0")
    fp_dir = work / "seed0" / Path(_runs(report, "fp")[0]["dir"]).name
    marker = json.loads((fp_dir / "study_run.json").read_text())
    marker["recipe"]["train"]["epochs"] = 7
    (fp_dir / "study_run.json").write_text(json.dumps(marker))
    code = _study(work, tmp_path / "out", "--seeds", "0")
    assert code == 2
    assert "different recipe" in capsys.readouterr().err


def test_bad_study_arguments_exit_2(tmp_path, capsys):
    assert main(["spquant-study", "--seeds", "a,b", "--work-dir", str(tmp_path)]) == 2
    assert main(["spquant-study", "--fp-epochs", "0", "--work-dir", str(tmp_path)]) == 2


def test_resume_refuses_a_run_of_another_recipe(tmp_path):
    run_recipe(TINY, out_dir=tmp_path, progress=False)
    longer = {**TINY, "train": {"epochs": 2, "eval_every": 0}}
    with pytest.raises(RunFolderError, match=r"other settings \(train.epochs\)"):
        run_recipe(longer, out_dir=tmp_path, progress=False, resume=True)
    described = {**TINY, "description": "the same run, described"}  # configures nothing
    assert run_recipe(described, out_dir=tmp_path, progress=False, resume=True)["epochs"] == 1


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


def test_unknown_stage_to_train_from_scratch_is_a_config_error(tmp_path):
    from spikequant.study import load_study, run_study

    with pytest.raises(ConfigError, match="unknown row 'ann'"):
        run_study(
            load_study("spquant-study"), command="-", work_dir=tmp_path, from_scratch=("ann",)
        )


def test_variant_reuses_the_fp_and_quant_runs(study):
    root, report = study
    code = _study(
        root / "work", root / "variant", "--variant", "nogates",
        "--set", "method.channel_gates=false", "--quiet",
    )  # fmt: skip
    assert code == 0
    variant = json.loads((root / "variant" / "spquant_study.json").read_text())
    assert _runs(variant, "fp")[0]["reused"] and _runs(variant, "quant")[0]["reused"]
    assert not _runs(variant, "spquant")[0]["reused"]
    assert (
        _runs(variant, "fp")[0]["metrics"]["test_accuracy"]
        == _runs(report, "fp")[0]["metrics"]["test_accuracy"]
    )
    assert variant["summary"]["spquant"]["channel_sparsity"]["mean"] == 0.0
    assert "spquant:method.channel_gates=false" in variant["command"]
    assert main(["spquant-study", "--variant", "../x", "--work-dir", str(root / "w2")]) == 2
