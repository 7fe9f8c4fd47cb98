"""Robustness study and ``spikequant robustness`` on a small trained TTFS network."""

import json

import pytest
import torch

from spikequant.cli import main
from spikequant.config import load_recipe, run_recipe
from spikequant.data import load_arrays
from spikequant.temporal import quantize_symmetric, ttfs_fc
from spikequant.temporal.robustness import accuracy_vs_noise, output_jitter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ttfs_small")
    cfg = load_recipe(
        "ttfs-fc100",
        [
            "data.train_subset=1000",
            "data.test_subset=200",
            "train.epochs=1",
            "model.kwargs.sizes=[784, 40, 10]",
            "method.bits=[32, 8]",
        ],
    )
    run_recipe(cfg, out_dir=out, progress=False)
    return out


def test_robustness_cli_writes_reports(small_checkpoint, tmp_path, capsys):
    code = main(
        [
            "robustness",
            str(small_checkpoint),
            "--device",
            "cpu",
            "--test-limit",
            "200",
            "--bits",
            "32",
            "8",
            "2",
            "--snr",
            "10",
            "40",
            "--jitter",
            "0.02",
            "0.08",
            "--seeds",
            "2",
            "--name",
            "rob",
        ]
    )
    assert code == 0
    reports = small_checkpoint / "reports"  # the run's own folder when --out is not given
    result = json.loads((reports / "rob.json").read_text())
    assert (reports / "rob.png").stat().st_size > 0 and "| bits |" in (
        reports / "rob.md"
    ).read_text()
    assert [r["bits"] for r in result["accuracy_vs_bits"]] == [32, 8, 2]
    by_bits = {r["bits"]: r["accuracy"] for r in result["accuracy_vs_bits"]}
    assert by_bits[32] == pytest.approx(
        result["baseline"]["accuracy"], abs=0.02
    )  # shadow fp weights
    assert by_bits[8] >= by_bits[32] - 0.03
    assert [r["bits"] for r in result["qat_history"]] == [32, 8]
    snr = {r["snr_db"]: r["accuracy"] for r in result["accuracy_vs_snr"]}
    assert snr[40] >= snr[10]
    for row in result["jitter"]:
        assert row["output_jitter"] < row["input_jitter"]  # spec: output jitter < input jitter
    assert result["baseline"]["energy_nJ"] > 0


def test_robustness_cli_rejects_missing_checkpoint(tmp_path, capsys):
    assert main(["robustness", str(tmp_path / "nothing")]) == 2
    assert "error" in capsys.readouterr().err


def test_noise_free_limit_and_jitter_zero():
    torch.manual_seed(0)
    model = ttfs_fc([784, 30, 10])
    X, y = load_arrays("mnist5k", "test")
    X, y = X[:50], y[:50]
    base = (model.predict(model(X)) == y).float().mean().item()
    assert accuracy_vs_noise(model, X, y, snrs=[200], seeds=1)[0]["accuracy"] == pytest.approx(base)
    row = output_jitter(model, X, y, jitters=[0.0])[0]
    assert row["output_jitter"] == 0 and row["input_jitter"] == 0


def test_quantization_snr_follows_six_db_per_bit():
    w = torch.rand(200_000) * 2 - 1  # uniform: SNR ~ 6.02 b - 4.77 + 10 log10(3) ... ~ 6.02 b dB
    for bits in (4, 8):
        q = quantize_symmetric(w, bits)
        snr = 10 * torch.log10(w.pow(2).sum() / (w - q).pow(2).sum()).item()
        assert snr == pytest.approx(6.02 * bits, abs=1.5)
