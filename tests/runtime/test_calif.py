"""Ca-LIF programs: a converted Ca-LIF LeNet (4-bit QAT, power-of-two steps, trained briefly on
real digits) lowered to integers gives the float network's spikes of every step, its integer
activations, spike count, logits and predictions exactly, in the reference interpreter and the
C++ engine; ``deploy`` / ``run`` / ``eval`` agree on the saved run; random Ca-LIF programs run
the same in both interpreters; what cannot be lowered is refused with one line."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikequant.cli import main
from spikequant.convert import convert, save_converted
from spikequant.convert.calif import pixels_from_unit
from spikequant.errors import ProgramError
from spikequant.quant.qat import QuantConv1d, QuantInput, QuantLinear, QuantReLU
from spikequant.registry import create_model
from spikequant.runtime import format as program_format
from spikequant.runtime.format import Program, load_program, save_program
from spikequant.runtime.lower import lower_model, quantize_input
from spikequant.runtime.lower_calif import lower_calif
from spikequant.runtime.native import NativeRuntime
from spikequant.runtime.reference import ReferenceInterpreter

from .conftest import LENET, T

EVAL_SAMPLES = 8  # spikequant eval simulates the float network once more


@pytest.fixture(scope="module")
def simulated(lenet):
    """The float network's per-step spikes (hooks on its neurons), codes and read-out."""
    _, net, x, _ = lenet
    steps: dict[str, tuple[list, list]] = {}
    handles = []
    for name, block in net.stages().items():
        steps[name] = ([], [])
        handles.append(
            block.neuron.register_forward_hook(
                lambda m, a, out, n=name: steps[n][0].append(out[0].clone())
            )
        )
        if block.pool_neuron is not None:
            handles.append(
                block.pool_neuron.register_forward_hook(
                    lambda m, a, out, n=name: steps[n][1].append(out[0].clone())
                )
            )
    try:
        result = net.simulate(x, [T])[T]
    finally:
        for h in handles:
            h.remove()
    return result, steps, net.codes()


def _assert_engine_counts_equal_trace(native, program, trace):
    """Every hidden layer's spike counts, pool-neuron counts and the spike total of the C++
    engine equal the reference interpreter's trace."""
    pooled = 0
    for index, layer in enumerate(program.layers[:-1]):
        counts, pool_counts, spikes = native.counts(index)
        assert np.array_equal(counts, trace.counts[index].numpy())
        if layer["neuron"]["pool"] > 1:
            assert np.array_equal(pool_counts, trace.pool_counts[pooled].numpy())
            pooled += 1
        assert np.array_equal(spikes, trace.total_spikes.numpy())


def test_program_reproduces_the_float_network_exactly(lenet, simulated):
    _, net, x, y = lenet
    result, steps, codes = simulated
    program = lower_calif(net, (1, 28, 28))
    assert program.kind == "calif" and program.timesteps == T
    assert program.header["input"] == {
        "shape": [1, 28, 28], "kind": "isi", "scale": 1 / 255, "code_max": 255, "budget": T
    }  # fmt: skip
    assert [layer["neuron"]["pool"] for layer in program.layers[:-1]] == [2, 2, 1, 1]
    pixels = quantize_input(program, x)
    assert np.array_equal(pixels, pixels_from_unit(x).numpy())
    logits, trace = ReferenceInterpreter(program).run(pixels, trace=True)
    pooled = 0
    for index, (name, (pre, post)) in enumerate(codes.items()):
        assert len(trace.spikes[index]) == T == len(steps[name][0])
        for ours, theirs in zip(trace.spikes[index], steps[name][0], strict=True):
            assert torch.equal(ours.double(), theirs), (name, "spikes")
        for ours, theirs in zip(trace.pool_spikes[index], steps[name][1], strict=True):
            assert torch.equal(ours.double(), theirs), (name, "pool spikes")
        assert torch.equal(trace.counts[index].double(), pre), name
        if post is not pre:
            assert torch.equal(trace.pool_counts[pooled].double(), post), name
            pooled += 1
    assert int(trace.total_spikes.sum()) == result["spikes"]
    # every float64 sum of the network is exact here: the integer logits are its logits
    unit = program.header["logit_unit"]
    assert torch.equal(logits.double() * unit, result["logits"])
    assert torch.equal(logits.argmax(1), result["logits"].argmax(1))
    assert (logits.argmax(1) == y).float().mean() > 0.3  # trained briefly, but not noise

    native = NativeRuntime(program, batch=len(x), threads=2)
    assert np.array_equal(native.run(pixels), logits.numpy())
    _assert_engine_counts_equal_trace(native, program, trace)
    with pytest.raises(ProgramError, match="no streaming mode"):
        native.step(pixels)


def test_learned_steps_need_128_bit_membranes_and_still_agree(lenet):
    """With the learned float32 steps (not powers of two) the exact membranes need ~80 bits:
    the program keeps them in 128 bits; the float network rounds its float64 sums, so only
    near-ties could differ; on these digits nothing does."""
    import copy

    model, _, x, _ = lenet
    learned = copy.deepcopy(model)
    for module in learned.modules():
        if isinstance(module, QuantReLU):
            module.power_of_two = False
    net = convert(learned, "calif", timesteps=T)
    program = lower_calif(net, (1, 28, 28))
    assert program.header["membrane_bits"] == 128
    result = net.simulate(x, [T])[T]
    pixels = quantize_input(program, x)
    logits, trace = ReferenceInterpreter(program).run(pixels, trace=True)
    for index, (pre, _) in enumerate(net.codes().values()):
        assert torch.equal(trace.counts[index].double(), pre)
    assert torch.equal(logits.argmax(1), result["logits"].argmax(1))
    unit = program.header["logit_unit"]
    torch.testing.assert_close(logits.double() * unit, result["logits"], rtol=1e-12, atol=0)
    assert np.array_equal(NativeRuntime(program, batch=len(x)).run(pixels), logits.numpy())


def quiet_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_deploy_run_and_eval_of_a_saved_calif_run_agree(lenet, simulated, tmp_path):
    model, net, x, y = lenet
    result, _, _ = simulated
    source = {"method": "qat", "model": {"name": "ann_lenet", "kwargs": LENET}}
    source["dataset"] = "mnist5k"
    save_converted(net, tmp_path / "run", source_model=model, source_meta=source)
    out = tmp_path / "lenet.sqrt"
    code, printed, err = quiet_main(["deploy", str(tmp_path / "run"), "--out", str(out)])
    assert code == 0, err
    program = load_program(out)
    assert program.content_hash() in printed and "Ca-LIF program" in printed
    # the deployed program's accuracy is the converted network's evaluation, digit for digit
    predictions = NativeRuntime(program, batch=len(x)).run(quantize_input(program, x)).argmax(1)
    assert np.array_equal(predictions, result["logits"].argmax(1).numpy())
    code, printed, err = quiet_main(
        ["eval", str(tmp_path / "run"), "--subset", str(EVAL_SAMPLES), "--json"]
    )
    assert code == 0, err
    right = predictions[:EVAL_SAMPLES] == y[:EVAL_SAMPLES].numpy()
    assert json.loads(printed)["accuracy"] == float(right.mean())
    sample = tmp_path / "digit.npy"
    np.save(sample, x[3].numpy())
    code, printed, err = quiet_main(["run", str(out), str(sample), "--repeat", "1"])
    assert code == 0, err
    assert printed.splitlines()[0] == f"prediction {int(predictions[3])}"
    frames = tmp_path / "frames.npy"
    np.save(frames, np.zeros((T, 1, 28, 28), np.float32))
    code, _, err = quiet_main(["run", str(out), str(frames)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "static image" in err
    code, _, err = quiet_main(
        ["deploy", str(tmp_path / "run"), "--out", str(tmp_path / "x.sqrt"), "--code-max", "9"]
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--code-max" in err
    assert not (tmp_path / "x.sqrt").exists()


# ------------------------------------------------------------------ random programs
def random_calif_program(draw) -> Program:
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    timesteps = draw(st.integers(1, 6))
    budget = draw(st.integers(1, timesteps))
    channels, size = draw(st.integers(1, 2)), draw(st.integers(4, 8))
    shape = [channels, size, size]
    n_conv, n_linear = draw(st.integers(0, 2)), draw(st.integers(0, 1))
    big = draw(st.booleans())  # membranes and logits beyond 64 bits (learned float32 steps)
    layers, tensors = [], {}
    total = n_conv + n_linear + 1
    for index in range(total):
        readout = index == total - 1
        conv = index < n_conv
        if conv:
            k = draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 2]))
            pad = k // 2
            full = [
                draw(st.integers(1, 4)),
                (shape[1] + 2 * pad - k) // stride + 1,
                (shape[2] + 2 * pad - k) // stride + 1,
            ]
            fan_in = shape[0] * k * k
        else:
            if len(shape) == 3:
                shape = [int(np.prod(shape))]
            k, stride, pad = 1, 1, 0
            full, fan_in = [draw(st.integers(2, 5))], shape[0]
        wide = draw(st.booleans())
        bound = 2**20 if wide else 8
        levels = rng.integers(-bound, bound + 1, size=(full[0], fan_in))
        if wide:
            levels[0, 0] = bound  # int32 storage
        weight = levels.reshape(full[0], shape[0], k, k) if conv else levels
        tensors[f"layers.{index}.weight"] = weight.astype(np.int32 if wide else np.int8)
        tensors[f"layers.{index}.multiplier"] = (
            rng.integers(-(2**40), 2**40, full[0]) if big else rng.integers(-3, 9, full[0])
        )
        tensors[f"layers.{index}.offset"] = rng.integers(-40, 41, full[0]) * (2**40 if big else 1)
        pool = 1
        if conv and not readout and min(full[1:]) >= 2 and draw(st.booleans()):
            pool = 2
        out = [full[0], full[1] // pool, full[2] // pool] if pool > 1 else full
        layer = {
            "name": f"l{index}",
            "op": "conv" if conv else "linear",
            "in_shape": list(shape),
            "pool": 1,
            "out_shape": out,
            "kernel": k,
            "stride": stride,
            "padding": pad,
            "weight_bits": 32 if wide else 8,
            "weight_encoding": "int32" if wide else "int8",
            "removed_channels": [],
            "neuron": None,
        }
        if not readout:
            scale = bound if wide else 1
            tensors[f"layers.{index}.threshold"] = (
                rng.integers(1, 2**62, full[0]) if big else rng.integers(1, 12 * scale, full[0])
            )
            tensors[f"layers.{index}.offset"] *= 1 if big else scale
            layer["neuron"] = {
                "kind": "calif",
                "qmax": draw(st.sampled_from([None, 1, 3, 7])),
                "gate": draw(st.booleans()),
                "tie": draw(st.sampled_from(["up", "down"])),
                "pool": pool,
                "input_units": index == 0,
            }
        if readout:
            layer["logit_shift"] = 20 if big else draw(st.integers(0, 2))
        layers.append(layer)
        shape = out
    header = {
        "kind": "calif",
        "timesteps": timesteps,
        "num_classes": shape[0],
        "logit_unit": 1.0,
        "membrane_bits": 128 if big else 64,
        "input": {
            "shape": [channels, size, size], "kind": "isi", "scale": 1 / 255, "code_max": 255,
            "budget": budget,
        },
        "layers": layers,
        "source": {},
    }  # fmt: skip
    return Program(header, {k: np.asarray(v) for k, v in tensors.items()})


@st.composite
def calif_programs(draw):
    return random_calif_program(draw)


@settings(max_examples=40, deadline=None)
@given(calif_programs(), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_native_equals_reference_on_random_calif_programs(program, batch, seed):
    rng = np.random.default_rng(seed)
    shape = program.header["input"]["shape"]
    # dark, saturated and in-between pixels
    pixels = rng.choice([0, 255, *rng.integers(1, 255, 4)], size=(batch, *shape)).astype(np.int32)
    logits, trace = ReferenceInterpreter(program).run(pixels, trace=True)
    native = NativeRuntime(program, batch=batch)
    assert np.array_equal(native.run(pixels), logits.numpy())
    _assert_engine_counts_equal_trace(native, program, trace)
    for index, layer in enumerate(program.layers[:-1]):
        qmax = layer["neuron"]["qmax"]
        if layer["neuron"]["gate"]:
            assert trace.counts[index].min() >= 0  # the gate: no count below zero
        if qmax is not None:
            assert trace.counts[index].max() <= qmax


@settings(max_examples=3, deadline=None)
@given(calif_programs())
def test_calif_program_file_round_trips_and_old_files_load(tmp_path_factory, program):
    folder = tmp_path_factory.mktemp("p")
    digest = save_program(program, folder / "calif.sqrt")
    loaded = load_program(folder / "calif.sqrt")
    assert loaded.kind == "calif" and loaded.content_hash() == digest
    assert save_program(loaded, folder / "again.sqrt") == digest
    for name, array in program.tensors.items():
        assert np.array_equal(loaded.tensors[name], array) and loaded.tensors[name].dtype == (
            array.dtype
        )


def test_version_1_files_still_load(tmp_path, monkeypatch):
    program = Program(
        {
            "timesteps": 1,
            "num_classes": 2,
            "input": {"shape": [1, 1, 2], "kind": "spikes", "scale": 1.0, "code_max": 1},
            "layers": [
                {
                    "name": "fc", "op": "linear", "in_shape": [1, 1, 2], "pool": 1,
                    "out_shape": [2],
                    "kernel": 1, "stride": 1, "padding": 0, "weight_bits": 4,
                    "weight_encoding": "int8", "frac_bits": 8, "shift": 0,
                    "removed_channels": [], "neuron": None,
                }
            ],
            "source": {},
        },
        {
            "layers.0.weight": np.array([[1, -1], [2, 0]], np.int8),
            "layers.0.multiplier": np.array([3, 1], np.int64),
            "layers.0.offset": np.array([0, 5], np.int64),
        },
    )  # fmt: skip
    monkeypatch.setattr(program_format, "FORMAT_VERSION", 1)
    save_program(program, tmp_path / "v1.sqrt")
    monkeypatch.undo()
    loaded = load_program(tmp_path / "v1.sqrt")
    assert loaded.kind == "qlif"
    logits = ReferenceInterpreter(loaded).run(torch.tensor([[[[1, 1]]]]))
    assert logits.tolist() == [[0, 7]]


# ------------------------------------------------------------------ refusals
def _refusal(net, match: str) -> None:
    with pytest.raises(ProgramError, match=match) as info:
        lower_calif(net, net.info.get("shape", (4,)))
    assert "\n" not in str(info.value)


def test_what_cannot_be_lowered_is_refused_with_one_line_naming_the_layer():
    torch.manual_seed(0)
    no_hidden = nn.Sequential(QuantInput(), nn.Flatten(), QuantLinear(4, 2)).eval()
    _refusal(convert(no_hidden, "calif", timesteps=4), "without a hidden layer")

    residual = create_model("ann_cnn", width=2, qat=True, bits=4, bn=False, residual=True)
    net = convert(residual.eval(), "calif", timesteps=4)
    net.info["shape"] = (1, 28, 28)
    _refusal(net, r"'add.*residual add or a branch")

    conv1d = nn.Sequential(
        QuantInput(), QuantConv1d(1, 2, 3), QuantReLU(4), nn.Flatten(), QuantLinear(8, 2)
    ).eval()
    net = convert(conv1d, "calif", timesteps=4)
    net.info["shape"] = (1, 6)
    _refusal(net, "'1'.*cannot lower Conv1d")

    with pytest.raises(ProgramError, match="lower_calif"):
        lower_model(convert(create_model("ann_mlp", qat=True, bits=4, hidden=[4]).eval(), "calif"))
    with pytest.raises(ProgramError, match="not a spiking network"):
        lower_model(create_model("ann_mlp", qat=True, bits=4, hidden=[4]).eval())


def test_deploy_refuses_an_unlowerable_calif_run_with_one_line(tmp_path):
    torch.manual_seed(0)
    kwargs = {"qat": True, "bits": 4, "hidden": []}  # no hidden layer: read-out fed by input
    model = create_model("ann_mlp", **kwargs).eval()
    net = convert(model, "calif", timesteps=4)
    source = {"method": "qat", "model": {"name": "ann_mlp", "kwargs": kwargs}}
    source["dataset"] = "mnist5k"
    save_converted(net, tmp_path / "run", source_model=model, source_meta=source)
    code, _, err = quiet_main(["deploy", str(tmp_path / "run"), "--out", str(tmp_path / "m.sqrt")])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "without a hidden layer" in lines[0], err
    assert not (tmp_path / "m.sqrt").exists()
