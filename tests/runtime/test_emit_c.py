"""``spikequant deploy --emit-c``: the program as one dependency-free C99 file, compiled with the
host compiler, gives the reference interpreter's spikes (every layer, every step), logits and
prediction on real digits and on random programs."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.cli import main
from spikequant.errors import ProgramError
from spikequant.runtime.emit_c import emit_c
from spikequant.runtime.format import Program, load_program
from spikequant.runtime.lower import quantize_input
from spikequant.runtime.reference import ReferenceInterpreter

from .test_programs import programs

COMPILER = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C compiler (cc)")


def compile_program(program: Program, folder) -> str:
    source = folder / "model.c"
    source.write_text(emit_c(program))
    binary = folder / "model"
    result = subprocess.run(
        [COMPILER, "-O1", "-std=c99", "-Wall", "-Werror", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return str(binary)


def run_binary(binary: str, codes: np.ndarray, frames: bool) -> tuple[int, list[int], dict]:
    text = " ".join(str(int(v)) for v in codes.reshape(-1))
    flags = ["--spikes"] + (["--frames"] if frames else [])
    out = subprocess.run([binary, *flags], input=text, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    prediction = int(lines[0].split()[1])
    logits = [int(v) for v in lines[1].split()[1:]]
    spikes = {}
    for line in lines[2:]:
        _, layer, step, bits = line.split()
        spikes[int(layer), int(step)] = np.frombuffer(bits.encode(), np.uint8) - ord("0")
    return prediction, logits, spikes


def check_against_reference(program: Program, binary: str, codes: np.ndarray, frames: bool):
    """``codes``: one sample, ``[C, H, W]`` (static) or ``[T, C, H, W]`` (frames)."""
    batch = torch.from_numpy(codes[:, None] if frames else codes[None]).to(torch.int64)
    logits, trace = ReferenceInterpreter(program).run(batch, trace=True)
    prediction, c_logits, spikes = run_binary(binary, codes, frames)
    assert c_logits == logits[0].tolist()
    assert prediction == int(logits[0].argmax())
    for index, layer in enumerate(program.layers):
        if layer["neuron"] is None:
            continue
        for step, expected in enumerate(trace.spikes[index]):
            assert np.array_equal(spikes[index, step], expected[0].reshape(-1).numpy())


def test_deployed_c_file_equals_the_reference_on_real_digits(spquant_run, digits, tmp_path):
    folder, _ = spquant_run
    out, source = tmp_path / "model.sqrt", tmp_path / "model.c"
    assert main(["deploy", str(folder), "--out", str(out), "--emit-c", str(source)]) == 0
    program = load_program(out)
    assert source.read_text() == emit_c(program)
    binary = compile_program(program, tmp_path)
    x, _ = digits
    codes = quantize_input(program, x[:3])
    for sample in codes:  # spatial pruning, statically removed channels, ternary weights
        check_against_reference(program, binary, sample, frames=False)


@settings(max_examples=6, deadline=None)
@given(programs(), st.integers(0, 2**31 - 1))
def test_c_file_equals_the_reference_on_random_programs(tmp_path_factory, program, seed):
    folder = tmp_path_factory.mktemp("c")
    binary = compile_program(program, folder)
    spec = program.header["input"]
    rng = np.random.default_rng(seed)
    frames = bool(seed % 2)
    lead = (program.timesteps,) if frames else ()
    codes = rng.integers(0, spec["code_max"] + 1, size=(*lead, *spec["shape"])).astype(np.int32)
    check_against_reference(program, binary, codes, frames)


def test_programs_of_unknown_kind_are_refused():
    program = Program({"kind": "other", "layers": [], "input": {}, "timesteps": 1}, {})
    with pytest.raises(ProgramError, match="cannot write a program of kind 'other'"):
        emit_c(program)
