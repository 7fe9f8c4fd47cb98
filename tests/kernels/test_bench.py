"""The benchmark's peer adapters really run the same neurons (equal spike counts)."""

from __future__ import annotations

import pytest
import torch
from benchmarks import models, peers
from benchmarks.run import bench_gpu, interleaved, render_markdown


@pytest.mark.parametrize("kind", ["lif", "if"])
def test_available_peers_produce_the_same_spikes(kind):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 128, generator=gen) + 0.5
    reference = peers.make_layer("spikequant", kind, backend="torch")
    with torch.no_grad():
        expected = reference.run(x)
    for lib in peers.LIBRARIES:
        if not peers.available(lib)[0]:
            continue
        layer = peers.make_layer(lib, kind)
        with torch.no_grad():
            spikes = layer.run(x * layer.input_scale)
        assert spikes.shape == expected.shape
        assert torch.equal(spikes.float(), expected), lib


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
        "date": "now", "libraries": {"spikequant": {"available": True, "version": "0"}},
        "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0},
        "cnn": {"input": [4, 32, 3, 32, 32], "step": {"spikequant (channels-last)": timing[
            "spikequant"], "other": timing["other"]}},
    }
    text = render_markdown(res)
    assert "(b) 3-conv spiking CNN" in text and "| other |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_rows_say_in_one_line_that_there_is_no_gpu(capsys):
    result = bench_gpu(repeats=1)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [result["skipped"]] and "no CUDA device" in printed[0]
    res = {"date": "now", "libraries": {}, "gpu": result,
           "environment": {"cpu": "cpu", "cores": 2, "threads": 2, "torch": "2", "load_before": 0}}
    assert result["skipped"] in render_markdown(res)
