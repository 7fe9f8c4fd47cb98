"""The ATIF ablation end to end on a subset of the bundled digits, through `spikequant ablation`
(an alias of `spikequant study atif-ablation`)."""

import json
import re

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
SPIKING = ("fixed", "atif-u", "atif-nu")


def _runs(report, row):
    return [r for r in report["runs"] if r["row"] == row]


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
    tmp, report = ablation
    assert list(report["summary"]) == ["fixed", "atif-u", "atif-nu", "ann"]
    assert [report["study"]["rows"][r]["recipe"] for r in report["summary"]] == [
        "mnist-fixed", "mnist-atif-u", "mnist-atif-nu", "mnist-ann"
    ]  # fmt: skip
    md = (tmp / "results" / "atif_ablation.md").read_text()
    for label in ("fixed V_th = 1", "ATIF-u", "ATIF-nu", "ANN (ReLU)"):
        assert label in md
    assert "| row | test accuracy % | theta" in md
    # headed by the exact (canonical) command that wrote it
    header = re.sub(r"`OMP_NUM_THREADS=\d+ ", "`", md.splitlines()[2])  # the env var, when set
    assert header.startswith("Written by `spikequant study atif-ablation --seeds 0 ")
    assert report["command"].endswith(f"--out {tmp / 'results'}")


def test_ablation_rows_are_real_trained_networks(ablation):
    _, report = ablation
    summary = report["summary"]
    for name in SPIKING:
        (run,) = _runs(report, name)
        assert run["recipe"]["model"]["timesteps"] == 4
        assert summary[name]["test_accuracy"]["mean"] > 0.6, name  # chance is 0.1
        assert 0 < summary[name]["theta"]["mean"] < 1
        # spikes per neuron over the window is between theta and T * theta (averaging differs)
        assert 0 < summary[name]["spikes_per_neuron"]["mean"] <= 4
    assert _runs(report, "ann")[0]["recipe"]["model"]["timesteps"] == 1
    assert summary["ann"]["theta"] is None
    assert summary["ann"]["test_accuracy"]["mean"] > 0.5  # 26 Adam steps: the ANN starts slower
    fixed = _runs(report, "fixed")[0]["extras"]["trained_thresholds"]
    assert fixed and all(v == 1.0 for v in fixed.values())
    trained = _runs(report, "atif-u")[0]["extras"]["trained_thresholds"]
    assert any(abs(v - 1.0) > 1e-3 for v in trained.values())
    for levels in _runs(report, "atif-nu")[0]["extras"]["trained_thresholds"].values():
        assert len(levels) == 4 and all(a > b > 0 for a, b in zip(levels, levels[1:], strict=False))


def test_ablation_checks_follow_from_the_rows(ablation):
    _, report = ablation
    checks = report["checks"]
    acc = {k: v["test_accuracy"]["mean"] for k, v in report["summary"].items()}
    assert checks["atif_u_beats_fixed"]["pass"] == (acc["atif-u"] > acc["fixed"])
    assert checks["atif_nu_beats_fixed"]["pass"] == (acc["atif-nu"] > acc["fixed"])
    gap = report["comparisons"]["ann_minus_best_spiking"]
    best = gap["base_row"]
    assert acc[best] == max(acc[r] for r in SPIKING)
    assert gap["mean"] == pytest.approx(100 * (acc["ann"] - acc[best]))
    check = checks["best_spiking_within_2_points_of_ann"]
    assert check["pass"] == (check["mean"] <= 2)
    (run,) = _runs(report, "fixed")
    assert run["recipe"]["data"]["train_subset"] == 800 and run["metrics"]["samples"] == 400


def test_render_recomputes_checks_without_training(ablation, capsys):
    tmp, report = ablation
    saved = tmp / "saved.json"
    report["checks"] = {}
    report["stem"] = "saved_ablation"
    saved.write_text(json.dumps(report))
    out = tmp / "rerendered"
    assert main(["ablation", "--render", str(saved), "--out", str(out)]) == 0
    again = json.loads((out / "saved_ablation.json").read_text())
    assert set(again["checks"]) >= {"atif_u_beats_fixed", "atif_nu_beats_fixed_resolved"}
    assert (
        "Re-rendered (no training) by `spikequant study --render"
        in (out / "saved_ablation.md").read_text()
    )
    assert not (out / "atif_ablation.json").exists()  # named after the input, not the command
    assert main(["ablation", "--render", str(tmp / "missing.json")]) == 2
    assert "not a report written by `spikequant study`" in capsys.readouterr().err


def test_resume_reuses_finished_runs_of_the_same_recipe(ablation):
    tmp, report = ablation
    again = tmp / "again"
    args = ["ablation", "--seeds", "0", "--runs", str(tmp / "runs"), "--out", str(again)]
    assert main([*args, "--no-progress", "--resume", *FAST]) == 0
    redo = json.loads((again / "atif_ablation.json").read_text())
    for name, row in report["summary"].items():
        assert redo["summary"][name]["test_accuracy"] == row["test_accuracy"]
        (first,), (second,) = _runs(report, name), _runs(redo, name)
        assert second["reused"] and not first["reused"]
        assert second["metrics"]["train_seconds"] == first["metrics"]["train_seconds"]


def test_paired_difference_pairs_runs_by_seed():
    from spikequant.study.report import compare

    def report(accuracies):
        runs = [
            {"row": row, "seed": s, "metrics": {"test_accuracy": a}, "extras": {}}
            for row, accs in accuracies.items()
            for s, a in enumerate(accs)
        ]
        return {"runs": runs, "seeds": [0, 1, 2, 3, 4][: len(next(iter(accuracies.values())))]}

    spec = {
        "row": "atif-u",
        "base": "fixed",
        "field": "test_accuracy",
        "scale": 100,
        "op": "difference",
    }
    # The fixed row varies a lot between seeds, ATIF-u is always 0.3 points above it: the
    # unpaired spread hides what pairing resolves.
    fixed = [0.960, 0.972, 0.951, 0.968, 0.975]
    u = [a + 0.003 for a in fixed]
    u[2] += 0.001  # one pair +0.4 points
    paired = compare(report({"fixed": fixed, "atif-u": u}), spec)
    assert paired["per_seed"] == pytest.approx([0.3, 0.3, 0.4, 0.3, 0.3])
    assert paired["mean"] == pytest.approx(0.32)
    assert paired["std"] == pytest.approx(0.04472136, rel=1e-6)
    # t_{0.975, 4} = 2.776445
    assert paired["ci95_half_width"] == pytest.approx(2.776445 * 0.04472136 / 5**0.5, 1e-5)
    assert paired["resolved"] and (paired["wins"], paired["losses"]) == (5, 0)

    noisy = report({"fixed": fixed, "atif-u": [0.962, 0.970, 0.955, 0.966, 0.975]})
    paired = compare(noisy, spec)
    assert paired["mean"] == pytest.approx(0.04)
    assert not paired["resolved"] and (paired["wins"], paired["losses"]) == (2, 2)
    single = compare(report({"fixed": [0.9], "atif-u": [0.95]}), spec)
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
    report = setting["report"]
    # the setting's own overrides reach the recipe, the command line's come after them
    (run,) = _runs(report, "atif-u")
    assert run["recipe"]["model"]["kwargs"] == {"norm": True, "widths": [8, 16], "hidden": 32}
    assert run["recipe"]["train"]["epochs"] == 1 and run["recipe"]["optim"]["name"] == "adam"
    assert (tmp_path / "runs" / "seed0").is_dir()
    assert len(list((tmp_path / "runs" / "seed0").glob("atif-u-*/latest.json"))) == 1
    paired = report["comparisons"]["atif_u_minus_fixed"]
    acc = {k: v["test_accuracy"]["mean"] for k, v in report["summary"].items()}
    assert paired["per_seed"] == pytest.approx([100 * (acc["atif-u"] - acc["fixed"])])
    md = (tmp_path / "results" / "atif_ablation_sweep.md").read_text()
    assert "| `adam-narrow` |" in md and "model.kwargs.widths=[8,16]" in md
    capsys.readouterr()
    assert main(["ablation", "--sweep", "--settings", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert main(["ablation", "--settings", "adam"]) == 2


def test_spiking_rows_start_as_the_same_network():
    """Like-for-like: with one seed the fixed, ATIF-u and ATIF-nu rows start from identical weights
    and compute the identical function (V_th = 1, ATIF-nu levels 1, 3/4, 1/2, 1/4 give a threshold
    of 1 at every step and spikes of value 1), so training is the only difference."""
    import torch

    from spikequant.config import load_recipe
    from spikequant.data import load_arrays
    from spikequant.neurons import reset_state
    from spikequant.pipeline import create_method
    from spikequant.study import load_study
    from spikequant.train.recipe import validate_recipe

    x, _ = load_arrays("mnist5k", "test")
    rows = load_study("atif-ablation")["rows"]
    outputs, weights = [], []
    for row in SPIKING:
        recipe = rows[row]["recipe"]
        cfg = validate_recipe(load_recipe(recipe, ["seed=3"]))
        torch.manual_seed(cfg["seed"])  # as the pipeline does before building the model
        model = create_method(cfg).build_model()
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
    report = json.loads((tmp_path / "results" / "atif_ablation_resnet8.json").read_text())
    (run,) = _runs(report, "fixed")
    assert run["recipe"]["model"]["name"] == "resnet8_kws"
    assert run["recipe"]["model"]["kwargs"]["width"] == 4  # --set applies after the setting
    assert not (tmp_path / "results" / "atif_ablation.json").exists()
    capsys.readouterr()
    assert main(["ablation", "--setting", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert main(["ablation", "--sweep", "--setting", "adam", "--runs", str(tmp_path)]) == 2
