"""Checks of ttfs.md: worked example, no-spike case, closed form vs Euler, gradients vs FD."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.errors import ConfigError, ShapeError
from spikequant.temporal import DEFAULT_Z_MAX, solve_spike_times
from spikequant.temporal.solver import _sorted_prefix_solution

from .numeric import central_difference


def euler_first_spike(times, weights, dt=1e-5, t_end=6.0):
    """Forward Euler on dv/dt = sum_i w_i exp(-(t - t_i)) u(t - t_i); first t with v >= 1."""
    grid = np.arange(0.0, t_end, dt)
    current = np.zeros_like(grid)
    for t_i, w_i in zip(times, weights, strict=False):
        after = grid >= t_i
        current[after] += w_i * np.exp(-(grid[after] - t_i))
    v = np.cumsum(current) * dt
    crossed = np.nonzero(v >= 1.0)[0]
    return grid[crossed[0]] if len(crossed) else None


def test_worked_example():
    times = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    w = torch.tensor([[0.6, 0.8, 0.5]], dtype=torch.float64)
    z_out, prefix, fired, w_causal, _ = _sorted_prefix_solution(torch.exp(times), w, DEFAULT_Z_MAX)
    # prefix of two inputs: t = ln((0.6 + 0.8 e^0.5) / 0.4) = 1.568 > 1.0 -> rejected
    t_two = math.log((0.6 + 0.8 * math.exp(0.5)) / (1.4 - 1))
    assert t_two == pytest.approx(1.568, abs=1e-3) and t_two > 1.0
    assert fired.item() and prefix.item() == 2 and w_causal.item() == pytest.approx(1.9)
    assert z_out.item() == pytest.approx(3.64235, abs=1e-5)
    assert math.log(z_out.item()) == pytest.approx(1.29263, abs=1e-5)


def test_worked_example_matches_euler():
    t_closed = math.log(
        solve_spike_times(
            torch.exp(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)),
            torch.tensor([[0.6, 0.8, 0.5]], dtype=torch.float64),
        ).item()
    )
    assert euler_first_spike([0.0, 0.5, 1.0], [0.6, 0.8, 0.5]) == pytest.approx(t_closed, abs=2e-5)


def test_input_order_does_not_matter():
    z = torch.exp(torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64))
    w = torch.tensor([[0.5, 0.6, 0.8]], dtype=torch.float64)
    assert solve_spike_times(z, w).item() == pytest.approx(3.64235, abs=1e-5)


def test_no_spike_when_weights_never_exceed_one():
    z = torch.exp(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64))
    w = torch.tensor([[0.3, 0.4, 0.2]], dtype=torch.float64)  # every prefix sum <= 0.9
    z_out, fired = solve_spike_times(z, w, return_fired=True)
    assert not fired.item() and z_out.item() == DEFAULT_Z_MAX
    assert euler_first_spike([0.0, 0.5, 1.0], [0.3, 0.4, 0.2], dt=1e-3, t_end=30) is None
    z_custom = solve_spike_times(z, w, z_max=1e3)
    assert z_custom.item() == 1e3


def test_no_spike_has_zero_gradient_and_silent_inputs_are_ignored():
    z = torch.tensor([[1.0, 2.0, DEFAULT_Z_MAX]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[0.3, 0.4, 5.0], [0.9, 0.9, 5.0]], dtype=torch.float64, requires_grad=True)
    out = solve_spike_times(z, w)
    assert out[0, 0].item() == DEFAULT_Z_MAX  # the big weight sits on a silent input
    assert out[0, 1].item() == pytest.approx((0.9 * 1 + 0.9 * 2) / 0.8)
    out[0, 0].backward()
    assert torch.all(z.grad == 0) and torch.all(w.grad == 0)


def test_negative_weight_can_veto_and_late_inputs_are_excluded():
    # after two inputs the neuron fires at z = (1*1 + 1*2)/(2-1) = 3 < 50: the third input is
    # outside the causal set, so its weight does not matter.
    z = torch.tensor([[1.0, 2.0, 50.0]], dtype=torch.float64)
    for w3 in (-5.0, 0.0, 5.0):
        assert (
            solve_spike_times(z, torch.tensor([[1.0, 1.0, w3]], dtype=torch.float64)).item() == 3.0
        )


@settings(max_examples=25, deadline=None)
@given(
    times=st.lists(st.floats(0.0, 3.0), min_size=2, max_size=6),
    seed=st.integers(0, 10_000),
)
def test_closed_form_matches_euler(times, seed):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(-0.2, 1.0, size=len(times))
    z_out = solve_spike_times(
        torch.exp(torch.tensor([times], dtype=torch.float64)), torch.from_numpy(weights[None, :])
    ).item()
    t_euler = euler_first_spike(times, weights, dt=1e-5, t_end=9.0)
    if z_out == DEFAULT_Z_MAX:
        assert t_euler is None
    elif math.log(z_out) < 8.9:
        t_out = math.log(z_out)
        # Euler's error in v is O(dt * sum|w|); near a late spike the current is small, so the
        # same error in v moves the crossing by error / current.
        current = sum(
            w * math.exp(-(t_out - t)) for t, w in zip(times, weights, strict=False) if t <= t_out
        )
        tolerance = max(2e-5, 2e-5 * sum(abs(w) for w in weights) / current)
        assert t_euler == pytest.approx(t_out, abs=tolerance)


def test_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(3)
    z = torch.exp(3 * torch.rand(4, 6, generator=gen, dtype=torch.float64))
    z[1, 2] = DEFAULT_Z_MAX  # a silent input
    w = torch.rand(5, 6, generator=gen, dtype=torch.float64) * 0.7 - 0.1
    w[4] = 0.1  # a silent output
    z.requires_grad_(True)
    w.requires_grad_(True)
    probe = torch.randn(4, 5, generator=gen, dtype=torch.float64)

    def objective():
        out = solve_spike_times(z, w)
        # silent outputs (1e5) would swamp the rounding of the finite differences; they carry
        # no gradient anyway, which the analytic check below asserts separately.
        return (torch.where(out < DEFAULT_Z_MAX, out, 0) * probe).sum()

    objective().backward()
    with torch.no_grad():
        fd_z = central_difference(objective, z.detach(), 1e-7)
        fd_w = central_difference(objective, w.detach(), 1e-7)
    silent_input = z.detach() >= DEFAULT_Z_MAX
    assert torch.allclose(z.grad[~silent_input], fd_z[~silent_input], atol=1e-6)
    assert torch.all(z.grad[silent_input] == 0)
    assert torch.allclose(w.grad, fd_w, atol=1e-6)
    assert torch.autograd.gradcheck(lambda a, b: solve_spike_times(a, b), (z, w))


def test_analytic_gradient_formula():
    z = torch.exp(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)).requires_grad_(True)
    w = torch.tensor([[0.6, 0.8, 0.5]], dtype=torch.float64, requires_grad=True)
    out = solve_spike_times(z, w)
    out.sum().backward()
    assert torch.allclose(z.grad, w.detach() / 0.9)
    assert torch.allclose(w.grad, (z.detach() - out.detach()) / 0.9)


def test_batched_rows_are_independent():
    gen = torch.Generator().manual_seed(0)
    z = torch.exp(3 * torch.rand(7, 20, generator=gen))
    w = torch.rand(9, 20, generator=gen) * 0.3
    together = solve_spike_times(z, w)
    one_by_one = torch.cat([solve_spike_times(z[i : i + 1], w) for i in range(7)])
    assert torch.equal(together, one_by_one)


def test_shape_errors():
    with pytest.raises(ShapeError):
        solve_spike_times(torch.ones(3, 4), torch.ones(2, 5))
    with pytest.raises(ShapeError):
        solve_spike_times(torch.ones(4), torch.ones(2, 4))


@pytest.fixture(params=["torch", "fused"])
def backend(request):
    from spikequant.temporal import kernel

    if request.param == "fused" and kernel.load() is None:
        pytest.skip(f"fused kernel unavailable: {kernel.load_error()}")
    return request.param


def test_each_backend_worked_example_and_gradcheck(backend):
    z = torch.exp(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64))
    w = torch.tensor([[0.6, 0.8, 0.5]], dtype=torch.float64)
    assert solve_spike_times(z, w, backend=backend).item() == pytest.approx(3.64235, abs=1e-5)
    gen = torch.Generator().manual_seed(5)
    z = torch.exp(3 * torch.rand(3, 7, generator=gen, dtype=torch.float64))
    z[0, 3] = DEFAULT_Z_MAX
    w = torch.rand(4, 7, generator=gen, dtype=torch.float64) * 0.8 - 0.15
    z.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: solve_spike_times(a, b, backend=backend), (z, w))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), silent=st.floats(0.0, 0.5), ties=st.booleans())
def test_fused_kernel_equals_torch_reference(seed, silent, ties):
    from spikequant.temporal import kernel

    if kernel.load() is None:
        pytest.skip("fused kernel unavailable")
    gen = torch.Generator().manual_seed(seed)
    # Bit for bit, in float32 too: both backends round each term to the working dtype and
    # accumulate in float64 in the same order (an ill-conditioned W_C close to 1 included).
    t = 3 * torch.rand(6, 40, generator=gen, dtype=torch.float64)
    if ties:
        t = torch.round(t * 4) / 4  # many equal spike times, like MNIST's background pixels
    z = torch.exp(t)
    z[torch.rand(z.shape, generator=gen) < silent] = DEFAULT_Z_MAX
    w = torch.rand(9, 40, generator=gen, dtype=torch.float64) * 0.12 - 0.02
    probe = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        results = {}
        for name in ("torch", "fused"):
            zz = z.to(dtype, copy=True).requires_grad_(True)
            ww = w.to(dtype, copy=True).requires_grad_(True)
            out, fired = solve_spike_times(zz, ww, return_fired=True, backend=name)
            (torch.where(fired, out, 0) * probe.to(dtype)).sum().backward()
            results[name] = (out.detach(), fired, zz.grad, ww.grad)
        for a, b in zip(results["torch"], results["fused"], strict=True):
            assert torch.equal(a, b)


def test_unknown_backend_is_rejected():
    from spikequant.temporal.layers import set_solver_backend
    from spikequant.temporal.models import ttfs_fc

    with pytest.raises(ConfigError):
        solve_spike_times(torch.ones(1, 2), torch.ones(1, 2), backend="gpu")
    model = set_solver_backend(ttfs_fc(sizes=(4, 3, 2)), "torch")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"torch"}
    with pytest.raises(ConfigError):
        set_solver_backend(model, "gpu")
