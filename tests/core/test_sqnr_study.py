import json

import pytest
import torch

from spikequant.analysis.sqnr import SQNRConfig, run_sqnr_study
from spikequant.cli import main
from spikequant.errors import ConfigError


@pytest.fixture(scope="module")
def study():
    return run_sqnr_study(SQNRConfig(iterations=3000, eval_samples=400_000, eval_every=500))


def test_atif_u_beats_fixed_threshold_by_10_db_and_finds_the_optimum(study):
    assert study["atif_u"]["sqnr_db"] - study["fixed"]["sqnr_db"] > 10
    assert study["best_fixed_grid"]["sqnr_db"] - study["atif_u"]["sqnr_db"] <= 0.3
    # the learned threshold lands near 2 sigma (the paper: it approaches the input's std)
    assert 1.5 < study["atif_u"]["vth_over_sigma"] < 2.5


def test_fixed_threshold_needs_many_more_timesteps(study):
    assert study["fixed_t_to_match"] >= 16


def test_atif_nu_gains_over_atif_u(study):
    assert study["atif_nu"]["gain_over_atif_u_db"] >= 1.5
    levels = study["atif_nu"]["levels"]
    assert all(a > b for a, b in zip(levels, levels[1:], strict=False))


def test_cli_json_and_files(tmp_path, capsys):
    rc = main(
        ["sqnr", "--iterations", "200", "--eval-samples", "20000", "--out", str(tmp_path)]
        + ["--device", "cpu", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("input_std", "fixed_t_to_match"):
        assert key in out
    assert {"sqnr_db"} <= out["fixed"].keys()
    assert {"sqnr_db", "vth"} <= out["atif_u"].keys()
    assert "sqnr_db" in out["atif_nu"]
    assert (tmp_path / "sqnr.md").read_text().count("ATIF") >= 2
    assert (tmp_path / "sqnr.json").is_file() and (tmp_path / "sqnr.png").stat().st_size > 1000
    assert (tmp_path / "sqnr_quantization.png").stat().st_size > 1000


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["sqnr", "--timesteps", "0", "--out", str(tmp_path)]) == 2
    assert "timesteps" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        SQNRConfig(sigma=float("nan")).validate()


def test_seed_makes_it_deterministic():
    cfg = SQNRConfig(iterations=150, eval_samples=5000, eval_every=50)
    a, b = run_sqnr_study(cfg), run_sqnr_study(cfg)
    assert (
        a["atif_u"]["vth"] == b["atif_u"]["vth"]
        and a["atif_nu"]["levels"] == b["atif_nu"]["levels"]
    )


def test_quantization_curves_of_figures_1_and_2(study):
    """Fig. 1/2 data from the simulated IF neuron: T + 1 levels, a bias shifts the curve, a
    threshold scales it, the error is granular (< V_th / T) up to V_th and overload beyond."""
    q = study["quantization_curves"]
    x = torch.tensor(q["input"])
    base = torch.tensor(q["by_threshold"]["1.0"])
    assert torch.equal(base, torch.tensor(q["by_bias"]["0.0"]))
    assert sorted(set(base.tolist())) == [k / 8 for k in range(9)]  # T + 1 = 9 levels
    expected = torch.clamp(torch.floor(8 * x) / 8, 0, 1)
    assert torch.allclose(base, expected, atol=1e-6)
    shifted = torch.tensor(q["by_bias"]["0.25"])
    assert torch.allclose(shifted, torch.clamp(torch.floor(8 * (x + 0.25)) / 8, 0, 1), atol=1e-6)
    wide = torch.tensor(q["by_threshold"]["1.25"])
    assert wide.max() == pytest.approx(1.25) and (wide[x < 1.2] < 1.25).all()
    assert 0.12 < q["max_granular_error"] < 0.125 + 1e-6
    assert q["max_overload_error"] == pytest.approx(1.0, abs=1e-5)  # x = 2, V_th = 1


def test_threshold_trajectory_of_figure_3b(study):
    its, _, vths = zip(*study["atif_u"]["history"], strict=True)
    assert list(its) == sorted(its) and vths[-1] == pytest.approx(study["atif_u"]["vth"])
    assert vths[0] > vths[-1]  # the threshold decreases from 1 towards the input's spread
