r"""LIF with a quantized membrane (SpQuant-SNN's Quant-SNN neuron), as a pure step and a module.

Per step, with input current ``I_t`` (already ``BN(Conv(o^{l-1}_t))``)::

    u_t  = decay * u~_{t-1} + I_t               (decay = 0.5: a multiplicative leak)
    o_t  = H(u_t - V_th)                        (fire on >=; triangle surrogate, g = 1)
    u~_t = Q((1 - o_t) * u_t)                   (hard reset, then the stored potential is quantized)

``Q`` is :class:`~spikequant.quant.membrane.MembraneLevels` (ternary {-1, 0, 1} by default, SGS
gradient). The comparison uses the unquantized sum ``u_t``; only the stored state is low precision.
With ``membrane=None`` the stored state is the float ``(1 - o_t) u_t`` (the FP SNN baseline), and
``clip=c`` clips it at ``c`` from below (the inference-only clipping analysis).

Options (all off by default):

* ``binary_membrane``: store ``Q(u) * 1[Q(u) >= 0]`` (the -1 level pruned; binary membrane).
* ``learn_threshold``: one trainable ``V_th`` per layer with the separate gradient path
  ``dL/dV_th = -sum dL/do * tri(u - V_th) * sig(u - V_th) * 1[u >= V_th]`` (the membrane keeps the
  plain triangle gradient); ``V_th`` is clamped at ``min_threshold`` (0.1) in the forward pass.
  ``threshold_grad="surrogate"`` trains it through the spike surrogate instead (the plain learnable
  threshold the paper's Table 4 compares with): ``dL/dV_th = -sum dL/do * tri(u - V_th)``.
* ``spatial_prune = p``: per sample and step, locations whose channel-mean pre-fire membrane
  ``decay u~ + I`` is in the lowest fraction ``p`` get no input current (they only leak).
* a channel gate attached by :func:`spikequant.spquant.pruning.attach_channel_gates` masks whole
  input-current channels from the previous spiking layer's pooled membrane.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..neurons import SpikingNeuron, channel_view
from ..quant.membrane import MembraneLevels
from ..registry import register_neuron
from ..surrogate import Surrogate, Triangle, create_surrogate

# how a learned V_th gets its gradient: the separate path, or the spike surrogate's
THRESHOLD_GRADS = ("separate", "surrogate")


class QLIFState(NamedTuple):
    u: torch.Tensor  # stored post-reset (quantized) membrane


class QLIFParams(NamedTuple):
    threshold: torch.Tensor | float
    decay: float
    levels: MembraneLevels | None
    clip: float | None
    binary_membrane: bool
    spatial_prune: float
    surrogate: Surrogate
    separate_threshold_grad: bool
    exact_ranking: bool = True  # spatial pruning's tie-exact score (see spatial_keep_mask)


class _SeparatePathSpike(torch.autograd.Function):
    """``o = 1[u >= V_th]``; grad_u = tri(u - V_th); grad_V_th = -tri * sig * 1[u >= V_th]."""

    @staticmethod
    def forward(ctx, u, threshold, surrogate):
        q = u - threshold
        ctx.save_for_backward(q)
        ctx.surrogate = surrogate
        ctx.threshold_shape = threshold.shape
        return (q >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (q,) = ctx.saved_tensors
        window = grad_out * ctx.surrogate.grad(q)
        grad_threshold = -(window * torch.sigmoid(q) * (q >= 0).to(q.dtype))
        shape = ctx.threshold_shape
        if len(shape) == 0:
            grad_threshold = grad_threshold.sum()
        else:  # per channel: dimension 1 of a step, broadcast as [C, 1, ...]
            dims = [d for d in range(grad_threshold.ndim) if d != 1]
            grad_threshold = grad_threshold.sum(dims).reshape(shape)
        return window, grad_threshold, None


_CLASS_TOLERANCE = 2.0**-13  # relative to a channel's largest |current| (see _snap_to_classes)


def _snap_to_classes(current: torch.Tensor) -> torch.Tensor:
    """Per sample and channel, replace every current by the smallest current of its class: sorted
    values closer than ``2^-13 max|I|`` are one class (single linkage).

    Why: a quantized layer's current is ``I = a_c acc + b_c`` with an integer accumulator ``acc``
    (binary spikes or pixel codes times integer weight levels), but float32 convolutions sum the
    same terms in a different order at different locations (image borders, vector tails), so one
    ``acc`` gives currents a few ulps apart, while distinct accumulators differ by at least
    ``|a_c| >= max|I| / (max|acc| + |b_c / a_c|)``. The classes are exactly the accumulator values,
    and equal accumulators get bit-identical currents, as long as one accumulator's currents lie
    within ``2^-13 max|I|`` (a float32 sum of ``K`` terms is off by at most ``K 2^-24`` times
    the sum of their magnitudes; measured below ``2^-20 max|I|`` on trained digits networks) and
    distinct ones further apart
    (``max|acc| + |b_c / a_c| < 2^13``; ``tests/runtime/test_pruning_exact.py`` checks both on a
    trained network)."""
    b, c = current.shape[:2]
    flat = current.reshape(b, c, -1)
    values, order = torch.sort(flat, dim=-1)
    tolerance = flat.abs().amax(-1, keepdim=True) * _CLASS_TOLERANCE
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[..., 1:] = (values[..., 1:] - values[..., :-1]) > tolerance
    position = torch.arange(values.shape[-1], device=values.device).expand_as(values)
    first = torch.where(starts, position, torch.zeros_like(position)).cummax(-1).values
    snapped = torch.empty_like(flat).scatter_(-1, order, values.gather(-1, first))
    return snapped.view_as(current)


def spatial_keep_mask(
    current: torch.Tensor,
    membrane: torch.Tensor,
    prune: float,
    *,
    decay: float,
    step: float | None = None,
    exact: bool = True,
) -> torch.Tensor:
    """``[B, 1, H, W]`` mask dropping, per sample, the ``round(prune * H * W)`` locations with
    the lowest channel sum of the pre-fire membrane ``decay u~ + I``; equal scores drop the lower
    flat index first (a stable sort: ``topk`` breaks ties differently per device and size, and
    the integer runtime needs one rule). The channel sum ranks like the mean.

    The score is computed so that it ties exactly where the integer program's score
    ``sum_c (n_c 2^(F+1-j) + 2 I_c)`` ties, whatever order float32 summed the currents in::

        score = decay * step * sum_c round(u~_c / step)  +  sum_c snap(I_c)     (float64)

    The membrane part is an integer level sum times ``decay * step``: two locations whose stored
    levels sum alike score alike (``fl32(decay u + I)`` per channel would not: ``0.5 + I`` rounds
    differently from ``I``). ``snap`` (:func:`_snap_to_classes`) maps the currents of one integer
    accumulator to one float32 value, and a float64 sum of float32 values of the same vector is
    the same number. In exact arithmetic the snapped score equals ``sum_c (decay u~ + I)`` up to
    the few-ulp spread of a class, so without rounding errors the mask is unchanged.

    ``exact=False`` (QLIF in training mode, and half precision) ranks the float64 channel sum of
    the float32 ``decay u~ + I`` as computed, skipping the per-channel sort the snapping needs:
    rounding-level differences in which locations are dropped do not matter to training.
    """
    if current.ndim != 4:
        raise ShapeError(f"spatial pruning needs [B, C, H, W] steps, got {tuple(current.shape)}")
    b, _, h, w = current.shape
    drop = int(round(prune * h * w))
    mask = torch.ones(b, h * w, dtype=current.dtype, device=current.device)
    # the class tolerance is sized for float32 rounding; half precision has no exact ranking
    exact = exact and current.dtype in (torch.float32, torch.float64)
    if drop > 0 and not exact:
        pre = (decay * membrane + current).detach().to(torch.float64)
        order = torch.sort(pre.sum(1).reshape(b, h * w), dim=1, stable=True).indices
        mask.scatter_(1, order[:, :drop], 0.0)
    elif drop > 0:
        currents = current.detach().to(torch.float64)
        u = membrane.detach().to(torch.float64)
        if step is None:
            leak = decay * u.sum(1)
        else:
            leak = (decay * step) * torch.round(u / step).sum(1)
        leak = leak.reshape(b, h * w)
        score = leak + currents.sum(1).reshape(b, h * w)
        values, order = torch.sort(score, dim=1, stable=True)
        if drop < h * w:
            # snapping moves a score by less than the sum of the class tolerances; a sample whose
            # cut is wider than twice that drops the same locations either way (and skips the
            # per-channel sort, the costly part)
            bound = 2 * currents.abs().amax((2, 3)).sum(1) * _CLASS_TOLERANCE
            rows = torch.nonzero(values[:, drop] - values[:, drop - 1] <= bound).flatten()
            if rows.numel():
                snapped = _snap_to_classes(current.detach()[rows]).to(torch.float64)
                snapped = snapped.sum(1).reshape(-1, h * w)
                order[rows] = torch.sort(leak[rows] + snapped, dim=1, stable=True).indices
        mask.scatter_(1, order[:, :drop], 0.0)
    return mask.view(b, 1, h, w)


def qlif_step(current: torch.Tensor, state: QLIFState, p: QLIFParams):
    """One quantized-membrane LIF step; returns ``(spikes, new_state, pre_fire_membrane, keep)``
    with ``keep`` the ``[B, 1, H, W]`` spatial mask (``None`` without spatial pruning)."""
    pre = p.decay * state.u + current
    keep = None
    if p.spatial_prune > 0 and current.ndim == 4:
        step = None if p.levels is None else float(p.levels.step)
        u = state.u.expand_as(current)
        keep = spatial_keep_mask(
            current, u, p.spatial_prune, decay=p.decay, step=step, exact=p.exact_ranking
        )
        pre = p.decay * state.u + current * keep
    if p.separate_threshold_grad:
        spikes = _SeparatePathSpike.apply(pre, p.threshold, p.surrogate)
    else:
        spikes = p.surrogate(pre - p.threshold)
    kept = (1 - spikes) * pre
    if p.levels is not None:
        stored = p.levels(kept)
    elif p.clip is not None:
        stored = torch.clamp(kept, min=p.clip)
    else:
        stored = kept
    if p.binary_membrane:
        stored = stored * (stored.detach() >= 0).to(stored.dtype)
    return spikes, QLIFState(stored), pre, keep


def _make_levels(membrane, threshold: float, clip_low: float) -> MembraneLevels | None:
    if isinstance(membrane, bool):  # before the bits: True == 1 would read as one bit
        membrane = "ternary" if membrane else "fp"
    if membrane is None or membrane in ("fp", "fp32", "float"):
        return None
    if isinstance(membrane, MembraneLevels):
        return membrane
    if membrane == "ternary":
        return MembraneLevels(low=clip_low, high=threshold, step=1.0)
    if isinstance(membrane, int) and not isinstance(membrane, bool):
        return MembraneLevels.from_bits(membrane, high=threshold)
    if isinstance(membrane, dict):
        kw = {"high": threshold, "low": clip_low, **membrane}
        return MembraneLevels(**kw)
    raise ConfigError(
        "membrane must be 'ternary', 'fp', a number of bits or a dict(low, high, step), "
        f"got {membrane!r}"
    )


class QLIF(SpikingNeuron):
    """LIF with quantized stored membrane (see the module docstring for the equations).

    Args:
        threshold: ``V_th`` (initial value when learned), default 1.
        decay: multiplicative leak, default 0.5 (``u = decay u~ + I``); not a time constant
            (an LIF with time constant ``tau`` has ``decay = 1 - 1/tau``).
        membrane: ``"ternary"`` (levels {c..V_th} step 1), ``"fp"``/``None``, bits, or a dict
            ``{low, high, step, smoothness}`` / :class:`MembraneLevels`.
        clip_low: ``c`` for ``"ternary"``.
        clip: with ``membrane="fp"``, clip the stored membrane at ``clip`` from below (no rounding).
        surrogate: spike surrogate, default ``Triangle(alpha=1)`` (g = 1).
        learn_threshold: trainable per-layer ``V_th`` with the separate path.
        min_threshold: the learned ``V_th`` is clamped at this value in the forward pass.
        binary_membrane: store ``Q(u) * 1[Q(u) >= 0]`` (the -1 level pruned).
        spatial_prune: fraction ``p`` of locations pruned per sample and step (module docstring).
        num_channels: ``None`` for a per-layer threshold, else one per channel.
        threshold_grad: ``"separate"`` (the separate gradient path) or ``"surrogate"`` (the
            threshold's gradient is the spike surrogate's, as the membrane's with the sign flipped).
    """

    def __init__(
        self,
        threshold: float = 1.0,
        *,
        decay: float = 0.5,
        membrane="ternary",
        clip_low: float = -1.0,
        clip: float | None = None,
        surrogate=None,
        learn_threshold: bool = False,
        min_threshold: float = 0.1,
        binary_membrane: bool = False,
        spatial_prune: float = 0.0,
        num_channels: int | None = None,
        threshold_grad: str = "separate",
        **removed,
    ) -> None:
        super().__init__()
        if "tau" in removed:
            raise ConfigError(
                "QLIF's multiplicative leak is now called 'decay' "
                "(tau is a time constant elsewhere)"
            )
        if removed:
            raise TypeError(
                f"QLIF() got unexpected keyword arguments: {', '.join(sorted(removed))}"
            )
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise ConfigError(f"threshold must be a positive number, got {threshold!r}")
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ConfigError(f"decay (the multiplicative leak) must be in [0, 1), got {decay!r}")
        if not (isinstance(spatial_prune, (int, float)) and 0 <= spatial_prune < 1):
            raise ConfigError(f"spatial_prune must be a fraction in [0, 1), got {spatial_prune!r}")
        if threshold_grad not in THRESHOLD_GRADS:
            raise ConfigError(
                f"threshold_grad must be one of {', '.join(THRESHOLD_GRADS)}, "
                f"got {threshold_grad!r}"
            )
        self.threshold_grad = threshold_grad
        shape = () if num_channels is None else (int(num_channels),)
        self.threshold = nn.Parameter(
            torch.full(shape, float(threshold)), requires_grad=learn_threshold
        )
        self.decay = float(decay)
        self.levels = _make_levels(membrane, float(threshold), float(clip_low))
        self.clip = None if clip is None else float(clip)
        self.surrogate = Triangle(alpha=1.0) if surrogate is None else create_surrogate(surrogate)
        self.min_threshold = float(min_threshold)
        self.binary_membrane = bool(binary_membrane)
        self.spatial_prune = float(spatial_prune)
        self.channel_gate: nn.Module | None = None
        self._gate_source: list[QLIF] = []  # a plain list so the source is not a submodule
        self.record_pooled = False
        self.pooled_membrane: torch.Tensor | None = None
        self.record_trace = False
        self.trace: dict[str, torch.Tensor] | None = None
        self.record_fed = False
        self.fed_mask: torch.Tensor | None = None  # 1 where the input current was accumulated
        self.reset_sparsity_stats()

    # -- parameters -----------------------------------------------------------------------------
    def effective_threshold(self, x: torch.Tensor) -> torch.Tensor:
        th = self.threshold
        if th.requires_grad:
            th = th.clamp(min=self.min_threshold)
        return channel_view(th, x)

    def params(self, x: torch.Tensor) -> QLIFParams:
        return QLIFParams(
            self.effective_threshold(x),
            self.decay,
            self.levels,
            self.clip,
            self.binary_membrane,
            self.spatial_prune,
            self.surrogate,
            bool(self.threshold.requires_grad) and self.threshold_grad == "separate",
            not self.training,
        )

    @property
    def membrane_bits(self) -> int:
        if self.levels is None:
            return 32
        return 1 if self.binary_membrane else self.levels.bits

    # -- sparsity bookkeeping -------------------------------------------------------------------
    def reset_sparsity_stats(self) -> None:
        self.sparsity_stats = {
            "locations": 0.0,
            "pruned_locations": 0.0,
            "channels": 0.0,
            "masked_channels": 0.0,
        }

    def sparsity(self) -> dict[str, float]:
        """Measured spatial ``S_p`` and channel ``S_c`` since the last reset of the statistics."""
        s = self.sparsity_stats
        sp = s["pruned_locations"] / s["locations"] if s["locations"] else 0.0
        sc = s["masked_channels"] / s["channels"] if s["channels"] else 0.0
        return {"spatial": sp, "channel": sc}

    # -- dynamics -------------------------------------------------------------------------------
    def initial_state(self, x: torch.Tensor) -> QLIFState:
        return QLIFState(torch.zeros_like(x))

    def step(self, x, state):
        spikes, state, _, _ = qlif_step(x, state, self.params(x))
        return spikes, state

    def attach_gate(self, source: QLIF, gate: nn.Module) -> None:
        """Mask this layer's input channels from ``source``'s pooled membrane through ``gate``."""
        self.channel_gate = gate
        self._gate_source = [source]
        source.record_pooled = True

    def run(self, x_seq: torch.Tensor, state: QLIFState):
        p = self.params(x_seq[0])
        channel_mask = None
        if self.channel_gate is not None:
            pooled = self._gate_source[0].pooled_membrane
            if pooled is None:
                raise ShapeError("channel gate source has not run yet in this forward pass")
            channel_mask = self.channel_gate(pooled.detach())
            view = channel_mask.view(*channel_mask.shape, *([1] * (x_seq.ndim - 3)))
            x_seq = x_seq * view.unsqueeze(0)
        outputs, pres, stored, keeps = [], [], [], []
        pooled_sum = None
        for x in x_seq.unbind(0):
            spikes, state, pre, keep = qlif_step(x, state, p)
            outputs.append(spikes)
            if self.record_fed and keep is not None:
                keeps.append(keep)
            if self.record_pooled:
                m = pre.mean(dim=tuple(range(2, pre.ndim))) if pre.ndim > 2 else pre
                pooled_sum = m if pooled_sum is None else pooled_sum + m
            if self.record_trace:
                pres.append(pre.detach())
                stored.append(state.u.detach())
        out = torch.stack(outputs)
        if self.record_fed:
            fed = torch.ones_like(x_seq, dtype=torch.bool)
            if channel_mask is not None:
                fed = fed & (channel_mask.detach() != 0).view(
                    1, *channel_mask.shape, *([1] * (x_seq.ndim - 3))
                )
            if keeps:
                fed = fed & (torch.stack(keeps) != 0)
            self.fed_mask = fed
        if self.record_pooled:
            self.pooled_membrane = pooled_sum / x_seq.shape[0]
        if self.record_trace:
            self.trace = {
                "pre": torch.stack(pres),
                "stored": torch.stack(stored),
                "spikes": out.detach(),
            }
        with torch.no_grad():
            self._count(x_seq, channel_mask)
        return out, state

    def _count(self, x_seq: torch.Tensor, channel_mask: torch.Tensor | None) -> None:
        s = self.sparsity_stats
        if x_seq.ndim == 5 and self.spatial_prune > 0:
            t, b, _, h, w = x_seq.shape
            s["locations"] += t * b * h * w
            s["pruned_locations"] += t * b * int(round(self.spatial_prune * h * w))
        elif x_seq.ndim == 5:
            t, b, _, h, w = x_seq.shape
            s["locations"] += t * b * h * w
        if channel_mask is not None:
            s["channels"] += float(channel_mask.numel())
            s["masked_channels"] += float((channel_mask.detach() == 0).sum())
        elif x_seq.ndim >= 3:
            s["channels"] += float(x_seq.shape[1] * x_seq.shape[2])

    def extra_repr(self) -> str:
        membrane = "fp32" if self.levels is None else f"levels={self.levels.values().tolist()}"
        return (
            f"decay={self.decay}, {membrane}, learn_threshold={self.threshold.requires_grad}, "
            f"binary_membrane={self.binary_membrane}, spatial_prune={self.spatial_prune}"
        )


@register_neuron(name="qlif")
def _make_qlif(**kwargs) -> QLIF:
    """SpQuant LIF: decay 0.5, hard reset, ternary stored membrane (SGS), triangle surrogate."""
    return QLIF(**kwargs)


# -- integer reference ------------------------------------------------------------------------
def to_fixed_point(x: torch.Tensor, frac_bits: int, step: float = 1.0) -> torch.Tensor:
    """Integer codes of ``x`` in units of ``step * 2**-frac_bits`` (round half to even)."""
    return torch.round(x / step * 2**frac_bits).to(torch.int64)


def qlif_integer_reference(
    currents: torch.Tensor,
    *,
    frac_bits: int,
    threshold: float = 1.0,
    levels: MembraneLevels | None = None,
    binary_membrane: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-only QLIF (decay = 0.5): ``currents[T, ...]`` are int64 codes in units of
    ``k 2^-F``. Returns ``(spikes[T, ...], stored level indices[T, ...])`` (int64).

    Internally the accumulator has ``F + 1`` fractional bits so that the leak ``u~/2`` is exact:
    ``acc = n 2^F + 2 I``; fire when ``acc >= V_th 2^(F+1) / k``; the stored index is
    ``clamp(round0(acc / 2^(F+1)), lo, hi)`` with round-half-toward-zero done by shifts.
    """
    levels = levels or MembraneLevels(low=-1.0, high=threshold, step=1.0)
    if currents.dtype != torch.int64:
        raise ConfigError("the integer reference takes int64 current codes (see to_fixed_point)")
    if not isinstance(frac_bits, int) or frac_bits < 0:
        raise ConfigError(f"frac_bits must be a non-negative integer, got {frac_bits!r}")
    scale = 2 ** (frac_bits + 1)
    th_code = threshold / levels.step * scale
    if th_code != int(th_code):
        raise ConfigError(
            f"threshold {threshold} is not representable with {frac_bits} fraction bits"
        )
    th_code = int(th_code)
    n = torch.zeros_like(currents[0])
    spikes, stored = [], []
    half = 2**frac_bits
    for current in currents:
        acc = n * half + 2 * current
        fired = acc >= th_code
        magnitude = (acc.abs() + half - 1) >> (frac_bits + 1)
        index = torch.sign(acc) * magnitude
        index = index.clamp(levels.low_index, levels.high_index)
        index = torch.where(fired, torch.zeros_like(index), index)
        if binary_membrane:
            index = index.clamp(min=0)
        n = index
        spikes.append(fired.to(torch.int64))
        stored.append(index)
    return torch.stack(spikes), torch.stack(stored)


__all__ = [
    "QLIF",
    "QLIFParams",
    "QLIFState",
    "qlif_integer_reference",
    "qlif_step",
    "spatial_keep_mask",
    "to_fixed_point",
]
