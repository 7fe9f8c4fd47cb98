"""``spikequant deploy`` on a SpQuant checkpoint, then ``spikequant run`` on a real digit."""

from __future__ import annotations

import numpy as np
import torch

from spikequant.cli import main
from spikequant.neurons import reset_state
from spikequant.runtime.format import load_program


def test_deploy_then_run_predicts_like_the_float_model(spquant_run, digits, tmp_path, capsys):
    folder, model = spquant_run
    out = tmp_path / "model.sqrt"
    assert main(["deploy", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    program = load_program(out)
    assert program.content_hash() in printed
    assert "3 pruned channels removed" in printed
    assert program.header["input"]["scale"] == 1 / 255
    x, _ = digits
    with torch.no_grad():
        reset_state(model)
        expected = int(model(x[:1]).mean(0).argmax(1))
        reset_state(model)
    sample = tmp_path / "digit.npy"
    np.save(sample, x[0].numpy())
    assert main(["run", str(out), str(sample), "--repeat", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"prediction {expected}"
    assert lines[2].startswith("latency ") and "peak RSS" in lines[3]


def test_run_refuses_bad_input_with_one_line(spquant_run, tmp_path, capsys):
    folder, _ = spquant_run
    out = tmp_path / "model.sqrt"
    assert main(["deploy", str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 5, 5), np.float32))
    assert main(["run", str(out), str(wrong)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the program's input [1, 28, 28]" in err[0]
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert main(["run", str(out), str(notes)]) == 2
    assert "must be a .npy array or an image" in capsys.readouterr().err
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    out.write_bytes(bytes(data))
    assert main(["run", str(out), str(wrong)]) == 2
    assert "hash mismatch" in capsys.readouterr().err
