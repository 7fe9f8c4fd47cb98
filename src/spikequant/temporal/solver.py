"""Exact spike times of non-leaky TTFS neurons (n-LIF, threshold 1, tau = 1) on ``z = exp(t)``.

A neuron ``j`` with input spike times ``t_i`` and weights ``w_ji`` integrates
``dv/dt = sum_i w_ji exp(-(t - t_i)) u(t - t_i)``. Inside the causal set ``C`` (inputs that
arrive before the output spike) the potential is ``v = W_C - A_C / z`` with ``W_C = sum w``,
``A_C = sum w z_i``; it reaches 1 at

    z_out = A_C / (W_C - 1) = sum_{i in C} w_ji z_i / (sum_{i in C} w_ji - 1).

Causal-set search (vectorised, no loop over samples or neurons): sort the inputs by ``z``; for
every prefix ``k`` compute ``W_k``, ``A_k`` by cumulative sums and ``c_k = A_k / (W_k - 1)``;
prefix ``k`` is valid iff ``W_k > 1`` and ``z_(k) <= c_k <= z_(k+1)`` (``z_(N+1) = inf``). The
intervals ``[z_(k), z_(k+1)]`` are disjoint and increasing, so the first valid prefix is the
first threshold crossing; the implementation takes the first ``k`` with ``W_k > 1`` and
``c_k <= z_(k+1)``, for which ``c_k >= z_(k)`` holds automatically (see
:func:`_sorted_prefix_solution`). No valid prefix means no spike.

Two backends compute the same thing (``backend=`` of :func:`solve_spike_times`, per layer via
:func:`spikequant.temporal.layers.set_solver_backend`): a fused C++ kernel
(:mod:`spikequant.temporal.kernel`, default when it compiles) and the pure-torch reference
below, which materialises ``[R, N, M]`` tensors. They share one arithmetic, so on CPU they agree
bit for bit and a training run gives the same weights with either: every term (``w z``, a
gradient product) is rounded to the input dtype, and every sum (the prefix sums ``W_k``, ``A_k``;
``dz_i`` over the neurons, ``dw_ji`` over the rows) accumulates in float64 in index order before
it is rounded back. Training is chaotic in the last bit (a rounding difference moves a spike
across an input time and changes a causal set), so mere float32 agreement per call is not enough:
with float32 sums in the kernel and blocked sums in torch, one epoch of FC 784-100-10 ended at
0.825 vs 0.859 test accuracy.

Silent neurons carry ``z = z_max`` (default 1e5, ``t ~ 11.5``). Any input with ``z >= z_max``
is treated as silent (it never joins a causal set), and an output whose crossing would come at
or after ``z_max`` is reported as silent too, so every layer sees one convention. (The authors'
code sorts silent inputs in with ``z = 1e5``; the two differ only for spikes later than
``t = ln 1e5``.)

Gradients with the causal set held fixed (no surrogate):
``dz_out/dz_i = w_ji / (W_C - 1)`` and ``dz_out/dw_ji = (z_i - z_out) / (W_C - 1)`` for
``i in C``; zero outside ``C`` and for silent outputs.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, ShapeError

DEFAULT_Z_MAX = 1e5


def _sort_inputs(z: torch.Tensor, z_max: float):
    """Ascending ``z`` per row with silent inputs (``>= z_max``) moved last as ``inf``."""
    inf = torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
    return torch.sort(torch.where(z < z_max, z, inf), dim=1, stable=True)


def _sequential_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Prefix sums along ``dim`` accumulated in float64 in index order, rounded to ``x.dtype``.

    The precision contract shared with the fused kernel, which accumulates in double in the same
    order, so both backends agree bit for bit. Summing in ``x.dtype`` (or in blocks) instead made
    training runs of the two backends drift apart. On CPU torch's cumsum is a sequential scan
    that already accumulates float32 in double (tested against the kernel), so it needs no
    float64 copy of ``[R, N, M]``; other devices ask for float64 explicitly.
    """
    if x.device.type == "cpu":
        return torch.cumsum(x, dim)
    return torch.cumsum(x, dim, dtype=torch.float64).to(x.dtype)


def _sequential_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum along ``dim`` in index order with a float64 accumulator (see :func:`_sequential_cumsum`);
    ``x.sum`` adds in blocks, an order the kernel's loops do not reproduce."""
    return _sequential_cumsum(x, dim).select(dim, -1)


def _sorted_prefix_solution(z: torch.Tensor, weight: torch.Tensor, z_max: float):
    """Forward pass of the causal-set search (pure torch reference).

    ``z``: ``[R, N]`` input values (rows are independent samples/patches), ``weight``: ``[M, N]``.
    Returns ``z_out [R, M]`` (``z_max`` where silent), ``prefix [R, M]`` (index in sorted order of
    the last causal input), ``fired [R, M]``, ``w_causal [R, M]`` (``W_C``) and ``order [R, N]``
    (sorted position -> input index).
    """
    rows = z.shape[0]
    inf = torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
    z_sorted, order = _sort_inputs(z, z_max)
    spiking_sorted = torch.isfinite(z_sorted)
    z_sorted_clean = torch.where(spiking_sorted, z_sorted, torch.zeros_like(z_sorted))

    # [R, N, M] with the neuron axis innermost: the gather copies whole weight rows and the
    # prefix sums run over a strided but cache-friendly axis (2x faster than [R, M, N]).
    w_sorted = weight.t()[order]
    # silent inputs join no prefix; the test skips a pass when all spike, but reading it on the
    # host would stall an accelerator, where the multiplication (by 1 if all spike) is cheaper
    if z.device.type != "cpu" or not bool(spiking_sorted.all()):
        w_sorted.mul_(spiking_sorted.unsqueeze(2))
    w_cum = _sequential_cumsum(w_sorted, 1)
    a_cum = _sequential_cumsum(w_sorted.mul_(z_sorted_clean.unsqueeze(2)), 1)
    crossing = a_cum.div_(w_cum - 1)

    # The spike is at the FIRST prefix k with W_k > 1 and c_k <= z_(k+1): before it the potential
    # stayed below 1, so v_k(z_(k)) = v_(k-1)(z_(k)) < 1 and c_k >= z_(k) (and A_k > 0) follow.
    # Silent positions sort last (z = inf) and come after the last spiking one, which already
    # has z_(k+1) = inf, so they are never the first hit.
    z_next = torch.cat([z_sorted[:, 1:], inf.expand(rows, 1)], dim=1)
    hit = (w_cum > 1).logical_and_(crossing <= z_next.unsqueeze(2))
    prefix = hit.to(torch.uint8).argmax(dim=1)  # first True (0 when none)
    index = prefix.unsqueeze(1)
    z_out = torch.gather(crossing, 1, index).squeeze(1)
    fired = torch.gather(hit, 1, index).squeeze(1) & (z_out < z_max)
    z_out = torch.where(fired, z_out, torch.full_like(z_out, z_max))
    w_causal = torch.gather(w_cum, 1, index).squeeze(1)
    return z_out, prefix, fired, w_causal, order


def _torch_backward(grad_out, z, weight, z_out, prefix, fired, w_causal, order, z_max, needs):
    # g_j / (W_C - 1) for firing outputs; silent outputs pass no gradient.
    scaled = torch.where(fired, grad_out / (w_causal - 1), torch.zeros_like(grad_out))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=z.device).expand_as(order))
    # i in C <=> rank_i <= prefix_j; silent inputs rank after every spiking one, and outputs
    # whose prefix is meaningless (silent) have scaled = 0.
    causal = rank.unsqueeze(2) <= prefix.unsqueeze(1)  # [R, N, M]
    weighted = torch.where(causal, scaled.unsqueeze(1), 0.0)
    grad_z = grad_w = None
    if needs[0]:
        grad_z = _sequential_sum(weighted * weight.t(), 2)
    if needs[1]:
        z_clean = torch.where(z < z_max, z, torch.zeros_like(z))
        # sum_r g_rj/(W-1) [i in C] (z_ri - z_rj)
        grad_w = _sequential_sum(weighted.mul_(z_clean.unsqueeze(2) - z_out.unsqueeze(1)), 0).t()
    return grad_z, grad_w


BACKENDS = ("auto", "fused", "torch")


def check_backend(name: str) -> str:
    """Validate a solver backend: ``"fused"`` (C++ kernel, CPU float32/float64; an error when it
    cannot be built), ``"torch"`` (reference) or ``"auto"`` (fused when it compiles)."""
    if name not in BACKENDS:
        raise ConfigError(f"TTFS solver backend must be one of {BACKENDS}, got {name!r}")
    if name == "fused":
        from . import kernel

        if kernel.load() is None:
            raise ConfigError(f"the fused TTFS kernel is unavailable: {kernel.load_error()}")
    return name


def _fused_extension(z: torch.Tensor, backend: str):
    if (
        backend == "torch"
        or z.device.type != "cpu"
        or z.dtype not in (torch.float32, torch.float64)
    ):
        return None
    from . import kernel

    return kernel.load()


class CausalSetSolve(torch.autograd.Function):
    """``z_out = A_C / (W_C - 1)`` with the analytical gradient of the fixed causal set."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor, z_max: float, backend: str):
        ext = _fused_extension(z, backend)
        ctx.backend = backend if ext is not None else "torch"
        if ext is not None:
            z_sorted, order = _sort_inputs(z, z_max)
            weight_t = weight.detach().t().contiguous().to(z.dtype)
            z_out, prefix, fired, w_causal = ext.ttfs_forward(z_sorted, order, weight_t, z_max)
        else:
            z_out, prefix, fired, w_causal, order = _sorted_prefix_solution(z, weight, z_max)
        ctx.save_for_backward(z, weight, z_out, prefix, fired, w_causal, order)
        ctx.z_max = z_max
        ctx.mark_non_differentiable(fired)
        return z_out, fired

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_fired=None):
        z, weight, z_out, prefix, fired, w_causal, order = ctx.saved_tensors
        ext = _fused_extension(z, ctx.backend)
        if ext is not None:
            grad_z, grad_w_t = ext.ttfs_backward(
                grad_out.contiguous().to(z.dtype),
                z.contiguous(),
                order,
                weight.detach().t().contiguous().to(z.dtype),
                z_out,
                prefix,
                fired,
                w_causal,
            )
            grad_w = grad_w_t.t() if ctx.needs_input_grad[1] else None
            return (grad_z if ctx.needs_input_grad[0] else None), grad_w, None, None
        grad_z, grad_w = _torch_backward(
            grad_out,
            z,
            weight,
            z_out,
            prefix,
            fired,
            w_causal,
            order,
            ctx.z_max,
            ctx.needs_input_grad,
        )
        return grad_z, grad_w, None, None


def solve_spike_times(
    z: torch.Tensor,
    weight: torch.Tensor,
    z_max: float = DEFAULT_Z_MAX,
    *,
    return_fired: bool = False,
    backend: str = "auto",
):
    """Output ``z = exp(t)`` of ``M`` neurons for a batch of input rows.

    ``backend`` picks the implementation (see :func:`check_backend`); both give the same result.

    ``z``: ``[R, N]`` (``>= z_max`` means "no spike"), ``weight``: ``[M, N]`` -> ``[R, M]``.
    No bias/synchronisation input is added here (the layers add it).
    """
    if z.ndim != 2 or weight.ndim != 2 or z.shape[1] != weight.shape[1]:
        raise ShapeError(
            f"solve_spike_times expects z [R, N] and weight [M, N], got {tuple(z.shape)} and "
            f"{tuple(weight.shape)}"
        )
    z_out, fired = CausalSetSolve.apply(z, weight, float(z_max), check_backend(backend))
    return (z_out, fired) if return_fired else z_out
