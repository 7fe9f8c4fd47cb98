"""The ATIF ablation end to end on a subset of the bundled digits (full: `spikequant ablation`)."""

import json

import pytest

from spikequant.cli import main

FAST = [
    "--set",
    "data.train_subset=800",
    "--set",
    "data.test_subset=400",
    "--set",
    "train.epochs=2",
    "--set",
    "model.kwargs.widths=[8,16]",
    "--set",
    "model.kwargs.hidden=32",
]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    code = main(
        [
            "ablation",
            "--seeds",
            "0",
            "--runs",
            str(tmp / "runs"),
            "--out",
            str(tmp / "results"),
            "--no-progress",
            "--json",
            *FAST,
        ]
    )
    assert code == 0
    return tmp, json.loads((tmp / "results" / "atif_ablation.json").read_text())


def test_ablation_writes_the_paper_style_table(ablation):
    tmp, summary = ablation
    assert list(summary["rows"]) == ["mnist-fixed", "mnist-atif-u", "mnist-atif-nu", "mnist-ann"]
    md = (tmp / "results" / "atif_ablation.md").read_text()
    for label in ("fixed V_th = 1", "ATIF-u", "ATIF-nu", "ANN (ReLU)"):
        assert label in md
    assert "| neuron | T | test accuracy % | theta" in md


def test_ablation_rows_are_real_trained_networks(ablation):
    _, summary = ablation
    rows = summary["rows"]
    for name in ("mnist-fixed", "mnist-atif-u", "mnist-atif-nu"):
        row = rows[name]
        assert row["timesteps"] == 4
        assert row["accuracy_mean"] > 0.6, name  # chance is 0.1
        assert 0 < row["theta_mean"] < 1
        # spikes per neuron over the window is between theta and T * theta (averaging differs)
        assert 0 < row["spikes_per_neuron_mean"] <= 4
    assert rows["mnist-ann"]["timesteps"] == 1 and rows["mnist-ann"]["theta_mean"] is None
    assert rows["mnist-ann"]["accuracy_mean"] > 0.5  # 26 Adam steps: the ANN starts slower
    fixed = rows["mnist-fixed"]["runs"][0]["thresholds"]
    assert fixed and all(v == 1.0 for v in fixed.values())
    trained = rows["mnist-atif-u"]["runs"][0]["thresholds"]
    assert any(abs(v - 1.0) > 1e-3 for v in trained.values())
    for levels in rows["mnist-atif-nu"]["runs"][0]["thresholds"].values():
        assert len(levels) == 4 and all(a > b > 0 for a, b in zip(levels, levels[1:], strict=False))


def test_ablation_checks_follow_from_the_rows(ablation):
    _, summary = ablation
    rows, checks = summary["rows"], summary["checks"]
    acc = {k: v["accuracy_mean"] for k, v in rows.items()}
    assert checks["atif_u_beats_fixed"] == (acc["mnist-atif-u"] > acc["mnist-fixed"])
    assert checks["atif_nu_beats_fixed"] == (acc["mnist-atif-nu"] > acc["mnist-fixed"])
    best = checks["best_spiking"]
    assert acc[best] == max(acc["mnist-fixed"], acc["mnist-atif-u"], acc["mnist-atif-nu"])
    assert checks["best_spiking_gap_to_ann_points"] == pytest.approx(
        100 * (acc["mnist-ann"] - acc[best])
    )
    assert checks["best_spiking_within_2_points_of_ann"] == (
        checks["best_spiking_gap_to_ann_points"] <= 2
    )
    assert summary["setup"]["train_samples"] == 800 and summary["setup"]["test_samples"] == 400


def test_render_recomputes_checks_without_training(ablation, capsys):
    tmp, summary = ablation
    saved = tmp / "saved.json"
    summary["checks"] = {}
    saved.write_text(json.dumps(summary))
    out = tmp / "rerendered"
    assert main(["ablation", "--render", str(saved), "--out", str(out)]) == 0
    again = json.loads((out / "atif_ablation.json").read_text())
    assert set(again["checks"]) >= {"atif_u_beats_fixed", "atif_nu_margin_points"}
    assert "one test image = 0.25 points" in (out / "atif_ablation.md").read_text()
    assert main(["ablation", "--render", str(tmp / "missing.json")]) == 2
    assert "not an atif_ablation.json" in capsys.readouterr().err


def test_resume_reuses_finished_runs_of_the_same_recipe(ablation):
    tmp, summary = ablation
    again = tmp / "again"
    args = ["ablation", "--seeds", "0", "--runs", str(tmp / "runs"), "--out", str(again)]
    assert main([*args, "--no-progress", "--resume", *FAST]) == 0
    redo = json.loads((again / "atif_ablation.json").read_text())
    for name, row in summary["rows"].items():
        assert redo["rows"][name]["accuracy_mean"] == row["accuracy_mean"]
        assert redo["rows"][name]["runs"][0]["train_seconds"] == row["runs"][0]["train_seconds"]


def _rows(accuracies: dict[str, list[float]]) -> dict:
    return {
        name: {
            "accuracy_mean": sum(accs) / len(accs),
            "accuracy_std": 0.0,
            "runs": [{"seed": s, "test_accuracy": a} for s, a in enumerate(accs)],
        }
        for name, accs in accuracies.items()
    }


def test_paired_difference_pairs_runs_by_seed():
    from spikequant.train.ablation import paired_difference

    # The fixed row varies a lot between seeds, ATIF-u is always 0.3 points above it: the
    # unpaired spread hides what pairing resolves.
    fixed = [0.960, 0.972, 0.951, 0.968, 0.975]
    rows = _rows({"mnist-fixed": fixed, "mnist-atif-u": [a + 0.003 for a in fixed]})
    rows["mnist-atif-u"]["runs"][2]["test_accuracy"] += 0.001  # one pair +0.4 points
    paired = paired_difference(rows, "mnist-atif-u")
    assert paired["points_per_seed"] == pytest.approx([0.3, 0.3, 0.4, 0.3, 0.3])
    assert paired["mean_points"] == pytest.approx(0.32)
    assert paired["std_points"] == pytest.approx(0.04472136, rel=1e-6)
    # t_{0.975, 4} = 2.776445
    assert paired["ci95_half_width_points"] == pytest.approx(2.776445 * 0.04472136 / 5**0.5, 1e-5)
    assert paired["resolved"] and (paired["wins"], paired["losses"]) == (5, 0)

    noisy = _rows({"mnist-fixed": fixed, "mnist-atif-u": [0.962, 0.970, 0.955, 0.966, 0.975]})
    paired = paired_difference(noisy, "mnist-atif-u")
    assert paired["mean_points"] == pytest.approx(0.04)
    assert not paired["resolved"] and (paired["wins"], paired["losses"]) == (2, 2)
    single = paired_difference(
        _rows({"mnist-fixed": [0.9], "mnist-atif-u": [0.95]}), "mnist-atif-u"
    )
    assert single["seeds"] == 1 and not single["resolved"]


def test_sweep_runs_each_setting_and_reports_paired_differences(tmp_path, capsys):
    code = main(
        [
            "ablation",
            "--sweep",
            "--settings",
            "adam-narrow",
            "--seeds",
            "0",
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "results"),
            "--no-progress",
            "--json",
            "--set",
            "data.train_subset=300",
            "--set",
            "data.test_subset=200",
            "--set",
            "train.epochs=1",
        ]
    )
    assert code == 0
    sweep = json.loads((tmp_path / "results" / "atif_ablation_sweep.json").read_text())
    (setting,) = sweep["settings"]
    assert setting["name"] == "adam-narrow"
    summary = setting["summary"]
    # the setting's own overrides reach the recipe, the command line's come after them
    assert summary["setup"]["model_kwargs"] == {"norm": True, "widths": [8, 16], "hidden": 32}
    assert summary["setup"]["epochs"] == 1 and summary["setup"]["optim"]["name"] == "adam"
    assert (tmp_path / "runs" / "adam-narrow" / "mnist-atif-u-seed0" / "latest.json").is_file()
    paired = summary["checks"]["atif_u_paired"]
    rows = summary["rows"]
    assert paired["points_per_seed"] == pytest.approx(
        [100 * (rows["mnist-atif-u"]["accuracy_mean"] - rows["mnist-fixed"]["accuracy_mean"])]
    )
    md = (tmp_path / "results" / "atif_ablation_sweep.md").read_text()
    assert "| `adam-narrow` |" in md and "model.kwargs.widths=[8,16]" in md
    capsys.readouterr()
    assert main(["ablation", "--sweep", "--settings", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown sweep setting" in capsys.readouterr().err
    assert main(["ablation", "--settings", "adam"]) == 2


def test_spiking_rows_start_as_the_same_network():
    """Like-for-like: with one seed the fixed, ATIF-u and ATIF-nu rows start from identical weights
    and compute the identical function (V_th = 1, ATIF-nu levels 1, 3/4, 1/2, 1/4 give a threshold
    of 1 at every step and spikes of value 1), so training is the only difference."""
    import torch
    from spikequant.train.runner import build_model

    from spikequant.config import load_recipe
    from spikequant.data import load_arrays
    from spikequant.neurons import reset_state
    from spikequant.train.ablation import SPIKING
    from spikequant.train.recipe import validate_recipe

    x, _ = load_arrays("mnist5k", "test")
    outputs, weights = [], []
    for recipe in SPIKING:
        cfg = validate_recipe(load_recipe(recipe, ["seed=3"]))
        torch.manual_seed(cfg["seed"])  # as the runner does before building the model
        model, _ = build_model(cfg)
        model.eval()
        reset_state(model)
        with torch.no_grad():
            outputs.append(model(x[:64]))
        weights.append([p.detach() for n, p in model.named_parameters() if p.ndim > 1])
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        neuron_params = {n for n in trainable if "threshold" in n or "raw_increments" in n}
        assert bool(neuron_params) == (recipe != "mnist-fixed"), recipe
    for other_out, other_w in zip(outputs[1:], weights[1:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other_w, strict=True))
        torch.testing.assert_close(other_out, outputs[0], rtol=0, atol=1e-5)
    assert outputs[0].abs().sum() > 0


def test_one_sweep_setting_writes_its_own_table(tmp_path, capsys):
    code = main(
        ["ablation", "--setting", "resnet8", "--seeds", "0", "--runs", str(tmp_path / "runs"),
         "--out", str(tmp_path / "results"), "--no-progress", "--json",
         "--set", "data.train_subset=256", "--set", "data.test_subset=128",
         "--set", "train.epochs=1", "--set", "model.kwargs.width=4"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "results" / "atif_ablation_resnet8.json").read_text())
    assert summary["setup"]["model"] == "resnet8_kws"
    assert summary["setup"]["model_kwargs"]["width"] == 4  # --set applies after the setting
    assert not (tmp_path / "results" / "atif_ablation.json").exists()
    capsys.readouterr()
    assert main(["ablation", "--setting", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown sweep setting" in capsys.readouterr().err
    assert main(["ablation", "--sweep", "--setting", "adam", "--runs", str(tmp_path)]) == 2
