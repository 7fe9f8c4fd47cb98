"""The detection study command end to end on a handful of real scenes."""

import json

from spikequant.detection.report import main


def test_detection_report_writes_md_and_json_headed_by_the_command(tmp_path, capsys):
    out = tmp_path / "results"
    argv = [
        "--out",
        str(out),
        "--train-scenes",
        "12",
        "--test-scenes",
        "6",
        "--epochs",
        "1",
        "--timesteps",
        "2",
        "--widths",
        "4",
        "4",
        "4",
        "4",
        "4",
        "--variants",
        "fp_snn",
        "quant_snn",
    ]
    assert main(argv) == 0
    md = (out / "detection_digits.md").read_text()
    doc = json.loads((out / "detection_digits.json").read_text())
    assert md.splitlines()[0] == f"Command: `{doc['command']}`"
    fp, quant = doc["results"]["fp_snn"], doc["results"]["quant_snn"]
    for r in (fp, quant):
        assert 0.0 <= r["map_50"] <= 1.0 and r["synops"] >= 0
        assert r["synops"] == r["synops_monitor"]  # one SynOps definition
    # same neurons: a ternary membrane takes 2 of the 32 bits; 4-bit weights 4 of 32
    assert quant["memory_mb"]["membrane"] * 16 == fp["memory_mb"]["membrane"]
    assert quant["memory_mb"]["weights"] * 8 == fp["memory_mb"]["weights"]
    assert "| fp_snn |" in md and "| quant_snn |" in md


def test_detection_report_refuses_a_file_as_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["--out", str(target), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a folder" in err
