"""The benchmark harness: timings, ratios and targets computed right (on stubs with known
answers), the CNN workload, and the report. The peer libraries are not installed here (only
`make bench` installs them); their spike counts next to spikequant's are in the benchmark report."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from benchmarks import models, peers
from benchmarks import run as bench_run
from benchmarks.run import bench_gpu, interleaved, render_markdown


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
def test_gpu_rows_say_in_one_line_that_there_is_no_gpu(capsys):
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
