"""The fused kernels against the pure-PyTorch step functions (the reference).

Spikes must match exactly; gradients w.r.t. input, initial membrane and threshold to 1e-5.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from spikequant import kernels
from spikequant.errors import ConfigError
from spikequant.neurons import IF, LIF, ATIFu, MembraneState, Subtract, Zero, reset_state
from spikequant.surrogate import Atan, Rectangle, Sigmoid, Surrogate, Triangle

# CI sets SPIKEQUANT_REQUIRE_KERNELS=1: there a failed build fails these tests instead of skipping.
REQUIRED = os.environ.get("SPIKEQUANT_REQUIRE_KERNELS") == "1"
pytestmark = pytest.mark.skipif(
    not kernels.available() and not REQUIRED,
    reason=f"fused kernels unavailable: {kernels.unavailable_reason()}",
)


def test_extension_builds():
    assert kernels.available(), f"fused kernels did not build: {kernels.unavailable_reason()}"


SURROGATES = [Sigmoid, Triangle, Atan, Rectangle]


def _run(neuron, x, v0, weights, weights_v):
    """Forward from v0, a weighted loss over outputs and final membrane, and all gradients."""
    reset_state(neuron)
    x = x.clone().requires_grad_(True)
    v0 = v0.clone().requires_grad_(True)
    neuron.state = MembraneState(v0)
    out = neuron(x)
    v_final = neuron.state.v
    loss = (out * weights).sum() + (v_final * weights_v).sum()
    loss.backward()
    th_grad = None if neuron.threshold.grad is None else neuron.threshold.grad.clone()
    neuron.threshold.grad = None
    return out.detach(), v_final.detach(), x.grad, v0.grad, th_grad


def _random_case(rng: random.Random, dtype=torch.float32):
    steps = rng.randint(1, 9)
    batch = rng.randint(1, 4)
    channels = rng.randint(1, 6)
    extra = [rng.randint(1, 5) for _ in range(rng.randint(0, 2))]
    per_channel = rng.random() < 0.5
    surrogate = rng.choice(SURROGATES)(alpha=rng.choice([0.5, 1.0, 2.0, 4.0, 5.0]))
    detach = rng.random() < 0.3
    hard = rng.random() < 0.4
    reset = Zero(v_reset=rng.choice([0.0, 0.0, -0.2]), detach=detach) if hard else Subtract(detach)
    kind = rng.choice(["if", "lif", "lif_in", "atif_u"])
    common = dict(
        threshold=rng.uniform(0.3, 1.5),
        learn_threshold=rng.random() < 0.7,
        num_channels=channels if per_channel else None,
        surrogate=surrogate,
        scale_output=rng.random() < 0.4,
    )
    if kind == "if":
        neuron = IF(reset=reset, **common)
    elif kind.startswith("lif"):
        neuron = LIF(tau=rng.uniform(1.0, 4.0), decay_input=kind == "lif_in", reset=reset, **common)
    else:
        common.pop("scale_output")
        common.pop("learn_threshold")
        neuron = ATIFu(reset=Subtract(detach), **common)
    if per_channel:
        with torch.no_grad():
            neuron.threshold.mul_(torch.rand(channels) + 0.5)
    neuron = neuron.to(dtype)
    shape = (steps, batch, channels, *extra)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(shape, generator=gen, dtype=dtype) * rng.uniform(0.3, 1.5)
    v0 = torch.randn(shape[1:], generator=gen, dtype=dtype) * 0.5
    weights = torch.randn(shape, generator=gen, dtype=dtype)
    weights_v = torch.randn(shape[1:], generator=gen, dtype=dtype)
    return neuron, x, v0, weights, weights_v


def _compare(neuron, x, v0, weights, weights_v, tol=1e-5):
    neuron.backend = "torch"
    ref = _run(neuron, x, v0, weights, weights_v)
    neuron.backend = "fused"
    got = _run(neuron, x, v0, weights, weights_v)
    assert torch.equal(ref[0], got[0]), f"spikes differ for {neuron}"
    assert torch.equal(ref[1], got[1]), "final membranes differ"
    for name, a, b in zip(("x", "v0", "threshold"), ref[2:], got[2:], strict=False):
        if a is None:
            assert b is None, name
            continue
        assert b is not None, name
        torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=f"grad {name} of {neuron}")


@pytest.mark.parametrize("seed", range(8))
def test_random_configurations_match_reference(seed):
    rng = random.Random(1000 + seed)
    for _ in range(25):
        _compare(*_random_case(rng))


def test_float64_matches_reference():
    rng = random.Random(7)
    for _ in range(20):
        _compare(*_random_case(rng, torch.float64), tol=1e-10)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset", [Subtract(), Zero(), Subtract(detach=True), Zero(detach=True)])
def test_ties_at_threshold_fire_identically(surrogate, reset):
    # Inputs on a grid of exact binary fractions make h == V_th happen often (>= must fire).
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-2, 5, (6, 3, 4, 5), generator=gen).float() * 0.25
    neuron = LIF(
        tau=2.0,
        threshold=0.5,
        learn_threshold=True,
        num_channels=4,
        surrogate=surrogate(),
        reset=reset,
    )
    weights = torch.randn(x.shape, generator=gen)
    _compare(neuron, x, torch.zeros(x.shape[1:]), weights, torch.zeros(x.shape[1:]))


def test_larger_layer_threshold_gradient():
    # Many elements per channel: the threshold gradient is a long sum (accumulated in double).
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(8, 16, 8, 16, 16, generator=gen)
    neuron = ATIFu(threshold=1.0, num_channels=8, surrogate=Sigmoid(4.0))
    weights = torch.randn(x.shape, generator=gen)
    _compare(neuron, x, torch.zeros(x.shape[1:]), weights, torch.zeros(x.shape[1:]), tol=1e-4)


def test_state_carries_over_chunks_like_reference():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, 32, generator=gen)
    outputs = {}
    for backend in ("torch", "fused"):
        neuron = LIF(tau=3.0, learn_threshold=True, backend=backend)
        xs = x.clone().requires_grad_(True)
        chunks = [neuron(chunk) for chunk in xs.split(5)]
        torch.cat(chunks).pow(2).sum().backward()
        outputs[backend] = (torch.cat(chunks).detach(), xs.grad, neuron.threshold.grad)
    assert torch.equal(outputs["torch"][0], outputs["fused"][0])
    torch.testing.assert_close(outputs["fused"][1], outputs["torch"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["fused"][2], outputs["torch"][2], rtol=1e-5, atol=1e-5)


def test_results_do_not_depend_on_the_thread_count():
    # the suite runs one thread per worker (tests/conftest.py): the OpenMP split is checked here
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(6, 4, 16, 12, 12, generator=gen)
    weights = torch.randn(x.shape, generator=gen)
    previous = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            neuron = ATIFu(threshold=0.8, num_channels=16, surrogate=Sigmoid(4.0), backend="fused")
            xs = x.clone().requires_grad_(True)
            out = neuron(xs)
            (out * weights).sum().backward()
            results[threads] = (out.detach(), xs.grad, neuron.threshold.grad)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[1][0], results[2][0])
    assert torch.equal(results[1][1], results[2][1])
    torch.testing.assert_close(results[1][2], results[2][2], rtol=1e-6, atol=1e-6)


def test_inference_without_grad_matches():
    x = torch.randn(5, 3, 7)
    ref = IF(threshold=0.7)(x)
    with torch.no_grad():
        got = IF(threshold=0.7, backend="fused")(x)
    assert torch.equal(ref, got)


def test_auto_falls_back_and_fused_raises_for_unsupported():
    class Custom(Surrogate):
        kind = "custom"

        def grad(self, q):
            return torch.ones_like(q)

    x = torch.randn(4, 2, 3)
    auto = IF(surrogate=Custom(), backend="auto")
    assert torch.equal(auto(x), IF(surrogate=Custom())(x))
    with pytest.raises(ConfigError):
        IF(surrogate=Custom(), backend="fused")(x)
    with pytest.raises(ConfigError):
        IF(backend="fused")(x.to(torch.bfloat16))
    assert IF(backend="auto")(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_unavailable_extension_falls_back_cleanly(monkeypatch):
    monkeypatch.setattr(kernels.NEURON_EXTENSION, "module", None)
    monkeypatch.setattr(kernels.NEURON_EXTENSION, "error", "no compiler (simulated)")
    x = torch.randn(4, 2, 3)
    assert torch.equal(LIF(backend="auto")(x), LIF()(x))
    with pytest.raises(ConfigError, match="simulated"):
        LIF(backend="fused")(x)


def test_per_channel_mismatch_is_rejected():
    x = torch.randn(4, 2, 3, 5)
    with pytest.raises(ConfigError):
        IF(num_channels=5, backend="fused")(x)


@pytest.mark.parametrize("per_channel", [False, True])
def test_channels_last_and_strided_inputs(per_channel):
    gen = torch.Generator().manual_seed(21)
    steps, batch, channels = 3, 2, 4
    folded = torch.randn(steps * batch, channels, 5, 6, generator=gen)
    layouts = {
        "channels_last": folded.to(memory_format=torch.channels_last),
        "transposed": folded.transpose(2, 3).contiguous().transpose(2, 3),
    }
    for name, tensor in layouts.items():
        x = tensor.view(steps, batch, channels, 5, 6)
        assert torch.equal(x, folded.view(steps, batch, channels, 5, 6))
        neuron = LIF(
            tau=2.0,
            learn_threshold=True,
            num_channels=channels if per_channel else None,
            surrogate=Atan(),
            reset=Subtract(),
        )
        if per_channel:
            with torch.no_grad():
                neuron.threshold.copy_(torch.tensor([0.5, 0.8, 1.0, 1.3]))
        weights = torch.randn(x.shape, generator=gen)
        _compare(neuron, x, torch.zeros(x.shape[1:]), weights, torch.zeros(x.shape[1:]))
        neuron.backend = "fused"
        reset_state(neuron)
        out = neuron(x)
        if name == "channels_last":
            assert out.stride() == x.stride(), "channels-last output keeps the input layout"


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_atif_nu_matches_reference(per_channel, surrogate):
    from spikequant.neurons import ATIFnu
    from spikequant.neurons.atif_nu import StepState

    gen = torch.Generator().manual_seed(31)
    steps, channels = 5, 3
    neuron = ATIFnu(
        timesteps=steps,
        threshold=1.0,
        surrogate=surrogate(),
        num_channels=channels if per_channel else None,
    )
    with torch.no_grad():
        neuron.raw_increments.add_(torch.randn(neuron.raw_increments.shape, generator=gen) * 0.3)
    x = torch.rand(steps, 4, channels, 6, generator=gen) * 1.2
    weights = torch.randn(x.shape, generator=gen)
    results = {}
    for backend in ("torch", "fused"):
        neuron.backend = backend
        reset_state(neuron)
        neuron.zero_grad()
        xs = x.clone().requires_grad_(True)
        # two chunks: the second starts at step 2 of the threshold schedule
        out = torch.cat([neuron(xs[:2]), neuron(xs[2:])])
        assert isinstance(neuron.state, StepState) and neuron.state.t == steps
        ((out * weights).sum() + neuron.state.v.sum()).backward()
        results[backend] = (out.detach(), xs.grad, neuron.raw_increments.grad.clone())
    assert torch.equal(results["torch"][0], results["fused"][0])
    for a, b in zip(results["torch"][1:], results["fused"][1:], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
