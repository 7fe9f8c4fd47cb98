import json

import pytest

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
