r"""MSAT neuron: IF with a multi-stage adaptive threshold and spike confidence (Wang et al.).

Units are normalised by the layer scale ``lambda`` (max ANN activation), so the base threshold is 1.
Per step ``t`` with normalised input ``x(t)``::

    thr(1)   = 1
    thr(t)   = sigmoid(tau_mp DTT(t-1) + tau_rd DET(t))                 (t >= 2, Alg. 1 l.12-13)
    mem     += x(t);  s = 1[mem >= thr(t)];  mem -= thr(t) s            (soft reset)
    DTT(t)   = alpha (mem - Vm) + V_T + k_a ln(1 + exp((mem - Vm) / k_i))   (eq. 12)
    DET(t)   = exp(-delta(t) / C)                                        (eq. 13)

``Vm`` is the running mean of the residual membrane over the steps so far, ``V_T = -1``, and
``delta(t)`` is the input current ``x(t)`` (default, as the authors' code) or the change of the
pre-firing membrane (``det_delta="membrane"``, the paper's text). The neuron emits ``thr(t) s``
(times ``lambda`` in real units). With ``V = Vm`` and no input the threshold settles at
``sigmoid(tau_mp (ln 2 - 1) + tau_rd)``: 2/3 for the VGG16 setting, 0.585786 for ResNet20/34.

Spike confidence (eq. 14): during the first ``E`` steps each spike passes a Bernoulli(p) filter;
the reset uses the filtered spike (paper) unless ``reset_filtered=False``.

Ablation (the paper's Fig. 4), ``adaptation``: ``"both"`` (default, the equations above),
``"dtt"`` (``thr(t) = sigmoid(tau_mp DTT(t-1))``, no DET term), ``"det"``
(``thr(t) = sigmoid(tau_rd DET(t))``, no DTT term) or ``"fixed"`` (``thr(t) = f`` for every t,
the heuristic scaled threshold ``f V_th`` with ``f = fixed_fraction``).

Options that are not the paper's defaults (for the comparison in docs/conversion.md):
``initial_membrane = v0`` starts the membrane at ``v0`` times the base threshold (Bu et al. 2022;
the MSAT code has it commented out, so the default is 0), and ``units="real"`` evaluates DTT and
DET on the membrane in real units with ``V_T = -lambda`` and ``thr = lambda sigmoid(...)``, as the
authors' code does; then the adaptation depends on the size of ``lambda`` (for ``lambda = 1`` it
equals the normalised neuron).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..errors import ConfigError
from ..neurons.base import SpikingNeuron
from ..registry import register_neuron
from ..surrogate import Surrogate, create_surrogate

#: Table 2 of the paper; spikequant's small plain CNNs/MLPs use the VGG16 row by default.
PRESETS: dict[str, dict[str, float]] = {
    "vgg16": {"alpha": 0.03, "k_a": 1.0, "k_i": 1.0, "C": 5.0, "tau_mp": 1.0, "tau_rd": 1.0},
    "resnet20": {"alpha": 0.3, "k_a": 1.0, "k_i": 1.0, "C": 5.0, "tau_mp": 0.5, "tau_rd": 0.5},
    "resnet34": {"alpha": 1.0, "k_a": 1.0, "k_i": 1.0, "C": 5.0, "tau_mp": 0.5, "tau_rd": 0.5},
}

#: threshold dynamics of the ablation (module docstring)
ADAPTATIONS = ("both", "dtt", "det", "fixed")

#: architecture -> preset used when the user does not choose one
ARCHITECTURE_PRESETS = {
    "ann_mlp": "vgg16",
    "ann_lenet": "vgg16",
    "ann_cnn": "vgg16",
    "ann_cnn_residual": "resnet20",
}


def msat_hyperparameters(preset: str = "vgg16", **overrides) -> dict[str, float]:
    """The MSAT hyperparameters of a Table 2 ``preset`` with ``overrides`` applied (unknown
    names are a ConfigError)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown MSAT preset {preset!r}; known: {', '.join(PRESETS)}")
    params = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in params:
            raise ConfigError(f"unknown MSAT hyperparameter {key!r}; known: {', '.join(params)}")
        params[key] = float(value)
    if params["k_i"] <= 0 or params["C"] <= 0:
        raise ConfigError("MSAT k_i and C must be > 0")
    return params


def resting_threshold(preset: str = "vgg16") -> float:
    """Closed form with ``V = Vm`` and zero input: ``sigmoid(tau_mp (ln 2 - 1) + tau_rd)``."""
    p = PRESETS[preset]
    z = p["tau_mp"] * (-1.0 + p["k_a"] * math.log(2.0)) + p["tau_rd"]
    return 1.0 / (1.0 + math.exp(-z))


class MSATState(NamedTuple):
    mem: torch.Tensor
    thr: torch.Tensor
    dtt: torch.Tensor
    vm_sum: torch.Tensor
    prev_pre: torch.Tensor
    t: int


class MSATParams(NamedTuple):
    divisor: torch.Tensor  # input divisor: lambda (normalised units) or 1 (real units)
    base: torch.Tensor  # base threshold: 1 (normalised units) or lambda (real units)
    alpha: float
    k_a: float
    k_i: float
    C: float
    tau_mp: float
    tau_rd: float
    det_delta: str  # "input" or "membrane"
    adaptation: str  # "both", "dtt", "det" or "fixed"
    fixed_fraction: float  # thr = fixed_fraction * base under adaptation="fixed"
    reset_filtered: bool
    surrogate: Surrogate
    keep: torch.Tensor | None  # this step's spike-confidence mask (None: every spike passes)


def msat_step(x: torch.Tensor, state: MSATState, p: MSATParams):
    """One MSAT step (module docstring): threshold from DTT(t-1) and DET(t), soft reset,
    output ``keep s thr divisor``. The spike carries the surrogate's gradient (forward exactly
    ``1[pre - thr >= 0]``)."""
    x = x / p.divisor
    t = state.t + 1
    pre = state.mem + x
    if p.adaptation == "fixed":
        thr = p.fixed_fraction * p.base * torch.ones_like(x)
    elif t == 1:
        thr = p.base * torch.ones_like(x)
    else:
        delta = x if p.det_delta == "input" else pre - state.prev_pre
        det = torch.exp(-delta / p.C)
        if p.adaptation == "both":
            thr = p.base * torch.sigmoid(p.tau_mp * state.dtt + p.tau_rd * det)
        elif p.adaptation == "dtt":
            thr = p.base * torch.sigmoid(p.tau_mp * state.dtt)
        else:
            thr = p.base * torch.sigmoid(p.tau_rd * det)
    spike = p.surrogate(pre - thr)
    kept = spike if p.keep is None else spike * p.keep.to(x.dtype)
    mem = pre - thr * (kept if p.reset_filtered else spike)
    vm_sum = state.vm_sum + mem
    dev = mem - vm_sum / t
    softplus = torch.nn.functional.softplus(dev / p.k_i)
    dtt = p.alpha * dev - p.base + p.k_a * softplus  # V_T = -base threshold
    return kept * thr * p.divisor, MSATState(mem, thr, dtt, vm_sum, pre, t)


class MSAT(SpikingNeuron):
    """MSAT neuron in real units: input ``x / scale`` is normalised, the output is ``scale thr s``.

    Args:
        scale: layer scale ``lambda`` (scalar or per channel).
        preset: Table 2 row the hyperparameters come from.
        det_delta: ``"input"`` (default) or ``"membrane"``.
        adaptation: ``"both"`` (default), ``"dtt"``, ``"det"`` or ``"fixed"`` (ablation).
        fixed_fraction: the threshold ``f V_th`` under ``adaptation="fixed"`` (default 1).
        confidence: Bernoulli keep-probability ``p`` for the first ``confidence_steps`` steps
            (``None``: off).
        reset_filtered: reset with the filtered spike (paper) or the raw one.
        initial_membrane: membrane at t = 0 as a fraction of the base threshold (default 0).
        units: ``"normalised"`` (default, msat.md) or ``"real"`` (the authors' code).
        generator: random generator of the confidence draws (``None``: torch's global one).
        **hyperparameters: overrides of the preset (alpha, k_a, k_i, C, tau_mp, tau_rd).
    """

    def __init__(
        self,
        scale=1.0,
        *,
        preset: str = "vgg16",
        det_delta: str = "input",
        adaptation: str = "both",
        fixed_fraction: float = 1.0,
        confidence: float | None = None,
        confidence_steps: int = 16,
        reset_filtered: bool = True,
        initial_membrane: float = 0.0,
        units: str = "normalised",
        generator: torch.Generator | None = None,
        surrogate: Surrogate | str | dict | None = None,
        **hyperparameters,
    ) -> None:
        super().__init__()
        scale = torch.as_tensor(scale, dtype=torch.float32).clone()
        if (scale <= 0).any() or not torch.isfinite(scale).all():
            raise ConfigError("MSAT scale must be positive and finite")
        if det_delta not in ("input", "membrane"):
            raise ConfigError(f"det_delta must be 'input' or 'membrane', got {det_delta!r}")
        if adaptation not in ADAPTATIONS:
            raise ConfigError(
                f"adaptation must be one of {', '.join(ADAPTATIONS)}, got {adaptation!r}"
            )
        if not (math.isfinite(fixed_fraction) and fixed_fraction > 0):
            raise ConfigError(f"fixed_fraction must be positive, got {fixed_fraction!r}")
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ConfigError(f"confidence must be a probability, got {confidence!r}")
        if units not in ("normalised", "real"):
            raise ConfigError(f"units must be 'normalised' or 'real', got {units!r}")
        if not 0.0 <= float(initial_membrane) < 1.0:
            raise ConfigError(f"initial_membrane must be in [0, 1), got {initial_membrane!r}")
        self.register_buffer("scale", scale)
        self.hp = msat_hyperparameters(preset, **hyperparameters)
        self.preset = preset
        self.det_delta = det_delta
        self.adaptation = adaptation
        self.fixed_fraction = float(fixed_fraction)
        self.confidence = confidence
        self.confidence_steps = int(confidence_steps)
        self.reset_filtered = bool(reset_filtered)
        self.initial_membrane = float(initial_membrane)
        self.units = units
        self.generator = generator
        self.surrogate = create_surrogate(surrogate)

    def _scale(self, x):
        s = self.scale
        return s if s.ndim == 0 else s.view(-1, *([1] * (x.ndim - 2)))

    def _units(self, x):
        """(divisor of the input, base threshold) in the membrane's units."""
        scale = self._scale(x)
        if self.units == "real":
            return torch.ones_like(scale), scale
        return scale, torch.ones_like(scale)

    def initial_state(self, x):
        zeros = torch.zeros_like(x)
        _, base = self._units(x)
        mem = self.initial_membrane * base * torch.ones_like(x)
        return MSATState(mem, base * torch.ones_like(x), zeros, zeros, zeros, 0)

    def params(self, x: torch.Tensor, t: int) -> MSATParams:
        """Parameters of step ``t`` (1-based), with the spike-confidence mask drawn for it."""
        divisor, base = self._units(x)
        keep = None
        if self.confidence is not None and t <= self.confidence_steps:
            keep = torch.rand(x.shape, generator=self.generator, device=x.device) < self.confidence
        hp = self.hp
        return MSATParams(
            divisor,
            base,
            hp["alpha"],
            hp["k_a"],
            hp["k_i"],
            hp["C"],
            hp["tau_mp"],
            hp["tau_rd"],
            self.det_delta,
            self.adaptation,
            self.fixed_fraction,
            self.reset_filtered,
            self.surrogate,
            keep,
        )

    def step(self, x, state: MSATState):
        return msat_step(x, state, self.params(x, state.t + 1))

    def extra_repr(self) -> str:
        return (
            f"preset={self.preset}, det_delta={self.det_delta}, adaptation={self.adaptation}, "
            f"fixed_fraction={self.fixed_fraction}, confidence={self.confidence}, "
            f"E={self.confidence_steps}, initial_membrane={self.initial_membrane}, "
            f"units={self.units}"
        )


@register_neuron(name="msat", family="conversion")
def _make_msat(**kwargs) -> MSAT:
    """MSAT: IF with a multi-stage adaptive threshold (conversion; base threshold = scale)."""
    return MSAT(**kwargs)
