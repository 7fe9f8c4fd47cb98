"""The fused C++ kernels as torch.library operators: torch.compile, torch.export and ONNX export
of a small spiking model give the eager results; a failed build is said once, in one line."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn

from spikequant import kernels
from spikequant.layers import TimeFold
from spikequant.neurons import LIF, ATIFnu, ATIFu, reset_state

REQUIRED = os.environ.get("SPIKEQUANT_REQUIRE_KERNELS") == "1"
needs_kernels = pytest.mark.skipif(
    not kernels.available() and not REQUIRED,
    reason=f"fused kernels unavailable: {kernels.unavailable_reason()}",
)


class SmallNet(nn.Module):
    def __init__(self, backend: str = "fused"):
        super().__init__()
        self.fc1 = TimeFold(nn.Linear(6, 8))
        self.lif = LIF(tau=2.0, learn_threshold=True, num_channels=8, backend=backend)
        self.fc2 = TimeFold(nn.Linear(8, 5))
        self.atif = ATIFu(threshold=0.8, backend=backend)
        self.fc3 = TimeFold(nn.Linear(5, 3))
        self.atif_nu = ATIFnu(timesteps=4, threshold=0.7)
        self.atif_nu.backend = backend

    def forward(self, x):
        reset_state(self)
        return self.atif_nu(self.fc3(self.atif(self.fc2(self.lif(self.fc1(x))))))


def _model_and_input():
    torch.manual_seed(0)
    return SmallNet(), torch.randn(4, 3, 6) * 2


def _ops_in(graph) -> list[str]:
    return [str(node.target) for node in graph.nodes if "spikequant" in str(node.target)]


@needs_kernels
def test_compile_traces_the_neurons_without_graph_break():
    model, x = _model_and_input()
    x = x.requires_grad_(True)
    eager = model(x)
    eager.sum().backward()
    eager_grads = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    x.grad = None
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break is an error
    out = compiled(x)
    out.sum().backward()
    assert torch.equal(out, eager)
    grads = [x.grad] + [p.grad for p in model.parameters()]
    for got, want in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@needs_kernels
def test_export_keeps_the_fused_operator():
    model, x = _model_and_input()
    with torch.no_grad():
        eager = model(x)
    program = torch.export.export(model, (x,))
    assert _ops_in(program.graph) == ["spikequant.integrate_fire_forward.default"] * 3
    assert torch.equal(program.module()(x), eager)


def test_onnx_export_decomposes_to_reference_ops(tmp_path):
    onnx = pytest.importorskip("onnx", reason="pip install onnx onnxscript (the dev extra)")
    pytest.importorskip("onnxscript", reason="pip install onnxscript (the dev extra)")
    from onnx.reference import ReferenceEvaluator

    model, x = _model_and_input()
    model.eval()
    with torch.no_grad():
        eager = model(x)
    path = tmp_path / "snn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    assert "GreaterOrEqual" in ops  # the spike condition of the reference step
    assert not any(node.domain.startswith("spikequant") for node in proto.graph.node)
    got = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})[0]
    assert torch.equal(torch.from_numpy(got), eager)


def test_failed_build_is_said_once_with_the_reason(monkeypatch, tmp_path, caplog, capsys):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("error: c++: command not found (simulated)")

    monkeypatch.setenv("SPIKEQUANT_CACHE", str(tmp_path))
    monkeypatch.delenv("SPIKEQUANT_DISABLE_KERNELS", raising=False)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(kernels.NEURON_EXTENSION, "module", None)
    monkeypatch.setattr(kernels.NEURON_EXTENSION, "error", None)
    monkeypatch.setattr(kernels, "_fallback_said", False)
    x = torch.randn(3, 2, 4)
    with caplog.at_level(logging.WARNING, logger="spikequant.kernels"):
        first = LIF()(x)
        LIF()(x)
    assert "compiling fused kernels once" in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "spikequant.kernels"]
    assert len(lines) == 1 and "c++: command not found" in lines[0], lines
    assert "\n" not in lines[0]
    assert torch.equal(first, LIF(backend="torch")(x))
