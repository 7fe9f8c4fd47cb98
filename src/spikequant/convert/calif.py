r"""Calcium-gated bipolar LIF (Ca-LIF), its average-pool neuron, the event LIF baseline, ISI coding.

Ca-LIF (Gao et al. 2023), per step with input current ``x(t) = sum_i w_i s_i(t)``
(``s_i in {-1, 0, +1}``) and leak ``lam``::

    V += x(t) - lam
    if V >= +Vth:              emit +1, V -= Vth, c += 1
    elif V <= -Vth and c > 0:  emit -1, V += Vth, c -= 1

``c`` (the "calcium") is the signed spike count; the gate ``c > 0`` lets a negative spike only undo
a positive spike already sent, so the count tracks ``ReLU`` of the integrated input instead of
``floor`` of its running maximum. Invariant: ``V + c Vth = z(t)`` (the integrated input so far).

Rounding phase (after step T, layer by layer): fire ``+1`` while ``V >= Vth/2`` and ``-1`` while
``V < -Vth/2`` (gated), until nothing fires. At the fixed point ``|V| <= Vth/2``, hence
``c = clamp(round_half_up(z / Vth), 0, qmax)`` exactly (the saturating counter never exceeds
``qmax``). With ``tie="down"`` the comparisons swap strictness and ties round down.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..coding import IsiEncoder, isi_encode, isi_spike_counts, pixels_from_unit  # noqa: F401
from ..errors import ConfigError, ShapeError
from ..neurons.base import SpikingNeuron, channel_view
from ..registry import register_neuron
from ..surrogate import Surrogate, create_surrogate


class CaState(NamedTuple):
    v: torch.Tensor
    count: torch.Tensor


class CaLIFParams(NamedTuple):
    threshold: torch.Tensor  # Vth > 0, broadcast against the step
    leak: torch.Tensor  # lam, broadcast against the step
    qmax: int | None  # saturation of the count (None: unbounded)
    gate: bool  # a negative spike needs c > 0
    surrogate: Surrogate  # gradient of the two threshold crossings


def calif_step(x: torch.Tensor, state: CaState, p: CaLIFParams):
    r"""One Ca-LIF step: ``V += x - lam``; ``+1`` if ``V >= Vth`` (and ``c < qmax``), ``-1`` if
    ``V <= -Vth`` (and ``c > 0`` when gated); ``V -= Vth out``, ``c += out``.

    Computes in the dtype of ``state.v``; the crossings carry the surrogate's gradient (forward
    exactly ``1[V - Vth >= 0]`` and ``1[-V - Vth >= 0]``)."""
    th = p.threshold.to(state.v.dtype)
    v = state.v + x.to(state.v.dtype) - p.leak.to(state.v.dtype)
    pos = p.surrogate(v - th)
    neg = p.surrogate(-v - th)  # disjoint from pos because Vth > 0
    if p.qmax is not None:
        pos = pos * (state.count < p.qmax).to(v.dtype)
    if p.gate:
        neg = neg * (state.count > 0).to(v.dtype)
    out = pos - neg
    return out, CaState(v - out * th, state.count + out.detach())


def _broadcast(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scalar, per-channel ``[C]`` or per-neuron ``x.shape[1:]`` parameter against a step ``x``."""
    if param.ndim and param.ndim == x.ndim - 1 and tuple(param.shape) == tuple(x.shape[1:]):
        return param
    return channel_view(param, x)


def _as_buffer(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if not torch.isfinite(t).all():
        raise ConfigError(f"{name} must be finite")
    return t


class CaLIF(SpikingNeuron):
    r"""Calcium-gated bipolar LIF neuron (input/output ``[T, B, ...]``, outputs in {-1, 0, +1}).

    Args:
        threshold: ``Vth > 0`` (scalar or per channel).
        leak: ``lam`` subtracted every step (scalar, per channel or per neuron);
            ``lam = -b/T`` turns a bias
            ``b`` into a constant input current.
        qmax: saturate the signed count at ``qmax`` (``None``: unbounded).
        gate: require ``c > 0`` for a negative spike (``False`` for the average-pool neuron).
        tie: ``"up"`` (default: a membrane exactly at ``+Vth/2`` fires in the rounding phase) or
            ``"down"``.

    surrogate: gradient of the threshold crossings (training through a Ca-LIF layer).
        dtype: dtype of the membrane and count (default float64, so that the integer counts
            match the quantized ANN exactly; ``None``: the input's dtype).

    The step is the pure function :func:`calif_step`.
    """

    def __init__(
        self,
        threshold=1.0,
        leak=0.0,
        *,
        qmax: int | None = None,
        gate: bool = True,
        tie: str = "up",
        surrogate: Surrogate | str | dict | None = None,
        dtype: torch.dtype | None = torch.float64,
    ) -> None:
        super().__init__()
        threshold = _as_buffer(threshold, "threshold")
        if (threshold <= 0).any():
            raise ConfigError("Ca-LIF threshold must be > 0")
        if tie not in ("up", "down"):
            raise ConfigError(f"tie must be 'up' or 'down', got {tie!r}")
        if qmax is not None and (not isinstance(qmax, int) or qmax < 1):
            raise ConfigError(f"qmax must be a positive integer or None, got {qmax!r}")
        self.register_buffer("threshold", threshold)
        self.register_buffer("leak", _as_buffer(leak, "leak"))
        self.qmax = qmax
        self.gate = bool(gate)
        self.tie = tie
        self.surrogate = create_surrogate(surrogate)
        self.dtype = dtype

    def initial_state(self, x: torch.Tensor) -> CaState:
        zeros = torch.zeros(x.shape, dtype=self.dtype or x.dtype, device=x.device)
        return CaState(zeros, zeros.clone())

    def _gates(self, count: torch.Tensor):
        can_rise = count < self.qmax if self.qmax is not None else None
        can_fall = count > 0 if self.gate else None
        return can_rise, can_fall

    def params(self, x: torch.Tensor) -> CaLIFParams:
        return CaLIFParams(
            _broadcast(self.threshold, x),
            _broadcast(self.leak, x),
            self.qmax,
            self.gate,
            self.surrogate,
        )

    def step(self, x: torch.Tensor, state: CaState):
        return calif_step(x, state, self.params(x))

    def round_phase(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Integrate the previous layer's (net) rounding spikes ``x[B, ...]``, then fire rounding
        spikes until quiescent; returns the net rounding spikes of this neuron (``[B, ...]``)."""
        if self.state is None:
            raise ShapeError("Ca-LIF rounding phase needs the state of a preceding run")
        v, count = self.state
        if x is not None:
            v = v + x.to(torch.float64)
        th = _broadcast(self.threshold, v)
        half = th / 2
        net = torch.zeros_like(v)
        # each pass moves |V| by Vth towards [-Vth/2, Vth/2], so the loop ends within max|V|/Vth
        # passes; the cap only guards against non-finite input
        limit = int(torch.nan_to_num(v.abs() / th, posinf=0).max().item()) + 3 if v.numel() else 0
        for _ in range(limit):
            can_rise, can_fall = self._gates(count)
            if self.tie == "up":
                pos, neg = v >= half, v < -half
            else:
                pos, neg = v > half, v <= -half
            if can_rise is not None:
                pos &= can_rise
            if can_fall is not None:
                neg &= can_fall
            if not (pos.any() or neg.any()):
                break
            out = pos.to(torch.float64) - neg.to(torch.float64)
            v = v - out * th
            count = count + out
            net = net + out
        self.state = CaState(v, count)
        return net

    @property
    def count(self) -> torch.Tensor:
        """Signed spike count ``c`` (the integer activation after the rounding phase)."""
        if self.state is None:
            raise ShapeError("Ca-LIF has not run yet")
        return self.state.count

    def integrated(self) -> torch.Tensor:
        """Integrated input ``c Vth + V`` (read-out of an output layer)."""
        v, count = self.state
        return count * _broadcast(self.threshold, v) + v

    def extra_repr(self) -> str:
        kind = "per-channel" if self.threshold.ndim else "per-layer"
        return f"threshold={kind}, qmax={self.qmax}, gate={self.gate}, tie={self.tie}"


class CaPool(CaLIF):
    """Average-pool neuron: a Ca-LIF with unit weights, ``Vth = p*p`` (``p`` for 1-D pooling), no
    leak and no gate.

    Its input is the sum of the ``p x p`` (or ``p``) window of bipolar spikes (sum pooling before
    it); after the rounding phase its count is ``round_half_up(window_sum / p^2)``, the rounded
    mean.
    """

    def __init__(self, kernel_size: int, *, tie: str = "up", spatial_dims: int = 2) -> None:
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ConfigError(f"pool kernel_size must be a positive integer, got {kernel_size!r}")
        super().__init__(float(kernel_size**spatial_dims), 0.0, qmax=None, gate=False, tie=tie)
        self.kernel_size = kernel_size
        self.set_spatial_dims(spatial_dims)

    def set_spatial_dims(self, spatial_dims: int) -> None:
        """Window of ``p`` (1-D) or ``p x p`` (2-D) inputs: ``Vth = p^dims``."""
        if spatial_dims not in (1, 2):
            raise ConfigError(f"spatial_dims must be 1 or 2, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.threshold.fill_(float(self.kernel_size**spatial_dims))


class EventLIF(SpikingNeuron):
    r"""Baseline event LIF: ``V += x - lam``; fire ``+1`` when ``V >= Vth``; reset by subtraction.

    With all positive input before the negative, the count is ``max(0, floor(z/Vth))`` only if
    ``z`` never decreases; in general it is order-dependent, because early positive input fires
    spikes that later negative input cannot take back.
    """

    def __init__(self, threshold=1.0, leak=0.0) -> None:
        super().__init__()
        self.register_buffer("threshold", _as_buffer(threshold, "threshold"))
        self.register_buffer("leak", _as_buffer(leak, "leak"))

    def initial_state(self, x):
        zeros = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        return CaState(zeros, zeros.clone())

    def step(self, x, state):
        th = _broadcast(self.threshold, x)
        v = state.v + x.to(torch.float64) - _broadcast(self.leak, x)
        out = (v >= th).to(torch.float64)
        return out, CaState(v - out * th, state.count + out)


@register_neuron(name="ca_lif", family="conversion")
def _make_ca_lif(**kwargs) -> CaLIF:
    """Ca-LIF: calcium-gated bipolar LIF of exact QAT conversion (computes in the input dtype)."""
    kwargs.setdefault("dtype", None)
    return CaLIF(**kwargs)
