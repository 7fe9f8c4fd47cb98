"""The benchmark harness: timings, ratios and targets computed right (on stubs with known
answers), the CNN workload, and the report. The peer libraries are not installed here (only
`make bench` installs them); their spike counts next to spikequant's are in the benchmark report.
The GPU part runs here on CPU tensors with tiny shapes, spikequant's Triton kernels in Triton's
interpreter; its GPU numbers come only from a CUDA device."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from benchmarks import models, peers
from benchmarks import run as bench_run
from benchmarks.run import bench_gpu, interleaved, render_markdown

ROOT = pathlib.Path(bench_run.__file__).resolve().parents[1]


def test_interleaved_takes_turns_and_reports_median_and_min(monkeypatch):
    """On functions that take a known time (a fake clock), the harness reports exactly it."""
    clock, calls = [0.0], []
    cost_ms = {"ours": [2.0], "peer": [6.0, 6.0, 10.0, 6.0]}  # one slow outlier for the peer

    def timed(name):
        def fn():
            calls.append(name)
            costs = cost_ms[name]
            clock[0] += costs[(calls.count(name) - 2) % len(costs)] / 1e3  # after 1 warm-up

        return fn

    monkeypatch.setattr(bench_run, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    timing = interleaved({"ours": timed("ours"), "peer": timed("peer")}, repeats=4, warmup=1)
    assert calls == ["ours", "peer"] + ["ours", "peer", "peer", "ours"] * 2  # rotating order
    assert timing["ours"] == {"median_ms": 2.0, "min_ms": 2.0, "repeats": 4}
    assert timing["peer"] == {"median_ms": 6.0, "min_ms": 6.0, "repeats": 4}
    table = bench_run._timing_table(timing, "ours")
    assert table[2:] == ["| ours | 2.00 | 2.00 | 1.00x |", "| peer | 6.00 | 6.00 | 3.00x |"]


def test_targets_are_judged_on_the_fastest_peer_and_the_floor():
    ms = lambda v: {"median_ms": v}  # noqa: E731
    res = {
        "layers": {
            "floor": {"dram": {"forward_backward_ms": 0.5}},
            "lif": {"forward_backward": {"spikequant": ms(1.0), "snntorch": ms(3.0),
                                         "norse": ms(2.5)}},
            "if": {"forward_backward": {"spikequant": ms(2.0)}},  # no peer installed
        },
        "cnn": {"step": {"spikequant (channels-last)": ms(2.0), "spikingjelly": ms(2.4)}},
        "memory": {"vgg11 T=4": {"spikequant": {"peak_mib": 100},
                                 "spikequant (channels-last)": {"peak_mib": 95},
                                 "norse": {"peak_mib": 90}, "snntorch": {"error": "failed"}}},
    }  # fmt: skip
    checks = {c["target"]: (c["value"], c["met"]) for c in bench_run.check_targets(res)}
    assert checks == {
        "(a) LIF fwd+bwd >= 2x fastest peer": ("2.50x vs norse", True),
        "(a) LIF fwd+bwd within 3x of DRAM floor (5 tensors)": ("2.00x", True),
        "(a) IF fwd+bwd within 3x of DRAM floor (5 tensors)": ("4.00x", False),
        "(b) CNN step >= 1.3x fastest peer": ("1.20x vs spikingjelly", False),
        "(c) peak memory vgg11 T=4 <= leanest peer": ("95 MiB vs norse 90 MiB", False),
    }


def test_cnn_step_runs_and_channels_last_matches():
    x, y = models.data(2, 4)
    losses = []
    for channels_last in (False, True):
        model = models.three_conv_cnn(lambda: peers.make_neuron_module("spikequant"))
        step = models.training_step(model, x, y, channels_last=channels_last)
        losses.append(float(step().detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_report_renders_from_results():
    timing = interleaved({"spikequant": lambda: None, "other": lambda: None}, repeats=3)
    res = {
        "date": "now",
        "libraries": {"spikequant": {"available": True, "version": "0"}},
        "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0},
        "cnn": {
            "input": [4, 32, 3, 32, 32],
            "step": {"spikequant (channels-last)": timing["spikequant"], "other": timing["other"]},
        },
    }
    text = render_markdown(res)
    assert "(b) 3-conv spiking CNN" in text and "| other |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_rows_say_in_one_line_that_there_is_no_gpu(capsys, tmp_path):
    result = bench_gpu(repeats=1)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [result["skipped"]] and "no CUDA device" in printed[0]
    res = {
        "date": "now",
        "libraries": {},
        "gpu": result,
        "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0},
    }
    assert result["skipped"] in render_markdown(res)
    assert "earlier run" not in render_markdown(res)
    assert bench_run.write_gpu_page(result, tmp_path) is None and not list(tmp_path.iterdir())
    res["gpu"] = {**result, "earlier_page": True}  # a page from a CUDA run is still there
    assert "[benchmarks-gpu.md](benchmarks-gpu.md)" in render_markdown(res)


# The GPU part's whole code path on CPU tensors: spikequant's Triton kernels in Triton's
# interpreter (TRITON_INTERPRET=1 must precede the import of triton, hence a fresh process; one
# thread, as tiny ops on a shared machine otherwise wait on each other), tiny shapes.
GPU_ON_CPU = """
import json, sys
from benchmarks import run
res = run.bench_gpu(1, device="cpu", steps=(2, 4), step_shape=(2, 64), copy_numel=1 << 18,
                    warmup=0, calls_per_sample=2, training={"steps": 2, "batch": 1, "width": 1 / 64,
                                        "size": {"vgg11": 32, "resnet19": 8}})
page = run.write_gpu_page(res, run.pathlib.Path(sys.argv[1]))
print(json.dumps({"result": res, "page": run.render_gpu_markdown(res), "written": str(page)}))
"""


@pytest.fixture(scope="module")
def gpu_part_on_cpu(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", GPU_ON_CPU, str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, folder


def _peer_present(lib: str) -> bool:
    return peers.available(lib)[0]


def test_gpu_part_runs_on_cpu_with_floor_and_reference_agreement(gpu_part_on_cpu):
    out, _ = gpu_part_on_cpu
    res = out["result"]
    assert res["device_type"] == "cpu" and res["step_shape"] == [2, 64]
    assert res["calls_per_sample"] == 2
    gbps = res["bandwidth"]["GBps"]
    assert gbps > 0 and res["bandwidth"]["bytes"] == 2 * 4 * (1 << 18)
    for kind in ("lif", "if"):
        rows = res[kind]["rows"]
        assert [r["T"] for r in rows] == [2, 4]
        for row in rows:
            timing = row["forward_backward"]
            assert {"spikequant (triton)", "spikequant (torch loop)"} <= set(timing)
            # 5 float32 tensors of [T, 2, 64] at the measured bandwidth
            floor = 5 * row["T"] * 2 * 64 * 4 / (gbps * 1e9) * 1e3
            assert row["floor_ms"] == pytest.approx(floor, rel=1e-3, abs=1e-4)
            ours = timing["spikequant (triton)"]["median_ms"]  # per call: 2 per sample
            assert row["triton_over_floor"] == pytest.approx(ours / row["floor_ms"], rel=0.01)
            # the Triton kernels reproduce the reference loop: spikes bit for bit, gradients
            assert row["triton_vs_reference"]["spikes_equal"] is True
            assert row["triton_vs_reference"]["grad_max_abs_diff"] < 1e-5
            # every library runs the same neuron on the same input: the same spikes
            assert len(set(row["spikes"].values())) == 1
            assert row["spikes"]["spikequant (triton)"] > 0
        skipped = res[kind]["skipped"]
        assert all(impl is None for impl in res[kind]["spikingjelly_ran"].values())  # CPU
        if _peer_present("spikingjelly"):
            assert "spikingjelly (torch)" in rows[0]["forward_backward"]
            # its GPU backends say why they did not run on a CPU tensor
            for backend in ("cuda", "triton"):
                assert "needs a CUDA tensor" in skipped[f"spikingjelly ({backend})"]
        else:
            assert all(f"spikingjelly ({b})" in skipped for b in bench_run.SJ_BACKENDS)


def test_gpu_training_steps_run_on_cpu_and_agree_on_the_first_loss(gpu_part_on_cpu):
    out, _ = gpu_part_on_cpu
    training = out["result"]["training"]
    assert training["peak_memory"] == "not measured: CUDA only"
    assert set(training["models"]) == {"vgg11", "resnet19"}
    assert training["models"]["resnet19"]["input"] == [2, 1, 3, 8, 8]
    for block in training["models"].values():
        libs = block["libraries"]
        expected = {"spikequant (triton)", "spikequant (torch loop)"}
        expected |= {"spikingjelly (torch)"} if _peer_present("spikingjelly") else set()
        expected |= {"snntorch"} if _peer_present("snntorch") else set()
        assert expected <= set(libs)
        ours = libs["spikequant (triton)"]["first_step_loss"]
        for lib, row in libs.items():
            # the same initial weights and neuron: the same loss before any update
            assert row["first_step_loss"] == pytest.approx(ours, rel=1e-5), lib
            assert row["peak_mib"] is None
            assert row["images_per_s"] == pytest.approx(1 / (row["median_ms"] / 1e3), rel=0.01)


def test_gpu_page_renders_rows_floor_and_targets_and_is_written_only_by_a_gpu_run(
    gpu_part_on_cpu, tmp_path
):
    out, folder = gpu_part_on_cpu
    res, page = out["result"], out["page"]
    assert out["written"] == "None" and not list(folder.iterdir())  # a CPU run writes no page
    targets = {c["target"]: c for c in res["targets"]}
    for kind in ("LIF", "IF"):
        assert f"(GPU) {kind} fwd+bwd T=4 within 2.0x of the bandwidth floor (5 tensors)" in targets
    if _peer_present("spikingjelly"):
        for name in ("vgg11", "resnet19"):
            target = f"(GPU) {name} training step T=2 >= 1.2x SpikingJelly's fastest backend"
            assert target in targets
        assert "(GPU) LIF fwd+bwd T=4 >= 1.5x SpikingJelly's fastest backend" in targets
    assert not any("peak memory" in t for t in targets)  # not measured on CPU
    assert all(isinstance(c["met"], bool) for c in res["targets"])
    assert page.startswith("# GPU benchmarks\n\nCommand: `")
    for text in (
        "## Speed targets on this run",
        "### LIF (median ms)",
        "### IF (median ms)",
        "triton / floor",
        "### vgg11, input [2, 1, 3, 32, 32]",
        "### resnet19",
        f"device copy bandwidth {res['bandwidth']['GBps']} GB/s",
    ):
        assert text in page
    floor = res["lif"]["rows"][1]["floor_ms"]
    assert f"| 4 | {floor:.4g} |" in page
    # the same results from a CUDA device are written, and the main page points to them
    written = bench_run.write_gpu_page({**res, "device_type": "cuda"}, tmp_path)
    assert written == tmp_path / "benchmarks-gpu.md" and written.read_text() == page
    main = render_markdown(
        {
            "date": "now",
            "libraries": {},
            "gpu": res,
            "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0},
        }
    )
    assert "[benchmarks-gpu.md](benchmarks-gpu.md)" in main
    assert res["targets"] == [c for c in bench_run.check_targets({"gpu": res})]


def test_gpu_targets_use_the_fastest_spikingjelly_backend_the_floor_and_peak_memory():
    ms = lambda v, **kw: {"median_ms": v, **kw}  # noqa: E731
    row = lambda t, fl, **timing: {"T": t, "floor_ms": fl, "forward_backward": timing}  # noqa: E731
    gpu = {
        "lif": {"rows": [row(2, 0.1, **{"spikequant (triton)": ms(9.0)}),
                         row(4, 0.2, **{"spikequant (triton)": ms(0.3),
                                        "spikingjelly (triton)": ms(0.6),
                                        "spikingjelly (torch)": ms(2.0), "snntorch": ms(0.1)})]},
        "if": {"rows": [row(4, 0.2, **{"spikequant (triton)": ms(0.5)})]},  # no SpikingJelly
        "training": {"steps": 4, "models": {"vgg11": {"libraries": {
            "spikequant (triton)": ms(10.0, peak_mib=900.0),
            "spikingjelly (cuda)": ms(11.0, peak_mib=800.0),
            "spikingjelly (torch)": ms(30.0, peak_mib=700.0)}}}},
    }  # fmt: skip
    checks = {c["target"]: (c["value"], c["met"]) for c in bench_run.gpu_targets(gpu)}
    assert checks == {
        "(GPU) LIF fwd+bwd T=4 >= 1.5x SpikingJelly's fastest backend":
            ("2.00x vs spikingjelly (triton)", True),
        "(GPU) LIF fwd+bwd T=4 within 2.0x of the bandwidth floor (5 tensors)": ("1.50x", True),
        "(GPU) IF fwd+bwd T=4 within 2.0x of the bandwidth floor (5 tensors)": ("2.50x", False),
        "(GPU) vgg11 training step T=4 >= 1.2x SpikingJelly's fastest backend":
            ("1.10x vs spikingjelly (cuda)", False),
        "(GPU) vgg11 training step peak memory <= SpikingJelly's (its fastest backend)":
            ("900.0 MiB vs 800.0 MiB", False),
    }  # fmt: skip


def test_each_spikingjelly_layer_pins_its_own_cuda_implementation():
    """SpikingJelly 2.x chooses its CUDA implementation once per process; each benchmark layer
    installs its own choice (and its own cache of it) when it runs on a CUDA tensor, and says
    why it cannot run its GPU backends on a CPU tensor."""
    pytest.importorskip("spikingjelly", reason="SpikingJelly is installed by make bench")
    import importlib
    import inspect

    from spikingjelly.activation_based import neuron

    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        pytest.skip("this SpikingJelly takes the backend as an argument (no pinning needed)")
    selection = importlib.import_module("spikingjelly._ops.lif")._selection
    saved = {
        a: getattr(selection, a) for a in ("_requested", "_selections", "_compiled_selections")
    }
    on_cuda = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    try:
        pin_triton = peers._pin_sj2_backend("lif", "triton")
        pin_torch = peers._pin_sj2_backend("lif", "torch")
        pin_triton(on_cuda)
        assert selection._requested == "triton"
        triton_cache = selection._selections
        pin_torch(on_cuda)
        assert selection._requested == "torch" and selection._selections is not triton_cache
        pin_triton(on_cuda)
        assert selection._requested == "triton" and selection._selections is triton_cache
    finally:
        for attr, value in saved.items():
            setattr(selection, attr, value)
    with pytest.raises(RuntimeError, match="needs a CUDA tensor"):
        peers._pin_sj2_backend("lif", "cuda")(torch.zeros(1))
    with pytest.raises(ValueError, match="no 'cupy' backend"):
        peers.make_layer("spikingjelly", "if", backend="cupy")


def test_resnet19_is_spikequants_layout_around_any_neuron():
    """The benchmark's ResNet-19 has spikequant's conv/BN/linear layers in the same order and
    its 1,442,048 spiking neurons on a 32x32 input."""
    from spikequant.registry import create_model

    def shapes(model):
        kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)
        return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, kinds)]

    counted = []

    class Count(torch.nn.Module):
        def forward(self, x):
            counted.append(x[0, 0].numel())
            return x

    model = models.resnet19(Count)
    assert shapes(model) == shapes(create_model("resnet19"))
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 32, 32)).shape == (1, 1, 10)
    assert sum(counted) == 1_442_048 and len(counted) == 2 + 2 * 8


def test_runtime_part_renders_its_own_section():
    from benchmarks.bench_runtime import _checks

    timing = {"batch1_ms": 2.0, "batch32_ms": 60.0, "peak_rss_kib": 40_000,
              "rss_before_run_kib": 39_000, "predictions": [3]}  # fmt: skip
    row = {
        "prepare": {"weights": 10, "neurons": 20, "removed_channels": 0, "int32_layers": 5,
                    "program_weight_bytes": 40, "fakequant_prediction": [3]},
        "runtime": {**timing, "held_bytes": {"weights": 1, "membranes": 1, "spikes": 1,
                                             "scratch": 1}, "torch_imported": False},
        "float_calif": {**timing, "batch1_ms": 100.0, "peak_rss_kib": 280_000},
    }  # fmt: skip
    row["checks"] = _checks(row)
    assert row["checks"]["speedup_vs_float_calif_b1"] == 50.0
    assert row["checks"]["prediction_matches_float_calif"] is True
    res = {
        "date": "now",
        "libraries": {},
        "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0},
        "runtime": {"command": "c", "date": "now", "load_average": [1.0, 1.0, 1.0],
                    "cpu_count": 2, "networks": {"calif_lenet": row}},
    }  # fmt: skip
    text = render_markdown(res)
    assert "## (e) Integer runtime" in text and "### calif_lenet" in text
    assert "| float_calif | 100.00 |" in text and "50.00x at batch 1" in text
