"""Random small integer programs: the C++ runtime equals the reference interpreter bit for bit;
the program file round-trips and refuses corrupt or foreign content."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.errors import ProgramError
from spikequant.runtime.format import (
    Program,
    load_program,
    pack_ternary,
    save_program,
    unpack_ternary,
)
from spikequant.runtime.native import NativeRuntime
from spikequant.runtime.reference import ReferenceInterpreter

WIDE = [9, 12, 16, 17, 32, 40, 64]


def random_program(draw, wide: bool = False) -> Program:
    """``wide``: layers of 9 to 64 channels (the engine's register-block widths 16, 32, 64 and
    the general path for other widths) instead of 1 to 7."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    analog = draw(st.booleans())
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(4, 9))
    shape = [channels, size, size]
    header_layers, tensors = [], {}
    n_conv = 2 if wide else draw(st.integers(1, 2))  # wide: the second conv is event-driven
    n_linear = draw(st.integers(0, 1))
    total = n_conv + n_linear + 1
    for index in range(total):
        readout = index == total - 1
        conv = index < n_conv
        spatial = len(shape) == 3 and min(shape[1:]) >= 4
        pool = 2 if (index > 0 and spatial and draw(st.booleans())) else 1
        if conv:
            k = draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 2]))
            pad = k // 2
            h, w = shape[1] // pool, shape[2] // pool
            out = [
                draw(st.sampled_from(WIDE) if wide else st.integers(1, 6)),
                (h + 2 * pad - k) // stride + 1,
                (w + 2 * pad - k) // stride + 1,
            ]
            fan_in = shape[0] * k * k
        else:
            k, stride, pad = 1, 1, 0
            fan_in = (
                shape[0] if len(shape) == 1 else shape[0] * (shape[1] // pool) * (shape[2] // pool)
            )
            out = [draw(st.sampled_from(WIDE) if wide and not readout else st.integers(2, 7))]
        ternary = wide or draw(st.booleans())  # the width-specialised paths are ternary
        levels = (
            rng.integers(-1, 2, size=(out[0], fan_in))
            if ternary
            else rng.integers(-8, 9, size=(out[0], fan_in))
        )
        frac = draw(st.integers(4, 20))
        shift = draw(st.integers(1, 6)) if not readout else 0
        layer = {
            "name": f"l{index}",
            "op": "conv" if conv else "linear",
            "in_shape": list(shape),
            "pool": pool,
            "out_shape": out,
            "kernel": k,
            "stride": stride,
            "padding": pad,
            "weight_bits": 2 if ternary else 4,
            "weight_encoding": "ternary2" if ternary else "int8",
            "frac_bits": frac,
            "shift": shift,
            "removed_channels": [],
            "neuron": None,
        }
        weight = levels.reshape(out[0], shape[0], k, k) if conv else levels
        tensors[f"layers.{index}.weight"] = (
            pack_ternary(weight) if ternary else weight.astype(np.int8)
        )
        unit = 2 ** (frac + shift)
        tensors[f"layers.{index}.multiplier"] = rng.integers(-unit // 4, unit, out[0])
        tensors[f"layers.{index}.offset"] = rng.integers(-unit, unit, out[0])
        if not readout:
            lo = -draw(st.integers(0, 3))
            hi = draw(st.integers(1, 3))
            drop = 0
            if conv and draw(st.booleans()):
                drop = draw(st.integers(0, out[1] * out[2] - 1))
            layer["neuron"] = {
                "leak_shift": draw(st.integers(1, 3)),
                "levels": [lo, hi],
                "binary_membrane": draw(st.booleans()),
                "spatial_drop": drop,
            }
            tensors[f"layers.{index}.threshold"] = rng.integers(1, 3 * 2 ** (frac + 1), out[0])
        header_layers.append(layer)
        shape = out
    header = {
        "timesteps": draw(st.integers(1, 4)),
        "num_classes": shape[0],
        "input": {
            "shape": [channels, size, size],
            "kind": "analog" if analog else "spikes",
            "scale": 1 / 255 if analog else 1.0,
            "code_max": 255 if analog else 1,
        },
        "layers": header_layers,
        "source": {},
    }
    return Program(header, {k: np.asarray(v) for k, v in tensors.items()})


@st.composite
def programs(draw):
    return random_program(draw)


@st.composite
def wide_programs(draw):
    return random_program(draw, wide=True)


@settings(max_examples=40, deadline=None)
@given(programs(), st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_native_equals_reference_on_random_programs(program, batch, frames, seed):
    check_native_equals_reference(program, batch, frames, seed)


@settings(max_examples=40, deadline=None)
@given(wide_programs(), st.integers(1, 2), st.booleans(), st.integers(0, 2**31 - 1))
def test_native_equals_reference_on_wide_programs(program, batch, frames, seed):
    check_native_equals_reference(program, batch, frames, seed)


def check_native_equals_reference(program, batch, frames, seed):
    rng = np.random.default_rng(seed)
    spec = program.header["input"]
    steps = program.timesteps
    lead = (steps, batch) if frames else (batch,)
    codes = rng.integers(0, spec["code_max"] + 1, size=(*lead, *spec["shape"])).astype(np.int32)
    logits, trace = ReferenceInterpreter(program).run(torch.from_numpy(codes), trace=True)
    native = NativeRuntime(program, batch=batch)
    assert np.array_equal(native.run(codes), logits.numpy())
    for index, layer in enumerate(program.layers):
        if layer["neuron"] is not None:
            spikes, membranes = native.trace(index)
            assert np.array_equal(spikes, trace.spikes[index][-1].numpy())
            assert np.array_equal(membranes, trace.membranes[index][-1].numpy())
    # streaming: one step per call, state kept between calls
    native.reset()
    total = sum(native.step(codes[t] if frames else codes) for t in range(steps))
    assert np.array_equal(total, logits.numpy())


@given(st.lists(st.integers(-1, 1), max_size=50))
def test_ternary_packing_round_trips(values):
    levels = np.array(values, dtype=np.int8)
    packed = pack_ternary(levels)
    assert packed.nbytes == (len(values) + 3) // 4
    assert np.array_equal(unpack_ternary(packed, len(values)), levels)


@settings(max_examples=5, deadline=None)
@given(programs())
def test_program_file_round_trips_and_detects_corruption(tmp_path_factory, program):
    path = tmp_path_factory.mktemp("p") / "model.sqrt"
    digest = save_program(program, path)
    loaded = load_program(path)
    assert loaded.content_hash() != "" and digest == save_program(loaded, path)
    assert sorted(loaded.tensors) == sorted(program.tensors)
    for name, array in program.tensors.items():
        assert np.array_equal(loaded.tensors[name], array)
    # flip one byte of the tensor data (the end of the file): the hash check refuses it
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ProgramError, match="hash mismatch"):
        load_program(path)


def test_unknown_version_and_foreign_files_are_refused(tmp_path):
    from safetensors.numpy import save

    foreign = tmp_path / "foreign.sqrt"
    foreign.write_bytes(save({"x": np.zeros(2, np.int8)}, metadata={"format_version": "1"}))
    with pytest.raises(ProgramError, match="no spikequant program header"):
        load_program(foreign)
    future = tmp_path / "future.sqrt"
    future.write_bytes(
        save(
            {"x": np.zeros(2, np.int8)},
            metadata={"spikequant_program": "{}", "format_version": "99"},
        )
    )
    with pytest.raises(ProgramError, match="version '99'"):
        load_program(future)
    text = tmp_path / "text.sqrt"
    text.write_text("not a program")
    with pytest.raises(ProgramError, match="not a safetensors program"):
        load_program(text)
