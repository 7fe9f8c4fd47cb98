"""``spikequant export``: a checkpoint becomes a NIR file that imports back to the same network."""

import json

import pytest
import torch

import spikequant as sq
from spikequant.checkpoint import save_checkpoint
from spikequant.cli import main
from spikequant.export import from_nir, read_nir
from spikequant.io import command_line


def make_checkpoint(folder, neuron):
    torch.manual_seed(0)
    kwargs = {"neuron": neuron, "input_size": 8, "timesteps": 4}
    model = sq.create_model("cnn_digits", **kwargs)
    save_checkpoint(folder, model.state_dict(), {"model": {"name": "cnn_digits", "kwargs": kwargs}})
    return model


def test_export_writes_a_nir_file_that_imports_to_the_same_outputs(tmp_path, capsys):
    model = make_checkpoint(tmp_path / "ckpt", "lif")
    out = tmp_path / "model.nir"
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [1, 8, 8] and report["output_shape"] == [10]
    assert report["nodes"]["LIF"] == 3 and report["bytes"] == out.stat().st_size
    imported = from_nir(read_nir(out))
    x = torch.rand(5, 1, 8, 8) * 3
    model.eval()
    with torch.no_grad():
        y = model(x)
        y2 = imported(x.unsqueeze(0).expand(4, *x.shape))
    assert torch.allclose(y, y2, atol=1e-4)


def test_input_size_option_and_soft_reset_opt_in(tmp_path, capsys):
    make_checkpoint(tmp_path / "ckpt", "atif_u")
    out = tmp_path / "atif.nir"
    argv = ["export", str(tmp_path / "ckpt"), "--out", str(out), "--input-size", "1,8,8"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'net.1' (ATIFu) with soft reset" in err
    assert not out.exists()
    assert main([*argv, "--soft-reset", "metadata"]) == 0
    assert "input [1, 8, 8]" in capsys.readouterr().out
    assert read_nir(out).nodes["net.1"].metadata["spikequant_reset"] == "subtract"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-size", "1,x"], "--input-size must be comma-separated integers"),
        (["--input-size", "3,8,8"], "does not fit the model"),
        (["--dt", "0"], "dt must be a positive finite number"),
    ],
)
def test_bad_input_exits_with_code_2_and_one_line(tmp_path, capsys, extra, message):
    make_checkpoint(tmp_path / "ckpt", "if_hard")
    code = main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m.nir"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_missing_checkpoint_exits_with_code_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.nir")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err


def test_verify_compares_original_and_round_trip_on_real_digits(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "ckpt", "if_hard")
    argv = [
        "export",
        str(tmp_path / "ckpt"),
        "--out",
        str(tmp_path / "m.nir"),
        "--verify",
        "--dataset",
        "digits8x8",
        "--subset",
        "64",
        "--report",
        "roundtrip",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)["verify"]
    assert report["samples"] == 64 and report["timesteps"] == 4
    assert report["accuracy_original"] == report["accuracy_imported"]
    assert report["prediction_agreement"] == 1.0 and report["spike_agreement"] > 0.999
    assert len(report["layers"]) == 3
    assert report["nir_semantics"]["prediction_agreement"] == 1.0
    reports = tmp_path / "ckpt" / "reports"  # the checkpoint's own folder, not ./docs/results
    saved = json.loads((reports / "roundtrip.json").read_text())
    assert saved["verify"]["layers"] == report["layers"]
    page = (reports / "roundtrip.md").read_text()
    assert "| accuracy, imported |" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.nir"]
    # both files are headed by the command that wrote them
    assert saved["command"] == command_line()
    assert page.startswith(f"Command: `{saved['command']}`")
