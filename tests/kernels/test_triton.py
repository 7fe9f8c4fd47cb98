"""The Triton kernels against the pure-PyTorch step functions (the reference), on CPU tensors.

Triton's interpreter (``TRITON_INTERPRET=1``) runs the same kernel code as a GPU, one program at a
time in NumPy; it must be set before the kernels are defined, so this module sets it at import
and (re)loads ``spikequant.kernels.triton_neuron`` under it. Spikes and final membranes must
match exactly, gradients w.r.t. input, initial membrane and threshold to 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

# Triton decides at import whether it interprets; imported earlier in this process without the
# flag (e.g. by torch.compile in another test), its interpreter cannot be switched on any more,
# and these checks run in a fresh interpreter instead (test_in_a_fresh_process).
PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
if not PREIMPORTED:
    os.environ["TRITON_INTERPRET"] = "1"

from spikequant import kernels  # noqa: E402
from spikequant.errors import ConfigError  # noqa: E402
from spikequant.neurons import (  # noqa: E402
    IF,
    LIF,
    ATIFnu,
    ATIFu,
    MembraneState,
    Subtract,
    Zero,
    reset_state,
)
from spikequant.neurons.atif_nu import StepState  # noqa: E402
from spikequant.surrogate import Atan, Rectangle, Sigmoid, Triangle  # noqa: E402

REQUIRED = os.environ.get("SPIKEQUANT_REQUIRE_KERNELS") == "1"

try:
    import triton  # noqa: F401

    from spikequant.kernels import triton_neuron

    MISSING = None
except ImportError as exc:
    MISSING = f"triton not installed ({exc})"

if MISSING and REQUIRED:
    raise RuntimeError(f"SPIKEQUANT_REQUIRE_KERNELS=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
in_process = pytest.mark.skipif(PREIMPORTED, reason="run by test_in_a_fresh_process")


@pytest.mark.skipif(not PREIMPORTED, reason="the checks below run in this process")
def test_in_a_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            __file__,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


SURROGATES = {
    "sigmoid": Sigmoid(4.0),
    "triangle": Triangle(1.0),
    "atan": Atan(2.0),
    "rectangle": Rectangle(1.0),
}
CHANNELS = 3


def _make(kind: str, surrogate, reset: str, per_channel: bool, gen: torch.Generator):
    channels = CHANNELS if per_channel else None
    hard = Zero(v_reset=-0.2) if kind == "lif" else Zero(detach=True)
    soft = Subtract(detach=kind == "lif_in")
    reset_obj = hard if reset == "hard" else soft
    if kind == "if":
        neuron = IF(
            threshold=0.8,
            learn_threshold=True,
            num_channels=channels,
            surrogate=surrogate,
            reset=reset_obj,
            scale_output=True,
        )
    elif kind in ("lif", "lif_in"):
        neuron = LIF(
            tau=2.5,
            decay_input=kind == "lif_in",
            threshold=0.7,
            learn_threshold=True,
            num_channels=channels,
            surrogate=surrogate,
            reset=reset_obj,
        )
    elif kind == "atif_u":
        neuron = ATIFu(threshold=0.9, num_channels=channels, surrogate=surrogate, reset=soft)
    else:
        neuron = ATIFnu(timesteps=5, threshold=1.0, num_channels=channels, surrogate=surrogate)
        with torch.no_grad():
            neuron.raw_increments.add_(
                torch.randn(neuron.raw_increments.shape, generator=gen) * 0.3
            )
        return neuron
    if per_channel:
        with torch.no_grad():
            neuron.threshold.mul_(torch.rand(CHANNELS, generator=gen) + 0.5)
    return neuron


def _run(neuron, x, v0, weights, weights_v, backend):
    """Forward from v0, a weighted loss over outputs and final membrane, and all gradients."""
    neuron.backend = backend
    reset_state(neuron)
    neuron.zero_grad()
    x = x.clone().requires_grad_(True)
    v0 = v0.clone().requires_grad_(True)
    neuron.state = StepState(v0, 0) if isinstance(neuron, ATIFnu) else MembraneState(v0)
    out = neuron(x)
    v_final = neuron.state.v
    ((out.float() * weights).sum() + (v_final.float() * weights_v).sum()).backward()
    param = neuron.raw_increments if isinstance(neuron, ATIFnu) else neuron.threshold
    grad = None if param.grad is None else param.grad.clone()
    return out.detach(), v_final.detach(), x.grad, v0.grad, grad


def _inputs(gen, steps=5, shape=(2, CHANNELS, 4)):
    x = torch.randn(steps, *shape, generator=gen) * 0.8 + 0.2
    v0 = torch.randn(shape, generator=gen) * 0.3
    return x, v0, torch.randn(x.shape, generator=gen), torch.randn(shape, generator=gen)


def _assert_same(ref, got, tol=1e-5):
    assert torch.equal(ref[0], got[0]), "spikes differ"
    assert torch.equal(ref[1], got[1]), "final membranes differ"
    for name, a, b in zip(("x", "v0", "threshold"), ref[2:], got[2:], strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=f"grad {name}")


CASES = [
    (kind, surrogate, reset, per_channel)
    for kind in ("if", "lif", "lif_in", "atif_u", "atif_nu")
    for surrogate in SURROGATES
    for reset in (("soft", "hard") if kind in ("if", "lif", "lif_in") else ("soft",))
    for per_channel in (False, True)
]


@in_process
@pytest.mark.parametrize("kind,surrogate,reset,per_channel", CASES)
def test_triton_matches_reference(kind, surrogate, reset, per_channel):
    gen = torch.Generator().manual_seed(CASES.index((kind, surrogate, reset, per_channel)))
    neuron = _make(kind, SURROGATES[surrogate], reset, per_channel, gen)
    x, v0, weights, weights_v = _inputs(gen)
    _assert_same(
        _run(neuron, x, v0, weights, weights_v, "torch"),
        _run(neuron, x, v0, weights, weights_v, "triton"),
    )


@in_process
def test_more_steps_than_one_register_segment():
    # T = 35 > 32: backward recomputes the earlier segment from v0
    gen = torch.Generator().manual_seed(2)
    neuron = _make("atif_u", Atan(2.0), "soft", True, gen)
    x, v0, weights, weights_v = _inputs(gen, steps=35, shape=(1, CHANNELS, 2))
    _assert_same(
        _run(neuron, x, v0, weights, weights_v, "torch"),
        _run(neuron, x, v0, weights, weights_v, "triton"),
    )


@in_process
@pytest.mark.parametrize(
    "kind,dtype",
    [
        ("lif", torch.bfloat16),
        ("atif_u", torch.bfloat16),
        ("atif_nu", torch.bfloat16),
        ("atif_u", torch.float16),
    ],
)
def test_half_precision_input_is_computed_in_float32(kind, dtype):
    # bf16/fp16 in, float32 arithmetic: equal to the float32 reference on the same input values
    gen = torch.Generator().manual_seed(3)
    neuron = _make(kind, Sigmoid(4.0), "soft", True, gen)
    x, v0, weights, weights_v = _inputs(gen)
    # the gradient reaching a half-precision output is rounded: give the reference the same
    weights = weights.to(dtype).float()
    x16 = x.to(dtype)
    ref = _run(neuron, x16.float(), v0, weights, weights_v, "torch")
    got = _run(neuron, x16, v0, weights, weights_v, "triton")
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert torch.equal(got[0], ref[0].to(dtype))
    assert torch.equal(got[1], ref[1])
    ulp = 2**-7 if dtype == torch.bfloat16 else 2**-10
    torch.testing.assert_close(got[2].float(), ref[2], rtol=ulp, atol=1e-5)  # one ulp
    for a, b in zip(ref[3:], got[3:], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@in_process
def test_channels_last_steps_without_copy():
    gen = torch.Generator().manual_seed(4)
    steps, batch = 3, 2
    folded = torch.randn(steps * batch, CHANNELS, 4, 5, generator=gen)
    x = folded.to(memory_format=torch.channels_last).view(steps, batch, CHANNELS, 4, 5)
    neuron = _make("lif", Triangle(1.0), "soft", True, gen)
    v0 = torch.zeros(x.shape[1:])
    weights = torch.randn(x.shape, generator=gen)
    ref = _run(neuron, x, v0, weights, torch.zeros_like(v0), "torch")
    got = _run(neuron, x, v0, weights, torch.zeros_like(v0), "triton")
    _assert_same(ref, got)
    reset_state(neuron)
    assert neuron(x).stride() == x.stride()


@in_process
def test_inference_and_chunks_match():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 2, 8, generator=gen)
    outputs = {}
    for backend in ("torch", "triton"):
        neuron = LIF(tau=3.0, backend=backend)
        with torch.no_grad():
            outputs[backend] = torch.cat([neuron(chunk) for chunk in x.split(4)])
    assert torch.equal(outputs["torch"], outputs["triton"])


@in_process
def test_explicit_triton_that_cannot_run_raises(monkeypatch):
    x = torch.randn(3, 2, 4)
    with pytest.raises(ConfigError, match="float64"):
        IF(backend="triton")(x.double())
    monkeypatch.setattr(triton_neuron, "_INTERPRETED", False)
    with pytest.raises(ConfigError, match="CUDA"):
        IF(backend="triton")(x)
    monkeypatch.setattr(triton_neuron, "_IMPORT_ERROR", "triton is not installed (simulated)")
    with pytest.raises(ConfigError, match="simulated"):
        LIF(backend="triton")(x)


@in_process
def test_auto_uses_cpp_on_cpu_not_triton():
    x = torch.randn(3, 2, 4)
    expected = "cpp" if kernels.available() else None
    assert kernels.choose_backend(x, "auto") == expected
    assert kernels.choose_backend(x, "triton") == "triton"


_COMPILE_FOR_GPU = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spikequant.kernels import triton_neuron as tn

def compile_ptx(kernel, pointers, scalars, consts):
    signature = {**pointers, **{k: "i32" for k in "NTPSC"}, **{k: "fp32" for k in scalars}}
    signature.update({k: "constexpr" for k in consts})
    source = ASTSource(kernel, signature, consts)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"enable_fp_fusion": False})
    return compiled.asm["ptx"]

fwd = compile_ptx(
    tn._forward_kernel,
    {"x_ptr": "*bf16", "v0_ptr": "*fp32", "th_ptr": "*fp32", "sv_ptr": "*fp32",
     "out_ptr": "*bf16", "vt_ptr": "*fp32"},
    ("a", "b", "v_reset"),
    dict(HARD=True, SCALED=True, PER_CHANNEL=True, PER_STEP=True, BLOCK=256))
bwd = compile_ptx(
    tn._backward_kernel,
    {"go_ptr": "*bf16", "gvt_ptr": "*fp32", "x_ptr": "*bf16", "v0_ptr": "*fp32",
     "th_ptr": "*fp32", "sv_ptr": "*fp32", "gx_ptr": "*bf16", "gv0_ptr": "*fp32",
     "dth_ptr": "*fp32", "dsv_ptr": "*fp32"},
    ("a", "b", "v_reset", "alpha", "c1", "c2"),
    dict(KIND=0, HARD=False, SCALED=True, DETACH=False, PER_CHANNEL=True, PER_STEP=True,
         HAS_GO=True, HAS_GVT=True, NEED_V0=True, NEED_TH=True, NEED_SV=True, SEG=32,
         BLOCK=128))
assert "fma." not in fwd and "fma." not in bwd, "fused multiply-add in the kernels"
print("ok")
"""


def test_kernels_compile_for_a_gpu_without_fma():
    # Without a GPU: compile the most general forward and backward for sm_90 (Triton ships the
    # NVIDIA toolchain), outside the interpreter, and check that no multiply-add was fused.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_GPU],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
