r"""Integrate-and-fire family: IF, LIF and ATIF-u (trainable uniform threshold).

Pure step functions (``*_step(x, state, params) -> (out, state)``) are the reference semantics;
the modules are thin wrappers holding parameters and state.

Per step, with input current ``x = i(t)``:

* IF:  ``H(t) = V(t-1) + x``
* LIF: ``H(t) = beta V(t-1) + x`` with ``beta = 1 - 1/tau``; with ``decay_input=True``
  ``H(t) = beta V(t-1) + (1 - beta) x`` (SpikingJelly's default convention).

then ``z(t) = 1[H(t) >= V_th]`` (surrogate gradient on ``q = H - V_th``) and the reset
(``Subtract``: ``V = H - V_th z``; ``Zero``: ``V = H (1 - z)``). The output is ``z`` or, with
``scale_output=True`` (ATIF-u), the value ``V_th z`` that the next layer receives.

For constant input ``x`` and soft reset, V(0) = 0 and T steps, the rate-decoded output is the
closed form (ATIF paper eq. 7) ``y = V_th / T * clamp(floor(T x / V_th), 0, T)``: T + 1 uniform
levels, clipped at ``V_th``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_neuron
from ..surrogate import Surrogate, create_surrogate
from .base import SpikingNeuron, channel_view, check_backend, kernel_surrogate, run_kernel
from .reset import Subtract, Zero, create_reset


class MembraneState(NamedTuple):
    """State of the IF / LIF / ATIF-u step functions: the membrane ``v`` after the reset."""

    v: torch.Tensor


class IFParams(NamedTuple):
    """Parameters of :func:`if_step`: threshold ``V_th``, spike surrogate and reset."""

    threshold: torch.Tensor | float
    surrogate: Surrogate
    reset: Subtract | Zero


class LIFParams(NamedTuple):
    """Parameters of :func:`lif_step`: those of :class:`IFParams` plus the leak ``decay`` (``v
    <- (1 - decay) v + x``, or ``+ decay x`` with ``decay_input``)."""

    threshold: torch.Tensor | float
    surrogate: Surrogate
    reset: Subtract | Zero
    decay: float
    decay_input: bool = False


def if_step(x: torch.Tensor, state: MembraneState, p: IFParams):
    """One IF step; returns the binary spike ``z`` and the new membrane."""
    h = state.v + x
    z = p.surrogate(h - p.threshold)
    return z, MembraneState(p.reset(h, z, p.threshold))


def lif_step(x: torch.Tensor, state: MembraneState, p: LIFParams):
    """One LIF step with multiplicative leak ``decay = 1 - 1/tau``."""
    drive = (1.0 - p.decay) * x if p.decay_input else x
    h = p.decay * state.v + drive
    z = p.surrogate(h - p.threshold)
    return z, MembraneState(p.reset(h, z, p.threshold))


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class IF(SpikingNeuron):
    """Integrate-and-fire neuron (soft reset by default).

    Args:
        threshold: initial ``V_th`` (> 0).
        learn_threshold: make ``V_th`` a trainable parameter.
        num_channels: ``None`` for one threshold per layer, else one per channel (dim 1 of a step).
        surrogate: surrogate object or name (default ``Sigmoid(alpha=4)``).
        reset: ``Subtract()`` (soft, default) or ``Zero()`` (hard), or their names.
        scale_output: emit ``V_th z`` instead of ``z`` (each spike carries the threshold value).
        min_threshold: a trained threshold is clamped at this floor in the forward pass.
        backend: ``"torch"`` (reference step loop), ``"auto"`` (a fused multi-step kernel when
            one runs this configuration: Triton on CUDA, C++ on CPU), ``"fused"`` (the fused
            kernel of the input's device, error if it cannot run), ``"cpp"`` or ``"triton"``.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        *,
        learn_threshold: bool = False,
        num_channels: int | None = None,
        surrogate: Surrogate | str | dict | None = None,
        reset: Subtract | Zero | str = "subtract",
        scale_output: bool = False,
        min_threshold: float = 1e-3,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        threshold = _check_positive("threshold", threshold)
        shape = () if num_channels is None else (int(num_channels),)
        self.threshold = nn.Parameter(torch.full(shape, threshold), requires_grad=learn_threshold)
        self.surrogate = create_surrogate(surrogate)
        self.reset = create_reset(reset)
        self.scale_output = bool(scale_output)
        self.min_threshold = float(min_threshold)
        self.backend = check_backend(backend)

    def threshold_value(self) -> torch.Tensor:
        """``V_th`` as used in the forward pass (0-d or ``[C]``): a trained one is clamped."""
        th = self.threshold
        if th.requires_grad:
            th = th.clamp(min=self.min_threshold)
        return th

    def effective_threshold(self, x: torch.Tensor) -> torch.Tensor:
        return channel_view(self.threshold_value(), x)

    def kernel_params(self) -> dict | str:
        """This neuron's parameters for :func:`spikequant.kernels.integrate_fire` (plain numbers
        and tensors), or why no fused kernel implements its configuration."""
        surrogate = kernel_surrogate(self.surrogate)
        if isinstance(surrogate, str):
            return surrogate
        reset = self.reset
        if type(reset) not in (Subtract, Zero):
            return f"reset {reset!r} is not Subtract or Zero"
        threshold = self.threshold_value()
        hard = isinstance(reset, Zero)
        return dict(
            threshold=threshold,
            **surrogate,
            decay=1.0,
            input_scale=1.0,
            hard_reset=hard,
            v_reset=reset.v_reset if hard else 0.0,
            detach_reset=reset.detach,
            spike_value=threshold if self.scale_output else None,
        )

    def params(self, x: torch.Tensor) -> IFParams:
        return IFParams(self.effective_threshold(x), self.surrogate, self.reset)

    def initial_state(self, x: torch.Tensor) -> MembraneState:
        return MembraneState(torch.zeros_like(x))

    def _emit(self, z: torch.Tensor, threshold) -> torch.Tensor:
        return z * threshold if self.scale_output else z

    def step(self, x, state):
        p = self.params(x)
        z, state = if_step(x, state, p)
        return self._emit(z, p.threshold), state

    def run(self, x_seq, state):
        if self.backend != "torch":
            membrane = state.v if isinstance(state, MembraneState) else None
            if membrane is None or membrane.shape != x_seq.shape[1:]:
                params = "state is not a membrane of the step shape"
            else:
                params = self.kernel_params()
            result = run_kernel(self.backend, x_seq, membrane, params)
            if result is not None:
                return result[0], MembraneState(result[1])
        return super().run(x_seq, state)

    def extra_repr(self) -> str:
        kind = "per-channel" if self.threshold.ndim else "per-layer"
        return (
            f"threshold={kind}, learn_threshold={self.threshold.requires_grad}, "
            f"surrogate={self.surrogate}, reset={self.reset}, scale_output={self.scale_output}"
        )


class LIF(IF):
    """Leaky integrate-and-fire: ``H = beta V + x`` with ``beta = 1 - 1/tau`` (tau >= 1).

    ``tau = 2`` gives ``beta = 0.5`` (SpQuant's leak). ``decay_input=True`` scales the input by
    ``1/tau`` as SpikingJelly and Norse do. Defaults to hard reset.
    """

    def __init__(self, tau: float = 2.0, *, decay_input: bool = False, reset="zero", **kwargs):
        super().__init__(reset=reset, **kwargs)
        tau = _check_positive("tau", tau)
        if tau < 1:
            raise ConfigError(f"tau must be >= 1 (decay = 1 - 1/tau in [0, 1)), got {tau}")
        self.tau = tau
        self.decay_input = bool(decay_input)

    @property
    def decay(self) -> float:
        return 1.0 - 1.0 / self.tau

    def kernel_params(self) -> dict | str:
        params = super().kernel_params()
        if isinstance(params, dict):
            params["decay"] = self.decay
            params["input_scale"] = 1.0 - self.decay if self.decay_input else 1.0
        return params

    def params(self, x):
        return LIFParams(
            self.effective_threshold(x), self.surrogate, self.reset, self.decay, self.decay_input
        )

    def step(self, x, state):
        p = self.params(x)
        z, state = lif_step(x, state, p)
        return self._emit(z, p.threshold), state

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class ATIFu(IF):
    """ATIF-u: IF with soft reset and a trainable uniform threshold; each spike carries ``V_th``.

    The threshold gradient flows through ``q = H - V_th`` (``dq/dV_th = -1``), through the soft
    reset (set ``reset=Subtract(detach=True)`` to cut it) and through the output ``V_th z``.
    """

    def __init__(self, threshold: float = 1.0, **kwargs):
        kwargs.setdefault("learn_threshold", True)
        kwargs.setdefault("scale_output", True)
        kwargs.setdefault("reset", "subtract")
        super().__init__(threshold, **kwargs)


@register_neuron(name="if")
def _make_if(**kwargs) -> IF:
    """Integrate-and-fire, soft reset, fixed threshold."""
    return IF(**kwargs)


@register_neuron(name="if_hard")
def _make_if_hard(**kwargs) -> IF:
    """Integrate-and-fire, hard reset to zero, fixed threshold."""
    kwargs.setdefault("reset", "zero")
    return IF(**kwargs)


@register_neuron(name="lif")
def _make_lif(**kwargs) -> LIF:
    """Leaky integrate-and-fire (tau = 2, hard reset)."""
    return LIF(**kwargs)


@register_neuron(name="atif_u")
def _make_atif_u(**kwargs) -> ATIFu:
    """ATIF-u: trainable uniform threshold, soft reset, spikes carry V_th."""
    return ATIFu(**kwargs)
