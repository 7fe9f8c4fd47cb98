r"""ATIF-nu: integrate-and-fire with T trainable, non-uniform decision levels.

Parameters: T ordered levels ``p_1 > p_2 > ... > p_T > 0`` (kept ordered by construction:
``p_T = softplus(r_T)``, ``p_k = p_{k+1} + softplus(r_k)``). They set one threshold per timestep

    V_th(1) = p_1,    V_th(t) = T (p_t - p_{t+1})  for 1 < t < T,    V_th(T) = T p_T

(for T = 1 both end formulas give ``p_1``). The neuron integrates ``H(t) = V(t-1) + x``, fires
``z(t) = 1[H(t) >= V_th(t)]`` and resets softly by the current step's threshold
``V(t) = H(t) - V_th(t) z(t)``. Each spike carries ``p_1`` (the clip point), so the rate decoding is
``y = p_1 * count / T``.

Intent (the paper's eqs. 14-19): a constant input in ``[p_{k+1}, p_k)`` yields ``T - k`` spikes
in the last timesteps (T = 4: ``[p_2, p_1) -> 0111``, ``[p_3, p_2) -> 0011``,
``[p_4, p_3) -> 0001``,
``>= p_1 -> 1111``). The thresholds above are what the membrane conditions at the boundary inputs
give. Uniform levels ``p_k = (T - k + 1) V / T`` make every ``V_th(t) = V``: ATIF-u exactly.

Where this stops holding: the boundary conditions assume that the residual left by earlier spikes
is what the uniform case leaves. When neighbouring level gaps differ by more than the dynamics
allow (roughly, a gap ``p_t - p_{t+1}`` much larger than ``p_{t+1}/t``), the spike pattern is not a
thermometer code: e.g. ``p = [0.218, 0.13, 0.082, 0.027]``, input 0.1 gives ``0101`` (2 spikes as
intended) but an input just above 0.13 gives 2 spikes instead of 3, and for about 10 % of random
level sets the spike count is not monotone in the input. :func:`atif_nu_transfer` computes the
transfer curve so that this can be checked for any trained levels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..registry import register_neuron
from ..surrogate import Surrogate, create_surrogate
from .base import SpikingNeuron, channel_view, kernel_surrogate, run_kernel
from .reset import Subtract, create_reset


class StepState(NamedTuple):
    v: torch.Tensor
    t: int  # number of steps already taken (0-based index of the next step)


class ATIFnuParams(NamedTuple):
    step_thresholds: torch.Tensor  # [T] or [T, C]
    spike_value: torch.Tensor  # p_1: [] or [C]
    surrogate: Surrogate
    reset: Subtract


def levels_to_step_thresholds(levels: torch.Tensor) -> torch.Tensor:
    """Map ordered levels ``[T, ...]`` (p_1 first) to per-step thresholds ``[T, ...]``."""
    T = levels.shape[0]
    if T == 1:
        return levels.clone()
    middle = T * (levels[1:-1] - levels[2:])
    return torch.cat([levels[:1], middle, T * levels[-1:]], dim=0)


def uniform_levels(threshold: float, timesteps: int) -> torch.Tensor:
    """``p_k = (T - k + 1) V_th / T`` for k = 1..T: the levels equivalent to ATIF-u."""
    k = torch.arange(1, timesteps + 1, dtype=torch.float32)
    return (timesteps - k + 1) * threshold / timesteps


def atif_nu_step(x: torch.Tensor, state: StepState, p: ATIFnuParams):
    """One ATIF-nu step; returns the binary spike and the new state."""
    if state.t >= p.step_thresholds.shape[0]:
        raise ShapeError(
            f"ATIF-nu has {p.step_thresholds.shape[0]} levels (T) but was asked for step "
            f"{state.t + 1}; call reset_state(model) between sequences"
        )
    threshold = channel_view(p.step_thresholds[state.t], x)
    h = state.v + x
    z = p.surrogate(h - threshold)
    return z, StepState(p.reset(h, z, threshold), state.t + 1)


class ATIFnu(SpikingNeuron):
    """ATIF-nu neuron with ``timesteps`` trainable ordered levels (see module docstring).

    Args:
        timesteps: T, the number of levels (the sequence length it is used with).
        threshold: the uniform threshold the levels start from (ATIF-u with this ``V_th``).
        num_channels: ``None`` for per-layer levels, else per-channel levels ``[T, C]``.
        learn_levels: train the levels.
        surrogate: as for :class:`~spikequant.neurons.IF`.
        reset: as for :class:`~spikequant.neurons.IF` (soft reset only).
        scale_output: emit ``p_1 z`` (default) instead of ``z``.
        levels: start from these levels instead of the uniform ``threshold`` ones.
    """

    def __init__(
        self,
        timesteps: int = 4,
        threshold: float = 1.0,
        *,
        num_channels: int | None = None,
        learn_levels: bool = True,
        surrogate=None,
        reset="subtract",
        scale_output: bool = True,
        levels: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
        if not threshold > 0:
            raise ConfigError(f"threshold must be positive, got {threshold!r}")
        self.timesteps = timesteps
        init = (
            uniform_levels(threshold, timesteps)
            if levels is None
            else torch.as_tensor(levels, dtype=torch.float32)
        )
        if init.shape != (timesteps,) or not bool((init[:-1] > init[1:]).all() and init[-1] > 0):
            raise ConfigError(f"levels must be {timesteps} strictly decreasing positive values")
        increments = torch.cat([init[:-1] - init[1:], init[-1:]])
        raw = increments + torch.log(-torch.expm1(-increments))  # inverse softplus
        if num_channels is not None:
            raw = raw[:, None].repeat(1, int(num_channels))
        self.raw_increments = nn.Parameter(raw, requires_grad=learn_levels)
        self.surrogate = create_surrogate(surrogate)
        self.reset = create_reset(reset)
        if not isinstance(self.reset, Subtract):
            raise ConfigError("ATIF-nu is defined with the soft (subtract) reset")
        self.scale_output = bool(scale_output)
        self.backend = "auto"  # "torch" (reference loop), "auto", "fused", "cpp", "triton": see IF

    @property
    def levels(self) -> torch.Tensor:
        """Ordered levels ``p_1 > ... > p_T`` (shape ``[T]`` or ``[T, C]``)."""
        inc = F.softplus(self.raw_increments)
        return inc.flip(0).cumsum(0).flip(0)

    def step_thresholds(self) -> torch.Tensor:
        return levels_to_step_thresholds(self.levels)

    def params(self) -> ATIFnuParams:
        levels = self.levels
        return ATIFnuParams(
            levels_to_step_thresholds(levels), levels[0], self.surrogate, self.reset
        )

    def initial_state(self, x):
        return StepState(torch.zeros_like(x), 0)

    def step(self, x, state):
        p = self.params()
        z, state = atif_nu_step(x, state, p)
        return (z * channel_view(p.spike_value, x) if self.scale_output else z), state

    def kernel_params(self, state: StepState, steps: int) -> dict | str:
        """Parameters of the fused kernels for ``steps`` steps from ``state``: the rows
        ``t0 .. t0 + steps`` of the threshold schedule, soft reset, spikes carrying ``p_1``."""
        surrogate = kernel_surrogate(self.surrogate)
        if isinstance(surrogate, str):
            return surrogate
        if type(self.reset) is not Subtract:
            return f"reset {self.reset!r}"
        params = self.params()
        return dict(
            threshold=params.step_thresholds[state.t : state.t + steps],
            per_step_threshold=True,
            **surrogate,
            detach_reset=self.reset.detach,
            spike_value=params.spike_value if self.scale_output else None,
        )

    def run(self, x_seq, state):
        backend = getattr(self, "backend", "auto")
        steps = x_seq.shape[0]
        # past the schedule's end the reference loop raises the precise ShapeError
        if (
            backend != "torch"
            and isinstance(state, StepState)
            and (state.t + steps <= self.timesteps)
        ):
            if state.v.shape != x_seq.shape[1:]:
                params = "state is not an ATIF-nu membrane of the step shape"
            else:
                params = self.kernel_params(state, steps)
            fused = run_kernel(backend, x_seq, state.v, params)
            if fused is not None:
                return fused[0], StepState(fused[1], state.t + steps)
        # Parameters are mapped once per sequence rather than once per step.
        p = self.params()
        outputs = []
        for x in x_seq.unbind(0):
            z, state = atif_nu_step(x, state, p)
            outputs.append(z * channel_view(p.spike_value, x) if self.scale_output else z)
        return torch.stack(outputs), state

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, surrogate={self.surrogate}"


@torch.no_grad()
def atif_nu_transfer(levels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Spike count of an ATIF-nu neuron with ``levels`` per constant input (transfer curve)."""
    levels = torch.as_tensor(levels, dtype=torch.float32)
    thresholds = levels_to_step_thresholds(levels)
    v = torch.zeros_like(inputs, dtype=torch.float32)
    count = torch.zeros_like(v)
    for th in thresholds:
        h = v + inputs
        z = (h >= th).float()
        v = h - th * z
        count += z
    return count


@register_neuron(name="atif_nu")
def _make_atif_nu(**kwargs) -> ATIFnu:
    """ATIF-nu: T trainable non-uniform levels, soft reset, spikes carry p_1."""
    return ATIFnu(**kwargs)
