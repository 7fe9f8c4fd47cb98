"""The SpQuant ablation studies (SGS surrogate shapes, threshold gradient path, membrane
precision): each row's recipe loads and builds the neuron it is about, and the membrane sweep
runs end to end on scikit-learn's 8x8 digits."""

import json

import pytest

from spikequant.cli import main
from spikequant.config import load_recipe
from spikequant.registry import create_neuron
from spikequant.study import list_studies, load_study

ABLATIONS = ("spquant-surrogates", "spquant-threshold-path", "spquant-membrane-bits")


def _row_neurons(name):
    """Each row's QLIF, built from its recipe after the study's and the row's overrides."""
    study = load_study(name)
    neurons = {}
    for row, spec in study["rows"].items():
        cfg = load_recipe(spec["recipe"], [*study["overrides"], *spec["overrides"]])
        assert cfg["model"]["neuron"] == "qlif" and cfg["data"]["train_subset"] == 2000
        neurons[row] = (cfg, create_neuron("qlif", **cfg["model"]["neuron_kwargs"]))
    return study, neurons


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_row_after_the_fp_snn_is_a_quant_snn_fine_tuned_from_it(name):
    assert name in list_studies()
    study, neurons = _row_neurons(name)
    assert list(study["rows"])[0] == "fp" and study["checks"]
    for row, spec in study["rows"].items():
        cfg, _ = neurons[row]
        if row == "fp":
            assert spec["init_from"] is None and cfg["method"]["weight_bits"] == 32
        else:
            assert spec["init_from"] == {"row": "fp", "key": "method.init_from"}
            assert cfg["method"]["weight_bits"] == 2 and cfg["train"]["epochs"] == 1


def test_the_membrane_sweep_stores_1_to_8_bits_ternary_and_float():
    _, neurons = _row_neurons("spquant-membrane-bits")
    bits = {row: neuron.membrane_bits for row, (_, neuron) in neurons.items() if row != "fp"}
    assert bits == {"u1": 1, "ternary": 2, **{f"u{b}": b for b in range(2, 9)}, "u32": 32}
    assert neurons["ternary"][1].levels.values().tolist() == [-1.0, 0.0, 1.0]
    assert neurons["u1"][1].levels.values().tolist() == [0.0, 1.0]
    assert neurons["u32"][1].levels is None


def test_the_surrogate_rows_differ_only_in_the_sgs_shape():
    _, neurons = _row_neurons("spquant-surrogates")
    shapes = {row: neuron.levels.shape for row, (_, neuron) in neurons.items() if row != "fp"}
    assert shapes == {s: s for s in ("sigmoid", "triangle", "atan", "rectangle")}
    ternary = {neuron.levels.values().tolist().__repr__() for row, (_, neuron) in neurons.items()
               if row != "fp"}  # fmt: skip
    assert ternary == {"[-1.0, 0.0, 1.0]"}


def test_the_threshold_rows_fixed_surrogate_and_separate_path():
    _, neurons = _row_neurons("spquant-threshold-path")
    learned = {row: bool(n.threshold.requires_grad) for row, (_, n) in neurons.items()}
    assert learned == {"fp": False, "fixed": False, "surrogate": True, "sgp": True}
    assert neurons["surrogate"][1].threshold_grad == "surrogate"
    assert neurons["sgp"][1].threshold_grad == "separate"


def test_the_membrane_sweep_runs_and_reports(tmp_path):
    argv = ["study", "spquant-membrane-bits", "--seeds", "0", "--work-dir", str(tmp_path),
            "--no-progress",
            "--set", "data.name=digits8x8", "--set", "data.train_subset=256",
            "--set", "data.test_subset=64", "--set", "data.batch_size=32",
            "--set", "model.timesteps=2", "--set", "fp:train.epochs=1",
            "--set", "model.kwargs={widths: [4, 8], hidden: 16, input_size: 8}"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "spquant_membrane_bits.json").read_text())
    assert [r["row"] for r in report["runs"]] == list(load_study("spquant-membrane-bits")["rows"])
    fp_dir = report["runs"][0]["dir"]
    for run in report["runs"][1:]:
        assert run["recipe"]["method"]["init_from"] == fp_dir
    membrane = {row: s["memory_mb.membrane"]["mean"] for row, s in report["summary"].items()}
    assert membrane["u32"] == pytest.approx(16 * membrane["ternary"])
    assert membrane["u8"] == pytest.approx(4 * membrane["ternary"])
    assert report["checks"]["ternary_16x_less_membrane"]["pass"]
    assert set(report["checks"]) == {c["name"] for c in load_study(ABLATIONS[2])["checks"]}
