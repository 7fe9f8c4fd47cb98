"""`spikequant convert` end to end on a tiny network trained on the bundled digits."""

import json

import pytest

from spikequant.cli import main
from spikequant.cli.commands.convert import parse_timesteps
from spikequant.config import run_recipe
from spikequant.errors import ConfigError, RunFolderError


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_qat")
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "mnist5k"},
        "model": {"name": "ann_mlp", "kwargs": {"qat": True, "bits": 4, "hidden": [32]}},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1},
        "method": {"name": "qat"},
    }
    run_recipe(cfg, out_dir=out, progress=False)
    return out


def test_parse_timesteps():
    assert parse_timesteps("1,2,4,...,256") == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert parse_timesteps("10,20,30,...,60") == [10, 20, 30, 40, 50, 60]
    for bad in ("0,1", "a,b", "...,4", ""):
        with pytest.raises(ConfigError):
            parse_timesteps(bad)


def test_convert_writes_table_json_and_png(tiny_checkpoint, tmp_path, capsys):
    code = main(
        [
            "convert",
            str(tiny_checkpoint),
            "--method",
            "rate,msat,calif",
            "--timesteps",
            "1,2,4,...,16",
            "--test-samples",
            "60",
            "--calibration-samples",
            "64",
            "--check-exact",
            "--out",
            str(tmp_path),
            "--name",
            "tiny",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert report["timesteps"] == [1, 2, 4, 8, 16]
    assert set(report["methods"]) == {"rate", "msat", "calif"}
    for entry in report["methods"].values():
        for row in entry["rows"]:
            assert row["gap_to_ann"] == pytest.approx(row["accuracy"] - report["ann_accuracy"])
            assert row["spikes_per_neuron"] >= 0
    assert "sin" in report["methods"]["msat"]
    exact = report["calif_exactness"]
    assert exact["T"] == 16 and all(
        v["mismatch_vs_decoded_input"] == 0 for v in exact["layers"].values()
    )
    assert (tmp_path / "tiny.png").stat().st_size > 1000
    assert "| T |" in (tmp_path / "tiny.md").read_text()
    assert "within 1 point" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "ttfs"],
        ["--timesteps", "0,1"],
        ["--test-samples", "0"],
    ],
)
def test_bad_options_exit_2(tiny_checkpoint, argv, tmp_path):
    assert main(["convert", str(tiny_checkpoint), *argv, "--out", str(tmp_path)]) == 2


def test_missing_checkpoint_exits_2(tmp_path):
    assert main(["convert", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2


def test_resume_reconverts_with_labelled_variants(tmp_path):
    """A finished qat run resumed with a convert section converts the saved ANN again (no
    retraining): the variants recipe of docs/results/msat-mnist-variants.md works this way."""
    run = tmp_path / "run"
    cfg = {
        "name": "tiny-float",
        "seed": 0,
        "data": {"name": "mnist5k", "batch_size": 128},
        "model": {"name": "ann_mlp", "kwargs": {"hidden": [16]}},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1},
        "method": {"name": "qat"},
    }
    first = run_recipe(cfg, out_dir=run, progress=False)
    variants = {
        **cfg,
        "name": "tiny-variants",
        "method": {
            "name": "qat",
            "convert": {
                "methods": [
                    "rate",
                    {"label": "rate-v0.5", "method": "rate", "initial_membrane": 0.5},
                    {"label": "msat-noconf", "method": "msat", "confidence": False},
                ],
                "timesteps": [1, 2, 4],
                "out": str(tmp_path),
            },
        },
    }
    with pytest.raises(RunFolderError, match="method.convert"):  # other settings: refused ...
        run_recipe(variants, out_dir=run, resume=True, progress=False)
    # ... unless forced
    again = run_recipe(variants, out_dir=run, resume=True, force=True, progress=False)
    assert again["test_accuracy"] == first["test_accuracy"]
    report = json.loads((tmp_path / "tiny-variants.json").read_text())
    assert list(report["methods"]) == ["rate", "rate-v0.5", "msat-noconf"]
    assert report["methods"]["rate-v0.5"]["options"] == {"initial_membrane": 0.5}
    rows = {label: e["rows"] for label, e in report["methods"].items()}
    # at T = 1 the precharged IF rounds instead of flooring: more spikes, never fewer
    assert rows["rate-v0.5"][0]["spikes_per_neuron"] > rows["rate"][0]["spikes_per_neuron"]
    for label, entry in report["methods"].items():
        assert again["within_1_point_at_T"][label]["first"] == entry["within_1_point_at_T"]
    assert "within 1 point from T on" in (tmp_path / "tiny-variants.md").read_text()
    other = {**variants, "model": {"name": "ann_mlp", "kwargs": {"hidden": [8]}}}
    with pytest.raises(RunFolderError, match="model.kwargs.hidden"):
        run_recipe(other, out_dir=run, resume=True, progress=False)
