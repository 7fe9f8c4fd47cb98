"""Integer runtime vs the float fake-quant PyTorch forward vs a float SNN (fused LIF kernels).

``python -m benchmarks.bench_runtime`` writes ``docs/results/runtime_bench.{md,json}``.

Networks (SpQuant-SNN: 2-bit power-of-two weights, ternary membranes, 35 % spatial pruning,
channel gates, T = 4):

* ``digits``: ``cnn_digits`` on 28x28 MNIST digits (real test digits as inputs). Its weights are
  random (seeded), quantized, with batch-norm statistics from 256 real training digits so that
  the layers spike at realistic rates;
* ``vgg9``: VGG-9 on 2x48x48 binary event frames (random frames, 10 % density), random weights,
  batch-norm statistics from such frames;
* ``calif_lenet``: a 4-bit QAT LeNet (power-of-two steps) trained briefly on 1,024 real digits,
  converted to Ca-LIF neurons at T = 16 and lowered to an exact integer Ca-LIF program (real
  test digits as inputs). Its float counterpart ``float_calif`` is the converted network's own
  float64 simulation (``SpikingNetwork.forward``), which the program reproduces exactly.

Each variant runs in its own fresh process, one thread, so that its peak resident memory (VmHWM)
is its own: ``runtime`` (the C++ engine through ctypes; the process imports numpy and the
runtime's numpy-only modules, never PyTorch), ``fakequant`` (the SpQuant model's float forward
with its weight quantizers, ``torch.no_grad``) and ``float_snn`` (the same architecture with
float weights and the float LIF neuron, fused C++ kernels). Latency is the median wall time of
one whole window (T steps) at batch 1 and at batch 32. The bytes the runtime holds (weights as
held + membranes + spike bitmaps, batch 1) are compared with ``spikequant cost``'s memory model
for 2-bit weights and 2-bit membranes (``w_bits N_w + u_bits N_neurons + N_spikes``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python -m benchmarks.bench_runtime"
SPQ = {
    "weight_bits": 2,
    "weight_alpha": 4.0,
    "weight_rescale": True,
    "learn_threshold": True,
    "spatial_prune": 0.35,
    "channel_gates": True,
}
NETWORKS = {
    "digits": {
        "name": "cnn_digits",
        "kwargs": {"num_classes": 10, "in_channels": 1, "input_size": 28, "timesteps": 4},
    },
    "vgg9": {
        "name": "vgg9",
        "kwargs": {"num_classes": 10, "in_channels": 2, "input_size": 48, "timesteps": 4},
    },
}
REPEATS = {"digits": (30, 5), "vgg9": (3, 1), "calif_lenet": (10, 2)}  # batch 1, batch 32
CALIF_LENET = {"qat": True, "bits": 4, "bn": False, "power_of_two_steps": True}
CALIF_T = 16
VARIANTS = {"calif_lenet": ("runtime", "float_calif")}  # others: runtime, fakequant, float_snn


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# ------------------------------------------------------------------------------ child processes
def _child_runtime(work: Path, net: str, library: str) -> dict:
    """No torch: the runtime modules are loaded without executing spikequant/__init__.py."""
    import numpy as np

    spec = importlib.util.find_spec("spikequant")
    package = types.ModuleType("spikequant")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["spikequant"] = package
    from spikequant.runtime.format import load_program
    from spikequant.runtime.native import NativeRuntime

    program = load_program(work / f"{net}.sqrt")
    inputs = np.load(work / f"{net}_inputs.npy")  # [32, ...] static codes or [T, 32, ...] frames
    static = inputs.ndim == 4
    one = inputs[:1] if static else inputs[:, :1]
    single = NativeRuntime(program, batch=1, library=library)
    batched = NativeRuntime(program, batch=32, library=library)
    baseline = _status_kib("VmRSS")
    r1, r32 = REPEATS[net]
    ms1 = _median_ms(lambda: single.run(one), r1)
    ms32 = _median_ms(lambda: batched.run(inputs), r32)
    return {
        "batch1_ms": ms1,
        "batch32_ms": ms32,
        "peak_rss_kib": _status_kib("VmHWM"),
        "rss_before_run_kib": baseline,
        "held_bytes": single.memory_bytes(),
        "torch_imported": "torch" in sys.modules,
        "predictions": single.run(one).argmax(1).tolist(),
    }


def _child_float_calif(work: Path) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from spikequant.convert import convert
    from spikequant.registry import create_model

    model = create_model("ann_lenet", **CALIF_LENET)
    model.load_state_dict(load_file(str(work / "calif_lenet_state.safetensors")))
    net = convert(model.eval(), "calif", timesteps=CALIF_T)
    floats = torch.from_numpy(np.load(work / "calif_lenet_floats.npy"))
    baseline = _status_kib("VmRSS")
    r1, r32 = REPEATS["calif_lenet"]
    ms1 = _median_ms(lambda: net(floats[:1]), r1)
    ms32 = _median_ms(lambda: net(floats), r32)
    return {
        "batch1_ms": ms1,
        "batch32_ms": ms32,
        "peak_rss_kib": _status_kib("VmHWM"),
        "rss_before_run_kib": baseline,
        "predictions": net(floats[:1]).argmax(1).tolist(),
    }


def _child_torch(work: Path, net: str, kind: str) -> dict:
    import numpy as np
    import torch

    if kind == "float_calif":
        return _child_float_calif(work)
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from spikequant.methods.spquant import spquant_options
    from spikequant.neurons import reset_state
    from spikequant.registry import create_model
    from spikequant.spquant.build import build_spquant_model

    spec = NETWORKS[net]
    if kind == "fakequant":
        model = build_spquant_model(
            {"name": spec["name"], "kwargs": {**spec["kwargs"], **_qlif_kwargs()}},
            spquant_options(**SPQ),
        )
        model.load_state_dict(load_file(str(work / f"{net}_state.safetensors")))
    else:
        torch.manual_seed(0)
        model = create_model(
            spec["name"], **spec["kwargs"], neuron="lif", neuron_kwargs={"backend": "fused"}
        )
    model.eval()
    floats = torch.from_numpy(np.load(work / f"{net}_floats.npy"))
    one = floats[:1] if floats.ndim == 4 else floats[:, :1]

    def forward(x):
        with torch.no_grad():
            reset_state(model)
            out = model(x)
            reset_state(model)
        return out

    baseline = _status_kib("VmRSS")
    r1, r32 = REPEATS[net]
    ms1 = _median_ms(lambda: forward(one), r1)
    ms32 = _median_ms(lambda: forward(floats), r32)
    return {
        "batch1_ms": ms1,
        "batch32_ms": ms32,
        "peak_rss_kib": _status_kib("VmHWM"),
        "rss_before_run_kib": baseline,
        "predictions": forward(one).mean(0).argmax(1).tolist(),
    }


def _qlif_kwargs() -> dict:
    return {"neuron": "qlif", "neuron_kwargs": {"membrane": "ternary", "learn_threshold": True}}


def trained_calif_lenet():
    """The 4-bit QAT LeNet (power-of-two steps) trained briefly on 1,024 real digits, and its
    Ca-LIF conversion at T = 16 (also the runtime tests' Ca-LIF LeNet)."""
    import torch

    from spikequant.convert import convert
    from spikequant.convert.ann import train_epochs
    from spikequant.data import load_arrays
    from spikequant.registry import create_model

    torch.manual_seed(0)
    x, y = load_arrays("mnist5k", "train")
    model = create_model("ann_lenet", **CALIF_LENET)
    train_epochs(
        model,
        x[:1024],
        y[:1024],
        epochs=2,
        lr=0.003,
        batch_size=64,
        cfg={"optimizer": "adam"},
        generator=torch.Generator().manual_seed(0),
    )
    model.eval()
    return model, convert(model, "calif", timesteps=CALIF_T)


# ------------------------------------------------------------------------------------- parent
def _prepare_calif(work: Path) -> dict:
    """Train the 4-bit LeNet briefly, convert it to Ca-LIF, lower and save the program."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from spikequant.data import load_arrays
    from spikequant.runtime.format import save_program
    from spikequant.runtime.lower import quantize_input
    from spikequant.runtime.lower_calif import lower_calif

    model, net = trained_calif_lenet()
    program = lower_calif(net, (1, 28, 28))
    save_program(program, work / "calif_lenet.sqrt")
    floats = load_arrays("mnist5k", "test")[0][:32]
    np.save(work / "calif_lenet_inputs.npy", quantize_input(program, floats))
    np.save(work / "calif_lenet_floats.npy", floats.numpy())
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(work / "calif_lenet_state.safetensors"),
    )
    with torch.no_grad():
        expected = net(floats[:1]).argmax(1)
    from spikequant.runtime.native import _pre_pool

    spiking = sum(  # Ca-LIF neurons and pool neurons
        int(np.prod(_pre_pool(layer)))
        + (int(np.prod(layer["out_shape"])) if layer["neuron"]["pool"] > 1 else 0)
        for layer in program.layers
        if layer["neuron"]
    )
    return {
        "weights": sum(int(np.prod(program.weight(i).shape)) for i in range(len(program.layers))),
        "neurons": spiking,
        "removed_channels": 0,
        "program_weight_bytes": program.weight_bytes(),
        "int32_layers": sum(layer["weight_encoding"] == "int32" for layer in program.layers),
        "timesteps": CALIF_T,
        "fakequant_prediction": expected.tolist(),  # the float Ca-LIF network's
    }


def _prepare(work: Path, net: str) -> dict:
    """Build, calibrate, lower and save one network; returns cost's memory prediction."""
    if net == "calif_lenet":
        return _prepare_calif(work)
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from spikequant.cost import model_cost
    from spikequant.methods.spquant import spquant_options
    from spikequant.neurons import reset_state
    from spikequant.runtime.format import save_program
    from spikequant.runtime.lower import lower_model, quantize_input
    from spikequant.spquant.build import build_spquant_model

    torch.manual_seed(0)
    spec = NETWORKS[net]
    model = build_spquant_model(
        {"name": spec["name"], "kwargs": {**spec["kwargs"], **_qlif_kwargs()}},
        spquant_options(**SPQ),
    )
    timesteps = spec["kwargs"]["timesteps"]
    if net == "digits":
        from spikequant.data import get_dataset

        train, test = get_dataset("mnist5k", "train"), get_dataset("mnist5k", "test")
        calibration = torch.stack([train[i][0] for i in range(256)])
        floats = torch.stack([test[i][0] for i in range(32)])
        kind = "analog"
    else:
        generator = torch.Generator().manual_seed(1)
        shape = (timesteps, 32, 2, 48, 48)
        calibration = (torch.rand(shape, generator=generator) < 0.1).float()
        floats = (torch.rand(shape, generator=generator) < 0.1).float()
        kind = "spikes"
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative statistics of the calibration batch
    model.train()
    with torch.no_grad():
        for chunk in calibration.split(64, dim=0 if calibration.ndim == 4 else 1):
            reset_state(model)
            model(chunk)
    reset_state(model)
    model.eval()
    program = lower_model(model, input_kind=kind)
    save_program(program, work / f"{net}.sqrt")
    np.save(work / f"{net}_inputs.npy", quantize_input(program, floats))
    np.save(work / f"{net}_floats.npy", floats.numpy())
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(work / f"{net}_state.safetensors"),
    )
    example = floats[:1] if floats.ndim == 4 else floats[0, :1]
    cost = model_cost(model, example, weight_bits=2, membrane_bits=2)
    with torch.no_grad():
        reset_state(model)
        expected = model(floats[:1] if floats.ndim == 4 else floats[:, :1]).mean(0).argmax(1)
        reset_state(model)
    return {
        "cost_bits": cost["memory_bits"],
        "weights": cost["weights"],
        "neurons": cost["neurons"],
        "removed_channels": sum(len(layer["removed_channels"]) for layer in program.layers),
        "program_weight_bytes": program.weight_bytes(),
        "fakequant_prediction": expected.tolist(),
    }


def _spawn(args: list[str], timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_runtime", "--child", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(
    networks: tuple[str, ...] = ("digits", "vgg9", "calif_lenet"), timeout: float = 1800.0
) -> dict:
    from spikequant.runtime.native import build_library

    library = str(build_library())
    results: dict = {
        "command": COMMAND,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "networks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for net in networks:
            info = _prepare(work, net)
            row = {"prepare": info}
            for variant in VARIANTS.get(net, ("runtime", "fakequant", "float_snn")):
                extra = [library] if variant == "runtime" else []
                row[variant] = _spawn([variant, str(work), net, *extra], timeout)
            row["checks"] = _checks(row)
            results["networks"][net] = row
    return results


def _checks(row: dict) -> dict:
    missing = {"error": "not run"}
    rt, fq, fs = row["runtime"], row.get("fakequant", missing), row.get("float_snn", missing)
    out: dict = {}
    fc = row.get("float_calif")
    if fc is not None and "error" not in rt and "error" not in fc:
        out["speedup_vs_float_calif_b1"] = fc["batch1_ms"] / rt["batch1_ms"]
        out["speedup_vs_float_calif_b32"] = fc["batch32_ms"] / rt["batch32_ms"]
        out["rss_ratio_vs_float_calif"] = fc["peak_rss_kib"] / rt["peak_rss_kib"]
        out["prediction_matches_float_calif"] = (
            rt["predictions"] == fc["predictions"] == row["prepare"]["fakequant_prediction"]
        )
    if "error" not in rt and "error" not in fq:
        out["speedup_vs_fakequant_b1"] = fq["batch1_ms"] / rt["batch1_ms"]
        out["speedup_vs_fakequant_b32"] = fq["batch32_ms"] / rt["batch32_ms"]
        out["rss_ratio_vs_fakequant"] = fq["peak_rss_kib"] / rt["peak_rss_kib"]
        out["prediction_matches_fakequant"] = (
            rt["predictions"] == row["prepare"]["fakequant_prediction"]
        )
    if "error" not in rt and "error" not in fs:
        out["speedup_vs_float_snn_b1"] = fs["batch1_ms"] / rt["batch1_ms"]
        out["speedup_vs_float_snn_b32"] = fs["batch32_ms"] / rt["batch32_ms"]
    if "error" not in rt and "cost_bits" in row["prepare"]:
        held = rt["held_bytes"]
        measured = held["weights"] + held["membranes"] + held["spikes"]
        predicted = row["prepare"]["cost_bits"]["total"] / 8
        out["weights_state_bytes"] = measured
        out["cost_predicted_bytes"] = predicted
        out["bytes_ratio"] = measured / predicted
    return out


def _fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict) -> str:
    lines = [
        f"`{results['command']}`",
        "",
        "# Integer runtime benchmark",
        "",
        f"{results['date']}, {results['cpu_count']} CPU cores, load average "
        f"{', '.join(f'{v:.1f}' for v in results['load_average'])} at the start (a shared "
        "machine: wall times include time other processes held the CPU). One thread per "
        "variant, each in a fresh process; latency = median wall time of one window (T = 4; "
        f"Ca-LIF: T = {CALIF_T} and its rounding phase).",
        "",
    ]
    targets = []
    for net, row in results["networks"].items():
        prep = row["prepare"]
        lines += [
            f"## {net}",
            "",
            f"{prep['weights']:,} weights, {prep['neurons']:,} spiking neurons, "
            f"{prep['removed_channels']} channels removed by static gates.",
            "",
            "| variant | batch 1 ms | batch 32 ms | peak RSS MiB | RSS before run MiB |",
            "|---|---|---|---|---|",
        ]
        for variant in VARIANTS.get(net, ("runtime", "fakequant", "float_snn")):
            r = row[variant]
            if "error" in r:
                lines.append(f"| {variant} | error: {r['error']} | | | |")
                continue
            lines.append(
                f"| {variant} | {r['batch1_ms']:.2f} | {r['batch32_ms']:.1f} | "
                f"{r['peak_rss_kib'] / 1024:.1f} | {r['rss_before_run_kib'] / 1024:.1f} |"
            )
        c = row["checks"]
        rt = row["runtime"]
        if net == "calif_lenet":
            lines += [
                "",
                f"Exact integer Ca-LIF program ({prep['int32_layers']} of 5 layers with "
                f"int32 levels, {prep['program_weight_bytes']:,} weight bytes). Speed-up of "
                f"the runtime over the float Ca-LIF network: "
                f"{_fmt(c.get('speedup_vs_float_calif_b1'))}x at batch 1, "
                f"{_fmt(c.get('speedup_vs_float_calif_b32'))}x at batch 32; peak RSS float "
                f"/ runtime = {_fmt(c.get('rss_ratio_vs_float_calif'))}x. Prediction of "
                f"sample 0 equals the float network's: "
                f"{c.get('prediction_matches_float_calif')}.",
                "",
            ]
            continue
        if "held_bytes" in rt:
            held = rt["held_bytes"]
            lines += [
                "",
                f"Runtime holds (batch 1): weights {held['weights']:,} B (packed "
                f"levels + int64 per-channel multiplier/offset/threshold), membranes "
                f"{held['membranes']:,} B, spikes {held['spikes']:,} B, scratch "
                f"{held['scratch']:,} B. `spikequant cost` predicts "
                f"{c['cost_predicted_bytes']:,.0f} B for weights + membranes + spikes; "
                f"measured {c['weights_state_bytes']:,} B (ratio {c['bytes_ratio']:.3f}). "
                f"Runtime process imported torch: {rt['torch_imported']}.",
            ]
        lines += [
            "",
            f"Speed-up of the runtime, batch 1: {_fmt(c.get('speedup_vs_fakequant_b1'))}x"
            f" vs fake-quant, {_fmt(c.get('speedup_vs_float_snn_b1'))}x vs float SNN; "
            f"batch 32: {_fmt(c.get('speedup_vs_fakequant_b32'))}x / "
            f"{_fmt(c.get('speedup_vs_float_snn_b32'))}x. Peak RSS: fake-quant / runtime "
            f"= {_fmt(c.get('rss_ratio_vs_fakequant'))}x. Prediction of sample 0 equals "
            f"the fake-quant model's: {c.get('prediction_matches_fakequant')}.",
            "",
        ]
        if net == "digits":
            targets += [
                (
                    "batch-1 latency >= 5x lower than fake-quant (digits)",
                    c.get("speedup_vs_fakequant_b1"),
                    5.0,
                ),
                (
                    "batch-1 latency >= 2x lower than float SNN, fused kernels (digits)",
                    c.get("speedup_vs_float_snn_b1"),
                    2.0,
                ),
                (
                    "peak RSS >= 4x lower than fake-quant (digits)",
                    c.get("rss_ratio_vs_fakequant"),
                    4.0,
                ),
            ]
        if "bytes_ratio" in c:
            ok = abs(c["bytes_ratio"] - 1) <= 0.10
            targets.append(
                (
                    f"weights + state bytes within 10 % of cost ({net})",
                    c["bytes_ratio"],
                    None if ok else "miss",
                )
            )
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, value, need in targets:
        if need is None or need == "miss":
            met = need is None
            shown = f"ratio {value:.3f}"
        else:
            met = value is not None and value >= need
            shown = f"{_fmt(value)}x"
        lines.append(f"| {name} | {shown} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--networks", default="digits,vgg9,calif_lenet")
    args = parser.parse_args(argv)
    if args.child:
        kind, work, net, *rest = args.child
        if kind == "runtime":
            out = _child_runtime(Path(work), net, rest[0])
        else:
            out = _child_torch(Path(work), net, kind)
        print(json.dumps(out))
        return 0
    from spikequant.io import write_json, write_text

    results = run(tuple(args.networks.split(",")))
    write_json(ROOT / "docs" / "results" / "runtime_bench.json", results)
    write_text(ROOT / "docs" / "results" / "runtime_bench.md", report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
