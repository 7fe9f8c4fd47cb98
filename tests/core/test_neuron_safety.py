"""Numerical safety of every registered neuron and of the fused kernel entry point: non-finite
parameters are refused naming the layer, empty sequences are a ShapeError, and half/double
precision inputs give the reference result at their precision."""

from __future__ import annotations

import pytest
import torch

from spikequant import kernels
from spikequant.errors import ConfigError, NonFiniteError, ShapeError
from spikequant.registry import create_neuron, list_neurons

T = 4


def make(name: str, **kwargs):
    try:
        return create_neuron(name, timesteps=T, **kwargs)
    except (TypeError, ConfigError):  # neurons without a fixed number of steps
        return create_neuron(name, **kwargs)


def drive(shape=(T, 3, 5), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 1.5).to(dtype)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", list_neurons())
def test_non_finite_parameter_is_refused_naming_the_layer(name, bad):
    neuron = make(name)
    pname, param = next(
        (n, t) for n, t in (*neuron.named_parameters(), *neuron.named_buffers())
        if t.is_floating_point()
    )  # fmt: skip
    with torch.no_grad():
        param.view(-1)[0] = bad
    with pytest.raises(NonFiniteError, match=rf"{type(neuron).__name__} layer .*{pname}"):
        neuron(drive())


@pytest.mark.parametrize("shape", [(0, 3, 5), (T, 0, 5), (T, 3, 0)])
@pytest.mark.parametrize("name", list_neurons())
def test_empty_sequence_is_a_shape_error(name, shape):
    with pytest.raises(ShapeError, match="empty"):
        make(name)(torch.zeros(shape))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list_neurons())
def test_half_precision_input_under_autocast_integrates_in_float32(name, dtype):
    """Under mixed precision (autocast hands neurons half-precision conv outputs) the membrane
    integrates in float32: the result equals the float32 run on the same rounded values, bit
    for bit."""
    x = drive(dtype=dtype)
    with torch.autocast("cpu", dtype=dtype):
        got = make(name)(x)
    assert torch.equal(got.float(), make(name)(x.float()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list_neurons())
def test_half_precision_input_keeps_its_dtype_and_stays_close(name, dtype):
    """A plain half-precision call computes in that precision: same dtype, finite, and the
    same spikes as float32 except where rounding moves a membrane across the threshold."""
    x = drive(dtype=dtype)
    got = make(name)(x)
    want = make(name)(x.float())
    assert got.dtype == dtype
    assert torch.isfinite(got.float()).all()
    eps = torch.finfo(dtype).eps * 8  # graded outputs (MSAT) round at the dtype's precision
    differing = (~torch.isclose(got.float(), want, rtol=eps, atol=eps)).float().mean().item()
    assert differing <= 0.1, f"{differing:.0%} of the outputs differ from float32"


@pytest.mark.parametrize("name", list_neurons())
def test_double_precision_input_matches_the_float64_reference(name):
    """float64 stays float64 (the C++ kernel takes it) and equals the reference step loop in
    float64; the spikes equal the float32 run's away from the threshold."""
    x = drive(dtype=torch.float64)
    neuron = make(name)
    got = neuron(x)
    assert got.dtype == torch.float64
    if hasattr(neuron, "backend"):
        reference = make(name)
        reference.backend = "torch"
        torch.testing.assert_close(got, reference(x), rtol=0, atol=1e-12)
    single = make(name)(x.float())
    assert (got.float() - single).abs().max() <= 1e-5 * max(1.0, single.abs().max().item()) or (
        (got.float() != single).float().mean() < 0.05  # a few spikes flip at the threshold
    )


def test_integer_input_is_refused():
    with pytest.raises(ShapeError, match="floating-point"):
        make("if")(torch.ones(T, 2, 3, dtype=torch.int64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_kernel_refuses_non_finite_threshold(backend, bad):
    x = drive()
    v0 = torch.zeros_like(x[0])
    with pytest.raises(NonFiniteError, match="threshold"):
        kernels.integrate_fire(
            x, v0, torch.tensor(bad), surrogate_kind="sigmoid", alpha=4.0, backend=backend
        )
    with pytest.raises(NonFiniteError, match="spike value"):
        kernels.integrate_fire(
            x,
            v0,
            torch.tensor(1.0),
            surrogate_kind="sigmoid",
            alpha=4.0,
            backend=backend,
            spike_value=torch.tensor(bad),
        )
    with pytest.raises(NonFiniteError, match="finite"):
        kernels.integrate_fire(
            x,
            v0,
            torch.tensor(1.0),
            surrogate_kind="sigmoid",
            alpha=4.0,
            backend=backend,
            decay=bad,
        )


def test_kernel_refuses_empty_input():
    x = torch.zeros(0, 3, 5)
    with pytest.raises(ShapeError, match="empty"):
        kernels.integrate_fire(
            x, torch.zeros(3, 5), torch.tensor(1.0), surrogate_kind="sigmoid", alpha=4.0
        )
