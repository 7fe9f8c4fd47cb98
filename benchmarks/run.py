"""``make bench``: spikequant against SpikingJelly, snnTorch and Norse, side by side in one run.

Workloads:
  (a) a multi-step LIF and IF layer on [T=8, B=64, N=4096], forward and forward+backward, with a
      bandwidth floor (bytes that must move / measured copy bandwidth);
  (b) a training step of a 3-conv spiking CNN on [T=4, B=32, 3, 32, 32];
  (c) peak memory of (b) and of a VGG-11 training step at T=4 and T=16 (fresh process each);
  (d) on a CUDA device: LIF and IF forward+backward at T = 2, 4, 8, 32, the Triton kernels against
      SpikingJelly's GPU backends and snnTorch where installed (one line saying so without a GPU);
  (e) the integer runtime (``benchmarks/bench_runtime.py``: the C++ engine against the float
      PyTorch models it replaces, on the SpQuant digits network and the Ca-LIF LeNet; VGG-9 only
      with a CUDA device present, as it takes minutes on one CPU thread);
  plus the checkpointed-BPTT trade-off (memory and time against T) and the ``run()`` of every
  other ``benchmarks/bench_*.py`` module.

Timings are medians over repeats in which the libraries take turns (rotating order), so that the
drift of a shared machine hits all of them. Writes ``docs/results/bench.json`` and
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

import torch

from spikequant import kernels
from spikequant.io import command_line, results_dir, write_json, write_text

from . import models, peers

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYER_SHAPE = (8, 64, 4096)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict:
    """Median / min milliseconds per function, the functions taking turns in rotating order."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {
        n: {
            "median_ms": round(statistics.median(s), 3),
            "min_ms": round(min(s), 3),
            "repeats": len(s),
        }
        for n, s in samples.items()
    }


def copy_bandwidth() -> dict:
    """Copy bandwidth (bytes read + written per second) of a DRAM-sized and an L3-sized buffer."""
    out = {}
    for label, numel in (("dram", 64 << 20), ("l3", 2 << 20)):
        src = torch.ones(numel)
        dst = torch.empty_like(src)
        timing = interleaved({"copy": lambda d=dst, s=src: d.copy_(s)}, repeats=15, warmup=3)
        seconds = timing["copy"]["median_ms"] / 1e3
        out[label] = {"bytes": 2 * 4 * numel, "GBps": round(2 * 4 * numel / seconds / 1e9, 2)}
    return out


def available_libs() -> dict[str, dict]:
    info = {}
    for lib in peers.LIBRARIES:
        ok, detail = peers.available(lib)
        info[lib] = {"available": ok, ("version" if ok else "reason"): detail}
    return info


# ------------------------------------------------------------------------------- (a) layers
def bench_layers(libs: list[str], repeats: int, bandwidth: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(LAYER_SHAPE, generator=gen) + 0.5
    grad_seed = torch.randn(LAYER_SHAPE, generator=gen)
    tensor_bytes = x.numel() * x.element_size()
    floors = {
        label: {
            "forward_ms": round(2 * tensor_bytes / (bw["GBps"] * 1e9) * 1e3, 3),
            # Exact surrogate gradients need h_t - V_th per element and step, which the spikes
            # do not determine: backward must read one float [T, ...] tensor from the forward (x
            # or h) besides grad_out, so 5 tensor passes is the least any implementation moves.
            "forward_backward_ms": round(5 * tensor_bytes / (bw["GBps"] * 1e9) * 1e3, 3),
            # The bare I/O of the two calls (x, out, grad_out, grad_x), unattainable with exact
            # gradients; reported for comparison.
            "forward_backward_io_only_ms": round(4 * tensor_bytes / (bw["GBps"] * 1e9) * 1e3, 3),
        }
        for label, bw in bandwidth.items()
    }
    result = {"shape": list(LAYER_SHAPE), "floor": floors}
    for kind in ("lif", "if"):
        layers = {lib: peers.make_layer(lib, kind) for lib in libs}
        layers["spikequant (torch loop)"] = peers.make_layer("spikequant", kind, backend="torch")
        inputs = {name: (x * layer.input_scale).contiguous() for name, layer in layers.items()}
        spikes = {}
        with torch.no_grad():
            for name, layer in layers.items():
                spikes[name] = int(layer.run(inputs[name]).sum())

        def forward(layer, xi):
            def fn():
                with torch.no_grad():
                    return layer.run(xi)

            return fn

        def forward_backward(layer, xi):
            def fn():
                xi.grad = None
                layer.run(xi).backward(grad_seed)

            return fn

        grad_inputs = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}

        fwd = interleaved({n: forward(layers[n], inputs[n]) for n in layers}, repeats)
        fwd_bwd = interleaved(
            {n: forward_backward(layers[n], grad_inputs[n]) for n in layers}, repeats
        )
        result[kind] = {"spikes": spikes, "forward": fwd, "forward_backward": fwd_bwd}
    return result


# ------------------------------------------------------------------------------ (b) CNN step
def bench_cnn(libs: list[str], repeats: int) -> dict:
    x, y = models.data(4, 32)
    steps = {}
    for lib in libs:
        model = models.three_conv_cnn(lambda lib=lib: peers.make_neuron_module(lib))
        steps[lib] = models.training_step(model, x, y)
    model = models.three_conv_cnn(lambda: peers.make_neuron_module("spikequant"))
    steps["spikequant (channels-last)"] = models.training_step(model, x, y, channels_last=True)
    model = models.three_conv_cnn(lambda: peers.make_neuron_module("spikequant", backend="torch"))
    steps["spikequant (torch loop)"] = models.training_step(model, x, y)
    return {"input": [4, 32, 3, 32, 32], "step": interleaved(steps, repeats)}


# ------------------------------------------------------------------------- (c) peak memory
def probe(
    lib: str,
    model: str,
    steps: int,
    batch: int,
    *,
    chunk: int | None = None,
    channels_last: bool = False,
    repeats: int = 3,
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memprobe",
        "--lib",
        lib,
        "--model",
        model,
        "--steps",
        str(steps),
        "--batch",
        str(batch),
        "--repeats",
        str(repeats),
    ]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    if channels_last:
        cmd.append("--channels-last")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(libs: list[str]) -> dict:
    cases = [("cnn", 4, 32), ("vgg11", 4, 16), ("vgg11", 16, 16)]
    out = {}
    for model, steps, batch in cases:
        key = f"{model} T={steps} B={batch}"
        row = {lib: probe(lib, model, steps, batch) for lib in libs}
        row["spikequant (channels-last)"] = probe(
            "spikequant", model, steps, batch, channels_last=True
        )
        if steps > 4:
            row["spikequant (checkpointed, chunk 4)"] = probe(
                "spikequant", model, steps, batch, chunk=4, channels_last=True
            )
        out[key] = row
    return out


def bench_bptt_tradeoff(repeats: int = 4) -> dict:
    """Peak memory from fresh processes; step time measured in this process, variants taking
    turns (the fresh-process timings are single samples, too noisy on a shared machine)."""
    from spikequant.bptt import checkpointed_forward

    rows = []
    for steps in (4, 8, 16, 32):
        row: dict = {"T": steps}
        variants = {"plain": None, "chunk 1": 1, "chunk 4": 4}
        closures = {}
        x, y = models.data(steps, 32)
        for name, chunk in variants.items():
            if chunk is not None and chunk >= steps:
                continue
            row[name] = probe(
                "spikequant", "cnn", steps, 32, chunk=chunk, channels_last=True, repeats=2
            )
            model = models.three_conv_cnn(lambda: peers.make_neuron_module("spikequant"))
            forward = None
            if chunk is not None:

                def forward(inputs, model=model, chunk=chunk):
                    return checkpointed_forward(model, inputs, chunk)

            closures[name] = models.training_step(model, x, y, channels_last=True, forward=forward)
        timing = interleaved(closures, repeats, warmup=1)
        for name, t in timing.items():
            row[name]["step_ms"] = t["median_ms"]
        rows.append(row)
    return {"model": "cnn B=32 (channels-last)", "rows": rows}


# ---------------------------------------------------------------------------------- GPU rows
GPU_STEPS = (2, 4, 8, 32)
GPU_STEP_SHAPE = (64, 4096)  # [B, N] of one step
#: the training steps of the GPU part: models, T, batch, CIFAR image side (or one per model),
#: channel width factor
GPU_TRAINING = {"models": ("vgg11", "resnet19"), "steps": 4, "batch": 64, "size": 32, "width": 1.0}
GPU_COPY_NUMEL = 256 << 20  # 1 GiB per buffer: far beyond any GPU cache
#: the speed targets of the GPU part, judged at T = TARGET_STEPS
GPU_TARGETS = {
    "neuron_vs_spikingjelly": 1.5,
    "neuron_vs_floor": 2.0,
    "training_vs_spikingjelly": 1.2,
}
TARGET_STEPS = 4
#: SpikingJelly's multi-step backends tried on the GPU ("cuda" and "triton": 2.x; "cupy": older)
SJ_BACKENDS = ("cuda", "triton", "cupy", "torch")
OURS_GPU = "spikequant (triton)"
REFERENCE = "spikequant (torch loop)"


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for the device's queued work (CUDA runs asynchronously; CPU work is done on return)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:160]


def device_copy_bandwidth(
    device: torch.device, numel: int = GPU_COPY_NUMEL, copies: int = 10, repeats: int = 10
) -> dict:
    """Copy bandwidth (bytes read + written per second) of a float32 buffer on ``device``: the
    median over ``repeats`` of ``copies`` back-to-back copies, synchronised once per sample."""
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    sync = _synchronizer(device)

    def copy():
        for _ in range(copies):
            dst.copy_(src)
        sync()

    timing = interleaved({"copy": copy}, repeats, warmup=2)
    seconds = max(timing["copy"]["median_ms"], 1e-3) / 1e3 / copies
    moved = 2 * src.element_size() * numel
    return {"bytes": moved, "copies": copies, "GBps": round(moved / seconds / 1e9, 2)}


def _gpu_layers(kind: str, device: torch.device) -> dict:
    """The GPU candidates that run on ``device``: spikequant's Triton kernels and reference loop,
    SpikingJelly's multi-step backends, snnTorch (each skipped, with the reason, when it cannot)."""
    candidates = _gpu_candidates(lambda lib, **kw: peers.make_layer(lib, kind, **kw))
    layers, skipped, ran = {}, {}, {}
    probe_x = torch.randn(2, 2, 64, device=device)
    sync = _synchronizer(device)
    for name, make in candidates.items():
        try:
            layer = make()
            layer.module.to(device)
            # a backend may fail only when it runs, forward or backward
            xp = (probe_x * layer.input_scale).requires_grad_(True)
            layer.run(xp).sum().backward()
            sync()
            layers[name] = layer
            if name.startswith("spikingjelly"):
                ran[name] = peers.sj_implementation(kind, device)
        except Exception as exc:  # not installed / no such backend: recorded, not fatal
            skipped[name] = _failure(exc)
    return {"layers": layers, "skipped": skipped, "spikingjelly_ran": ran}


def _gpu_neuron_rows(
    kind: str,
    device: torch.device,
    steps_list,
    step_shape,
    repeats: int,
    warmup: int,
    bandwidth: dict,
    calls: int,
) -> dict:
    """Forward+backward of each candidate on ``[T, *step_shape]`` (each sample: ``calls``
    back-to-back calls and one synchronisation, reported per call), with the spike counts of one
    forward, the bandwidth floor (5 float32 tensor passes, as in part (a)) and, where both ran,
    whether spikequant's Triton kernels reproduce its reference loop."""
    found = _gpu_layers(kind, device)
    layers = found["layers"]
    sync = _synchronizer(device)
    rows = []
    for steps in steps_list:
        gen = torch.Generator(device=device).manual_seed(steps)
        shape = (steps, *step_shape)
        x = torch.randn(shape, generator=gen, device=device) + 0.5
        grad_seed = torch.randn(shape, generator=gen, device=device)
        inputs = {n: (x * layer.input_scale).requires_grad_(True) for n, layer in layers.items()}
        with torch.no_grad():
            outputs = {n: layer.run(inputs[n]) for n, layer in layers.items()}
        spikes = {n: int(out.sum()) for n, out in outputs.items()}

        def forward_backward(layer, xi, grad_seed=grad_seed):
            def fn():
                for _ in range(calls):
                    xi.grad = None
                    layer.run(xi).backward(grad_seed)
                sync()

            return fn

        samples = interleaved(
            {n: forward_backward(layer, inputs[n]) for n, layer in layers.items()},
            repeats,
            warmup=warmup,
        )
        timing = {
            n: {
                "median_ms": round(t["median_ms"] / calls, 5),
                "min_ms": round(t["min_ms"] / calls, 5),
                "repeats": t["repeats"],
            }
            for n, t in samples.items()
        }
        floor_ms = float(f"{5 * x.numel() * x.element_size() / (bandwidth['GBps'] * 1e6):.6g}")
        row = {"T": steps, "forward_backward": timing, "spikes": spikes, "floor_ms": floor_ms}
        if OURS_GPU in timing:
            row["triton_over_floor"] = round(timing[OURS_GPU]["median_ms"] / floor_ms, 2)
        if OURS_GPU in layers and REFERENCE in layers:
            # after the timing, each input holds the gradient of its last backward
            row["triton_vs_reference"] = {
                "spikes_equal": bool(torch.equal(outputs[OURS_GPU], outputs[REFERENCE])),
                "grad_max_abs_diff": float(
                    (inputs[OURS_GPU].grad - inputs[REFERENCE].grad).abs().max()
                ),
            }
        rows.append(row)
    # SpikingJelly 2.x's own account of the CUDA implementation each of its layers ran
    return {
        "rows": rows,
        "skipped": found["skipped"],
        "spikingjelly_ran": found["spikingjelly_ran"],
    }


def _gpu_candidates(make: Callable[..., object]) -> dict[str, Callable[[], object]]:
    """``{name: factory}`` of the GPU part's libraries, ``make(lib, **options)`` building one:
    spikequant's Triton kernels and reference loop, SpikingJelly's backends, snnTorch."""
    candidates = {
        OURS_GPU: lambda: make("spikequant", backend="triton"),
        REFERENCE: lambda: make("spikequant", backend="torch"),
    }
    for sj_backend in SJ_BACKENDS:
        candidates[f"spikingjelly ({sj_backend})"] = lambda b=sj_backend: make(
            "spikingjelly", backend=b
        )
    candidates["snntorch"] = lambda: make("snntorch")
    return candidates


def _training_factories() -> dict[str, Callable[[], torch.nn.Module]]:
    return _gpu_candidates(peers.make_neuron_module)


def _gpu_training(device: torch.device, repeats: int, warmup: int, config: dict) -> dict:
    """Training steps (SGD, cross-entropy on the mean over time) of each model around each
    library's LIF: first-step loss (same initial weights everywhere), peak memory of one step
    with only that model on the device (CUDA), then the step times with the libraries taking
    turns."""
    builders = {"vgg11": models.vgg11, "resnet19": models.resnet19}
    sync = _synchronizer(device)
    on_cuda = device.type == "cuda"
    out: dict = {
        **{k: config[k] for k in ("steps", "batch", "width")},
        "peak_memory": (
            "torch.cuda.max_memory_allocated during one step (after a "
            "warm-up step), only that library's model on the device"
            if on_cuda
            else "not measured: CUDA only"
        ),
        "models": {},
    }

    def build(name, factory, x, y):
        model = builders[name](factory, width=config["width"]).to(device)
        return model, models.training_step(model, x, y)

    def time_steps(name, libs, x, y):
        def synchronised(step):
            def fn():
                step()
                sync()

            return fn

        factories = _training_factories()
        steps = {lib: synchronised(build(name, factories[lib], x, y)[1]) for lib in libs}
        return interleaved(steps, repeats, warmup=warmup)

    for name in config["models"]:
        size = config["size"][name] if isinstance(config["size"], dict) else config["size"]
        x, y = models.data(config["steps"], config["batch"], size=size)
        x, y = x.to(device), y.to(device)
        libraries, skipped = {}, {}
        for lib, factory in _training_factories().items():
            model = step = None
            try:
                model, step = build(name, factory, x, y)
                loss = float(step().detach())  # a backend may fail only when it runs
                sync()
            except Exception as exc:  # recorded, not fatal
                skipped[lib] = _failure(exc)
                del model, step  # a failed library's model must not count in the next peak
                if on_cuda:
                    torch.cuda.empty_cache()
                continue
            entry = {"first_step_loss": loss, "peak_mib": None}
            if on_cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                step()
                sync()
                entry["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            libraries[lib] = entry
            del model, step
            if on_cuda:
                torch.cuda.empty_cache()
        timing = time_steps(name, list(libraries), x, y)  # its models are freed on return
        for lib, t in timing.items():
            libraries[lib].update(t)
            images_per_s = config["batch"] / (t["median_ms"] / 1e3)
            libraries[lib]["images_per_s"] = float(f"{images_per_s:.4g}")
        out["models"][name] = {"input": list(x.shape), "libraries": libraries, "skipped": skipped}
        if on_cuda:
            torch.cuda.empty_cache()
    return out


def bench_gpu(
    repeats: int,
    *,
    device: str | None = None,
    steps=GPU_STEPS,
    step_shape=GPU_STEP_SHAPE,
    training: dict | None = None,
    copy_numel: int = GPU_COPY_NUMEL,
    warmup: int = 2,
    calls_per_sample: int | None = None,
) -> dict:
    """The GPU part: LIF/IF forward+backward on float32 ``[T, *step_shape]`` for each T in
    ``steps`` against the device's bandwidth floor, VGG-11 and ResNet-19 training steps, and the
    speed targets. ``device=None`` means CUDA with the sizes above, or one printed line and
    ``{"skipped": ...}`` without a CUDA device; an explicit device (tests: "cpu" with tiny sizes
    and ``TRITON_INTERPRET=1``) runs the same code there. ``calls_per_sample``: neuron calls
    per timed sample (default 10 on CUDA, where one call is microseconds, else 1)."""
    if device is None:
        if not torch.cuda.is_available():
            message = "no CUDA device: GPU rows (Triton kernels vs peers) skipped"
            print(message)
            return {"skipped": message}
        device = "cuda"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    config = dict(GPU_TRAINING, **(training or {}))
    result: dict = {
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "device_type": dev.type,
        "step_shape": list(step_shape),
        "bandwidth": device_copy_bandwidth(dev, copy_numel),
    }
    calls = result["calls_per_sample"] = calls_per_sample or (10 if dev.type == "cuda" else 1)
    for kind in ("lif", "if"):
        result[kind] = _gpu_neuron_rows(
            kind, dev, steps, step_shape, repeats, warmup, result["bandwidth"], calls
        )
    result["training"] = _gpu_training(dev, max(1, repeats // 2), warmup, config)
    result["targets"] = gpu_targets(result)
    return result


def gpu_targets(gpu: dict) -> list[dict]:
    """The GPU part's targets at T = TARGET_STEPS: neuron forward+backward against SpikingJelly's
    fastest backend and the bandwidth floor; training steps against SpikingJelly's fastest
    backend, at no more peak memory than that backend (where peak memory was measured)."""
    checks = []
    for kind in ("lif", "if"):
        row = next((r for r in gpu[kind]["rows"] if r["T"] == TARGET_STEPS), None)
        if row is None or OURS_GPU not in row["forward_backward"]:
            continue
        timing = row["forward_backward"]
        ours = timing[OURS_GPU]["median_ms"]
        sj = {n: t["median_ms"] for n, t in timing.items() if n.startswith("spikingjelly")}
        if sj:
            best = min(sj, key=sj.get)
            speedup = sj[best] / ours
            goal = GPU_TARGETS["neuron_vs_spikingjelly"]
            checks.append(
                {
                    "target": f"(GPU) {kind.upper()} fwd+bwd T={TARGET_STEPS} >= {goal}x "
                    "SpikingJelly's fastest backend",
                    "value": f"{speedup:.2f}x vs {best}",
                    "met": speedup >= goal,
                }
            )
        goal = GPU_TARGETS["neuron_vs_floor"]
        ratio = ours / row["floor_ms"]
        checks.append(
            {
                "target": f"(GPU) {kind.upper()} fwd+bwd T={TARGET_STEPS} within {goal}x of "
                "the bandwidth floor (5 tensors)",
                "value": f"{ratio:.2f}x",
                "met": ratio <= goal,
            }
        )
    for name, block in gpu.get("training", {}).get("models", {}).items():
        libs = block["libraries"]
        sj = {n: r for n, r in libs.items() if n.startswith("spikingjelly")}
        if OURS_GPU not in libs or not sj:
            continue
        ours = libs[OURS_GPU]
        best = min(sj, key=lambda n: sj[n]["median_ms"])
        speedup = sj[best]["median_ms"] / ours["median_ms"]
        goal = GPU_TARGETS["training_vs_spikingjelly"]
        checks.append(
            {
                "target": f"(GPU) {name} training step T={gpu['training']['steps']} >= "
                f"{goal}x SpikingJelly's fastest backend",
                "value": f"{speedup:.2f}x vs {best}",
                "met": speedup >= goal,
            }
        )
        if ours["peak_mib"] is not None and sj[best]["peak_mib"] is not None:
            checks.append(
                {
                    "target": f"(GPU) {name} training step peak memory <= SpikingJelly's "
                    "(its fastest backend)",
                    "value": f"{ours['peak_mib']} MiB vs {sj[best]['peak_mib']} MiB",
                    "met": ours["peak_mib"] <= sj[best]["peak_mib"],
                }
            )
    return checks


GPU_PAGE = "benchmarks-gpu.md"


def _targets_table(checks: list[dict]) -> list[str]:
    if not checks:
        return []
    return [
        "## Speed targets on this run",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {c['target']} | {c['value']} | {'yes' if c['met'] else 'no'} |" for c in checks),
        "",
    ]


def render_gpu_markdown(gpu: dict) -> str:
    """``docs/benchmarks-gpu.md``: the GPU part's rows, floor, training steps and targets."""
    bw = gpu["bandwidth"]
    lines = [
        "# GPU benchmarks",
        "",
        f"Command: `{gpu['command']}`",
        "",
        f"Written by the `gpu` part of `make bench` (`python -m benchmarks.run`) on {gpu['date']}; "
        f"raw numbers under `gpu` in `docs/results/bench.json`. Device: {gpu['device']}. "
        "Medians over repeats in which the libraries take turns, each sample ending with a "
        "device synchronisation.",
        "",
    ]
    lines += _targets_table(gpu.get("targets") or [])
    step_shape = ", ".join(map(str, gpu["step_shape"]))
    lines += [
        "## Neuron layer forward+backward",
        "",
        f"LIF and IF (the conventions of `docs/benchmarks.md`) on float32 `[T, {step_shape}]`. "
        f"Bandwidth floor: device copy bandwidth {bw['GBps']} GB/s ({bw['copies']} back-to-back "
        f"copies of a {bw['bytes'] // 2 // 2**20} MiB buffer), and forward+backward must move 5 "
        "float32 tensors of the input's size (x, spikes, the output gradient, the input gradient, "
        "and one float per element and step from the forward pass: the surrogate gradient depends "
        "on the membrane, which the spikes do not determine). `triton / floor` is spikequant's "
        "Triton time over that floor; `spikes equal` compares its spikes with its reference loop "
        "bit for bit, `grad diff` their largest input-gradient difference. Times are per call "
        "(forward and backward from Python, as a training step makes them), each sample "
        f"{gpu.get('calls_per_sample', 1)} "
        "calls back to back and one synchronisation: where the floor is a few microseconds "
        "(small T), the per-call launch and autograd overhead, not memory, bounds every "
        "library.",
        "",
    ]
    for kind in ("lif", "if"):
        rows = gpu[kind]["rows"]
        names = list(rows[0]["forward_backward"]) if rows else []
        lines += [
            f"### {kind.upper()} (median ms)",
            "",
            "| T | floor ms | "
            + " | ".join(names)
            + " | triton / floor | spikes equal | grad diff |",
            "|---|---|" + "---|" * (len(names) + 3),
        ]
        for row in rows:
            t = row["forward_backward"]
            check = row.get("triton_vs_reference")
            lines.append(
                f"| {row['T']} | {row['floor_ms']:.4g} | "
                + " | ".join(f"{t[n]['median_ms']:.4g}" for n in names)
                + f" | {row.get('triton_over_floor', '-')} | "
                + (
                    f"{'yes' if check['spikes_equal'] else 'no'} | {check['grad_max_abs_diff']:.1e}"
                    if check
                    else "- | -"
                )
                + " |"
            )
        lines.append("")
        lines += [f"{name} not run: {why}" for name, why in gpu[kind]["skipped"].items()]
        ran = {n: impl for n, impl in gpu[kind].get("spikingjelly_ran", {}).items() if impl}
        if ran:
            lines.append(
                "SpikingJelly's implementation as it reports it: "
                + ", ".join(f"{n} ran {impl}" for n, impl in ran.items())
                + "."
            )
        lines.append("")
    training = gpu["training"]
    lines += [
        f"## Training steps, T = {training['steps']}, batch {training['batch']}",
        "",
        "SGD with momentum, cross-entropy on the mean over time, the same initial weights for "
        "every library (so the first-step losses agree up to the libraries' conventions). "
        "VGG-11: 8 conv-BN-LIF, average pooling, one linear layer. ResNet-19: stem 128, basic "
        "blocks 3x128, 3x256, 2x512, global average pooling, spiking FC-256, classifier"
        + (f" (channels scaled by {training['width']})" if training["width"] != 1.0 else "")
        + f". Peak memory: {training['peak_memory']}.",
        "",
    ]
    for name, block in training["models"].items():
        libs = block["libraries"]
        base = libs.get(OURS_GPU, {}).get("median_ms")
        lines += [
            f"### {name}, input {block['input']}",
            "",
            "| library | median ms | images/s | peak MiB | first-step loss | "
            "time / spikequant (triton) |",
            "|---|---|---|---|---|---|",
        ]
        for lib, r in libs.items():
            peak = "-" if r["peak_mib"] is None else r["peak_mib"]
            lines.append(
                f"| {lib} | {r['median_ms']:.2f} | {r['images_per_s']} | {peak} | "
                f"{r['first_step_loss']:.5f} | {_ratio(r['median_ms'], base)} |"
            )
        lines.append("")
        lines += [f"{lib} not run: {why}" for lib, why in block["skipped"].items()]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_gpu_page(gpu: dict, docs_dir: pathlib.Path = ROOT / "docs") -> pathlib.Path | None:
    """Write ``docs/benchmarks-gpu.md`` from a run on a CUDA device; nothing otherwise (a skipped
    part, or the same code run on CPU tensors by the tests)."""
    if gpu.get("device_type") != "cuda":
        return None
    return write_text(docs_dir / GPU_PAGE, render_gpu_markdown(gpu))


# ----------------------------------------------------------------------------- integer runtime
def bench_runtime() -> dict:
    from . import bench_runtime as runtime

    return runtime.run(("digits", "vgg9", "calif_lenet"))


def _runtime_section(results: dict) -> list[str]:
    from . import bench_runtime as runtime

    text = runtime.report(results).splitlines()
    body = text[text.index("# Integer runtime benchmark") + 1 :]
    return [
        "## (e) Integer runtime (`benchmarks/bench_runtime.py`)",
        "",
        "The C++ engine of `spikequant run` against the float PyTorch models it replaces, on the "
        "CPU (`python -m benchmarks.bench_runtime` runs the same networks and writes "
        "`docs/results/runtime_bench.md`).",
        *[("#" + line) if line.startswith("## ") else line for line in body],
        "",
    ]


# ----------------------------------------------------------------------------- other modules
def bench_others() -> dict:
    out = {}
    for path in sorted(pathlib.Path(__file__).parent.glob("bench_*.py")):
        name = path.stem
        if name == "bench_runtime":  # its own part, (e)
            continue
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            out[name] = module.run()
        except Exception as exc:  # another helper's benchmark must not break this run
            out[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=3),
            }
    return out


# ------------------------------------------------------------------------------------ report
def _ratio(peer_ms: float | None, ours_ms: float | None) -> str:
    if not peer_ms or not ours_ms:
        return "-"
    return f"{peer_ms / ours_ms:.2f}x"


def _timing_table(timings: dict, ours: str, spikes: dict | None = None) -> list[str]:
    head = "| library | median ms | min ms | time / spikequant |"
    if spikes is not None:
        head += " spikes |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = timings.get(ours, {}).get("median_ms")
    for name, t in timings.items():
        ratio = _ratio(t["median_ms"], base)
        line = f"| {name} | {t['median_ms']:.2f} | {t['min_ms']:.2f} | {ratio} |"
        if spikes is not None:
            line += f" {spikes.get(name, '-')} |"
        lines.append(line)
    return lines


PEERS = ("spikingjelly", "snntorch", "norse")


def check_targets(res: dict) -> list[dict]:
    """Issue 7's targets, evaluated on this run's medians."""
    checks = []
    layers = res.get("layers")
    if layers:
        floor = layers["floor"]["dram"]["forward_backward_ms"]
        for kind in ("lif", "if"):
            t = layers[kind]["forward_backward"]
            ours = t["spikequant"]["median_ms"]
            peer_times = {p: t[p]["median_ms"] for p in PEERS if p in t}
            if peer_times:
                best = min(peer_times, key=peer_times.get)
                speedup = peer_times[best] / ours
                checks.append(
                    {
                        "target": f"(a) {kind.upper()} fwd+bwd >= 2x fastest peer",
                        "value": f"{speedup:.2f}x vs {best}",
                        "met": speedup >= 2,
                    }
                )
            checks.append(
                {
                    "target": f"(a) {kind.upper()} fwd+bwd within 3x of DRAM floor (5 tensors)",
                    "value": f"{ours / floor:.2f}x",
                    "met": ours / floor <= 3,
                }
            )
    cnn = res.get("cnn")
    if cnn:
        t = cnn["step"]
        ours = t["spikequant (channels-last)"]["median_ms"]
        peer_times = {p: t[p]["median_ms"] for p in PEERS if p in t}
        if peer_times:
            best = min(peer_times, key=peer_times.get)
            speedup = peer_times[best] / ours
            checks.append(
                {
                    "target": "(b) CNN step >= 1.3x fastest peer",
                    "value": f"{speedup:.2f}x vs {best}",
                    "met": speedup >= 1.3,
                }
            )
    gpu = res.get("gpu")
    if gpu and "skipped" not in gpu:
        checks += gpu_targets(gpu)
    for key, row in (res.get("memory") or {}).items():
        peer_peaks = {p: row[p]["peak_mib"] for p in PEERS if "peak_mib" in row.get(p, {})}
        ours = [
            row[k]["peak_mib"]
            for k in ("spikequant", "spikequant (channels-last)")
            if "peak_mib" in row.get(k, {})
        ]
        if peer_peaks and ours:
            best = min(peer_peaks, key=peer_peaks.get)
            checks.append(
                {
                    "target": f"(c) peak memory {key} <= leanest peer",
                    "value": f"{min(ours)} MiB vs {best} {peer_peaks[best]} MiB",
                    "met": min(ours) <= peer_peaks[best],
                }
            )
    return checks


def render_markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`) from the run of "
        f"{res['date']}; raw numbers in `docs/results/bench.json`. Machine: {env['cpu']}, "
        f"{env['cores']} cores, torch {env['torch']} with {env['threads']} threads, load average "
        f"{env['load_before']} before the run (other processes shared the cores, so treat "
        "differences under 1.3x as ties).",
        "",
        "Parts and when they ran (load average before): "
        + "; ".join(
            f"{k} {v['date']} ({v['load_before']})" for k, v in res.get("parts", {}).items()
        )
        + ".",
        "",
        "Libraries: "
        + ", ".join(
            f"{k} {v.get('version', '(missing: ' + str(v.get('reason')) + ')')}"
            for k, v in res["libraries"].items()
        )
        + ".",
        "",
        "Every library runs the same neurons (see `benchmarks/peers.py`): LIF with tau = 2 and "
        "decayed input (`H = 0.5 V + 0.5 x`), IF (`H = V + x`), threshold 1, hard reset to 0. "
        "Conventions matched: snnTorch with `reset_delay=False` and its input pre-scaled by 0.5 "
        "(it has no `decay_input`); Norse's box LIF with `dt * tau_inv = 0.5`. SpikingJelly and "
        "spikequant fire on `>=`, snnTorch and Norse on `>`. Surrogates: sigmoid(alpha=4) except "
        "Norse (SuperSpike, it has no sigmoid). `spikequant` is the fused C++ kernel "
        '(`backend="fused"`); `spikequant (torch loop)` is the pure-PyTorch reference.',
        "",
        "Medians over repeats in which the libraries take turns; `time / spikequant` is each "
        "library's median divided by spikequant's (above 1: spikequant is faster).",
        "",
    ]
    lines += _targets_table(res.get("targets") or [])
    layers = res.get("layers")
    if layers:
        fl = layers["floor"]
        lines += [
            f"## (a) Multi-step layer, input {layers['shape']}, float32",
            "",
            f"Bandwidth floor: copy bandwidth {res['bandwidth']['dram']['GBps']} GB/s (DRAM-sized "
            f"buffer) / {res['bandwidth']['l3']['GBps']} GB/s (L3-sized). Forward must read x "
            "and write the spikes (2 tensors). Forward+backward must also read the output gradient "
            "and write the input gradient, and backward needs one float per element and step from "
            "the forward pass (x or the membrane h: the surrogate gradient depends on h - V_th, "
            "which the spikes do not determine), so 5 tensors: floor "
            f"{fl['dram']['forward_ms']} / {fl['dram']['forward_backward_ms']} ms at DRAM "
            f"bandwidth ({fl['l3']['forward_ms']} / {fl['l3']['forward_backward_ms']} ms at L3 "
            "bandwidth); this is how `perf-notes.md` counts its 1.02 ms floor. The bare I/O of "
            "the two calls (4 tensors, "
            f"{fl['dram'].get('forward_backward_io_only_ms', '-')} ms at DRAM bandwidth) is "
            "shown beside it. The fused kernel moves exactly the 5 tensors: its backward reads x "
            "again and recomputes the membrane instead of storing it.",
            "",
        ]
        for kind in ("lif", "if"):
            block = layers[kind]
            for mode in ("forward", "forward_backward"):
                ours = block[mode]["spikequant"]["median_ms"]
                floor = fl["dram"][f"{mode}_ms"]
                lines += [f"### {kind.upper()} {mode.replace('_', ' + ')}", ""]
                lines += _timing_table(
                    block[mode], "spikequant", block["spikes"] if mode == "forward" else None
                )
                io_only = fl["dram"].get(f"{mode}_io_only_ms")
                extra = f" ({ours / io_only:.2f}x the 4-tensor bare I/O)" if io_only else ""
                lines += ["", f"spikequant / DRAM floor: {ours / floor:.2f}x{extra}.", ""]
    cnn = res.get("cnn")
    if cnn:
        lines += [
            f"## (b) 3-conv spiking CNN training step, input {cnn['input']}",
            "",
            "conv(3->32)-BN-LIF-pool, conv(32->64)-BN-LIF-pool, conv(64->128)-BN-LIF-pool, "
            "linear; SGD with momentum, cross-entropy on the mean over time. "
            "`channels-last` stores each image NHWC (oneDNN's native layout; the fused "
            "kernel walks it without copies).",
            "",
        ]
        lines += _timing_table(cnn["step"], "spikequant (channels-last)")
        lines.append("")
    mem = res.get("memory")
    if mem:
        lines += [
            "## (c) Peak memory of a training step",
            "",
            "Fresh process per cell: resident-set high-water mark minus the resident set "
            "before the first step, with the step time of that process (few samples, "
            "noisy on a shared machine; section (b) has the interleaved timing). VGG-11: "
            "CIFAR layout, 8 conv-BN-LIF, average pooling, B = 16.",
            "",
        ]
        for key, row in mem.items():
            lines += [f"### {key}", "", "| library | peak MiB | step ms |", "|---|---|---|"]
            for name, r in row.items():
                if "peak_mib" in r:
                    lines.append(f"| {name} | {r['peak_mib']} | {r['step_ms']} |")
                else:
                    lines.append(f"| {name} | {r.get('missing') or r.get('error')} | - |")
            lines.append("")
    bptt = res.get("bptt")
    if bptt:
        lines += [
            "## Checkpointed BPTT: memory and time against T",
            "",
            f"Model: {bptt['model']}. `chunk k` = `spikequant.bptt.checkpointed_forward` "
            "with chunks of k timesteps (gradients identical to plain BPTT; each chunk's "
            "activations are recomputed in backward). Memory: fresh process per cell; time: "
            "median step in one process, variants taking turns.",
            "",
        ]
        cols = ["plain", "chunk 1", "chunk 4"]
        lines += [
            "| T | " + " | ".join(f"{c} MiB | {c} ms" for c in cols) + " |",
            "|---|" + "---|---|" * len(cols),
        ]
        for row in bptt["rows"]:
            cells = []
            for c in cols:
                r = row.get(c)
                cells += (
                    [str(r["peak_mib"]), str(r["step_ms"])] if r and "peak_mib" in r else ["-", "-"]
                )
            lines.append(f"| {row['T']} | " + " | ".join(cells) + " |")
        lines.append("")
    gpu = res.get("gpu")
    if gpu:
        lines += ["## GPU: neurons and training steps", ""]
        if "skipped" in gpu:
            lines += [gpu["skipped"], ""]
            if gpu.get("earlier_page"):
                lines += [f"An earlier run on a CUDA device wrote [{GPU_PAGE}]({GPU_PAGE}).", ""]
        else:
            lines += [
                f"Ran on {gpu['device']} ({gpu['date']}): neuron forward+backward at T = "
                + ", ".join(str(r["T"]) for r in gpu["lif"]["rows"])
                + ", VGG-11 and ResNet-19 training steps, the bandwidth floor and the GPU "
                f"targets are in [{GPU_PAGE}]({GPU_PAGE}).",
                "",
            ]
    runtime = res.get("runtime")
    if runtime:
        lines += _runtime_section(runtime)
    others = res.get("others")
    if others:
        lines += ["## Other benchmarks (`benchmarks/bench_*.py`)", ""]
        for name, value in others.items():
            lines += [f"### {name}", "", "```json", json.dumps(value, indent=1)[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--only",
        default="layers,cnn,memory,bptt,gpu,runtime,others",
        help="comma-separated subset of: layers,cnn,memory,bptt,gpu,runtime,others",
    )
    parser.add_argument("--out", default=None, help="results directory (default docs/results)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other parts of an existing bench.json (each part records "
        "when and under which load it ran)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite docs/benchmarks.md from an existing bench.json",
    )
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    out_dir = results_dir(args.out, "docs/results")
    if args.render:
        res = json.loads((out_dir / "bench.json").read_text())
        res["targets"] = check_targets(res)
        write_text(ROOT / "docs" / "benchmarks.md", render_markdown(res))
        if res.get("gpu"):
            write_gpu_page(res["gpu"])
        return res
    previous = {}
    if args.merge and (out_dir / "bench.json").is_file():
        previous = json.loads((out_dir / "bench.json").read_text())

    kernels.load_extension()
    # The fused kernels keep freed memory for reuse (glibc mallopt, process-wide); applied before
    # any library runs, so the peers in this process benefit from it equally.
    retained = kernels.retain_freed_memory()
    libs_info = available_libs()
    libs = [lib for lib, info in libs_info.items() if info["available"]]
    res: dict = {
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": {
            "cpu": kernels.cpu_model().split(":")[-1].strip() or platform.processor(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_before": round(os.getloadavg()[0], 2),
            "fused_kernels": kernels.available(),
            "retain_freed_memory": retained,
        },
        "libraries": libs_info,
    }
    for key in ("bandwidth", "layers", "cnn", "memory", "bptt", "gpu", "runtime", "others"):
        if key in previous and (key if key != "bandwidth" else "layers") not in parts:
            res[key] = previous[key]
    res["parts"] = dict(previous.get("parts", {}))
    stamp = {"date": res["date"], "load_before": res["environment"]["load_before"],
             "command": res["command"]}  # fmt: skip
    res["parts"].update({part: stamp for part in parts})
    if "layers" in parts:
        res["bandwidth"] = copy_bandwidth()
        res["layers"] = bench_layers(libs, args.repeats, res["bandwidth"])
    if "cnn" in parts:
        res["cnn"] = bench_cnn(libs, max(5, args.repeats // 2))
    if "memory" in parts:
        res["memory"] = bench_memory(libs)
    if "bptt" in parts:
        res["bptt"] = bench_bptt_tradeoff()
    if "gpu" in parts:
        res["gpu"] = bench_gpu(args.repeats)
        page = write_gpu_page(res["gpu"])
        if page is not None:
            print(f"wrote {page}")
        elif (ROOT / "docs" / GPU_PAGE).is_file():
            res["gpu"]["earlier_page"] = True
    if "runtime" in parts:
        res["runtime"] = bench_runtime()
    if "others" in parts:
        res["others"] = bench_others()
    res["environment"]["load_after"] = round(os.getloadavg()[0], 2)
    res["targets"] = check_targets(res)
    write_json(out_dir / "bench.json", res)
    write_text(ROOT / "docs" / "benchmarks.md", render_markdown(res))
    print(f"wrote {out_dir / 'bench.json'} and docs/benchmarks.md")
    return res


if __name__ == "__main__":
    main()
