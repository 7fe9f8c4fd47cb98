"""``spikequant deploy --emit-c`` of a Ca-LIF program: the one-file C program, compiled with the
host compiler, gives the Ca-LIF reference interpreter's spikes and pool spikes of every layer and
step, its counts after the rounding phase, spike total, logits and prediction, on real digits (the
trained LeNet with power-of-two steps: int64 membranes; with learned steps: __int128) and on
random Ca-LIF programs of both widths."""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.convert import convert, save_converted
from spikequant.quant.qat import QuantReLU
from spikequant.runtime.calif import CaLIFInterpreter
from spikequant.runtime.emit_c import emit_c
from spikequant.runtime.emit_c_calif import emit_c_calif, membrane_bits
from spikequant.runtime.format import Program, load_program
from spikequant.runtime.lower import quantize_input
from spikequant.runtime.lower_calif import lower_calif

from .conftest import LENET, T
from .test_calif import calif_programs, quiet_main

COMPILER = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C compiler (cc)")
DIGITS = 4


def compile_program(program: Program, folder, source: str | None = None) -> str:
    """Compile the emitted file as its header says: C99, or GNU C99 for __int128."""
    path = folder / "model.c"
    path.write_text(source or emit_c(program))
    std = "gnu99" if membrane_bits(program) == 128 else "c99"
    binary = folder / "model"
    result = subprocess.run(
        [COMPILER, "-O1", f"-std={std}", "-Wall", "-Werror", str(path), "-o", str(binary)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return str(binary)


def run_binary(binary: str, pixels: np.ndarray, *flags: str) -> subprocess.CompletedProcess:
    text = " ".join(str(int(v)) for v in pixels.reshape(-1))
    return subprocess.run([binary, *flags], input=text, capture_output=True, text=True)


def parse(stdout: str) -> dict:
    lines = stdout.splitlines()
    out = {
        "prediction": int(lines[0].split()[1]),
        "logits": [int(v) for v in lines[1].split()[1:]],
    }
    for line in lines[2:]:
        words = line.split()
        if words[0] in ("spikes", "pool"):
            signs = np.array(["-0+".index(c) - 1 for c in words[3]], np.int64)
            out[words[0], int(words[1]), int(words[2])] = signs
        elif words[0] in ("counts", "pool_counts"):
            out[words[0], int(words[1])] = np.array(words[2:], np.int64)
        else:
            out[words[0]] = int(words[1])
    return out


def check_against_reference(program: Program, binary: str, pixels: np.ndarray) -> None:
    """``pixels[B, C, H, W]``: every sample through the C program equals the interpreter."""
    logits, trace = CaLIFInterpreter(program).run(pixels, trace=True)
    for b in range(len(pixels)):
        result = run_binary(binary, pixels[b], "--spikes")
        assert result.returncode == 0, result.stderr
        got = parse(result.stdout)
        assert got["logits"] == logits[b].tolist()
        assert got["prediction"] == int(logits[b].argmax())
        assert got["total_spikes"] == int(trace.total_spikes[b])
        pooled = 0
        for index, layer in enumerate(program.layers[:-1]):
            for step in range(program.timesteps):
                expected = trace.spikes[index][step][b].reshape(-1).numpy()
                assert np.array_equal(got["spikes", index, step], expected), (index, step)
                if layer["neuron"]["pool"] > 1:
                    expected = trace.pool_spikes[index][step][b].reshape(-1).numpy()
                    assert np.array_equal(got["pool", index, step], expected), (index, step)
            assert np.array_equal(got["counts", index], trace.counts[index][b].reshape(-1))
            if layer["neuron"]["pool"] > 1:
                counts = trace.pool_counts[pooled][b].reshape(-1)
                assert np.array_equal(got["pool_counts", index], counts)
                pooled += 1


def test_deployed_calif_c_file_equals_the_reference_on_real_digits(lenet, tmp_path):
    model, net, x, _ = lenet
    source = {"method": "qat", "model": {"name": "ann_lenet", "kwargs": LENET}}
    source["dataset"] = "mnist5k"
    save_converted(net, tmp_path / "run", source_model=model, source_meta=source)
    out, c_file = tmp_path / "lenet.sqrt", tmp_path / "lenet.c"
    code, printed, err = quiet_main(
        ["deploy", str(tmp_path / "run"), "--out", str(out), "--emit-c", str(c_file)]
    )
    assert code == 0, err
    assert f"cc -O2 -std=c99 {c_file}" in printed
    program = load_program(out)
    text = c_file.read_text()
    assert text == emit_c(program) and program.content_hash() in text
    # power-of-two steps: the lowering and the emitter's own bound both say 64 bits
    assert program.header["membrane_bits"] == 64 == membrane_bits(program)
    assert "__int128" not in text
    binary = compile_program(program, tmp_path, text)
    pixels = quantize_input(program, x[:DIGITS])
    check_against_reference(program, binary, pixels)
    # one static image of 8-bit pixels: anything else is refused with one line
    for flags, sample in (("--frames",), pixels[0]), ((), pixels[0] + 256), ((), pixels[0, 0, :3]):
        result = run_binary(binary, sample, *flags)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_learned_steps_emit_an_int128_c_file_that_equals_the_reference(lenet, tmp_path):
    model, _, x, _ = lenet
    learned = copy.deepcopy(model)
    for module in learned.modules():
        if isinstance(module, QuantReLU):
            module.power_of_two = False
    program = lower_calif(convert(learned, "calif", timesteps=T), (1, 28, 28))
    assert program.header["membrane_bits"] == 128 == membrane_bits(program)
    text = emit_c_calif(program)
    assert "typedef __int128 wide_t" in text and "-std=gnu99" in text
    binary = compile_program(program, tmp_path, text)
    check_against_reference(program, binary, quantize_input(program, x[DIGITS : 2 * DIGITS]))


@settings(max_examples=10, deadline=None)
@given(calif_programs(), st.integers(0, 2**31 - 1))
def test_calif_c_file_equals_the_reference_on_random_programs(tmp_path_factory, program, seed):
    binary = compile_program(program, tmp_path_factory.mktemp("c"))
    rng = np.random.default_rng(seed)
    shape = program.header["input"]["shape"]
    # dark, saturated and in-between pixels
    pixels = rng.choice([0, 255, *rng.integers(1, 255, 4)], size=(2, *shape)).astype(np.int32)
    check_against_reference(program, binary, pixels)
