r"""Quantization-aware training: per-channel fake-quantized weights, LSQ quantized ReLU, BN folding.

* Weights (symmetric, per output channel, ``bits`` in 2..16): ``qw = 2^(bits-1) - 1``,
  ``Sw_c = max|w_c| / qw``, ``wQ = clamp(round(w / Sw_c), -qw, qw)``; the forward pass uses
  ``Sw wQ`` and the gradient passes straight through (STE).
* Activations (LSQ, Esser et al. 2020): ``yQ = clamp(round_half_up(x / Sy), 0, qmax)``,
  ``y = Sy yQ`` with a learnable step ``Sy``; ``qmax = 2^(bits-1) - 1`` by default (the signed
  8-bit integer range of the Ca-LIF paper, 127 for 8 bits). The step gradient is scaled by
  ``1 / sqrt(numel * qmax)``.
* Average pooling of quantized activations rounds the mean back to the grid,
  ``round_half_up(mean(yQ))``, so that every layer carries integers (the Ca-LIF pool neuron).
* BN is trained with the fake-quantized convolution, then folded:
  ``w' = w gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) gamma / sqrt(var + eps)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"bits must be an integer in 2..16, got {bits!r}")
    return bits


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 1/2)`` with a straight-through gradient (ties round up, as the Ca-LIF does)."""
    return x + (torch.floor(x + 0.5) - x).detach()


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric step ``Sw_c = max|w_c| / (2^(bits-1) - 1)``, ``[C_out]``."""
    qw = 2 ** (bits - 1) - 1
    amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(1)
    return amax.clamp(min=1e-8) / qw


def quantize_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights ``wQ`` (as float) and per-channel scales ``Sw`` with ``w ~ Sw wQ``."""
    qw = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, bits)
    view = scale.view(-1, *([1] * (weight.ndim - 1)))
    return torch.clamp(torch.round(weight.detach() / view), -qw, qw), scale


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qw = 2 ** (bits - 1) - 1
    view = weight_scale(weight, bits).view(-1, *([1] * (weight.ndim - 1)))
    q = weight / view
    q = q + (torch.clamp(torch.round(q), -qw, qw) - q).detach()
    return q * view


class _FakeQuantConv:
    """The convolution of the class it is mixed into, with per-channel fake-quantized weights."""

    def __init__(self, *args, bits: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bits = check_bits(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight, self.bits), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}"


class QuantConv1d(_FakeQuantConv, nn.Conv1d):
    """Conv1d whose forward pass uses per-channel fake-quantized weights."""


def avg_pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Average pooling over the spatial dims of ``x[B, C, L]`` or ``x[B, C, H, W]``."""
    return F.avg_pool1d(x, kernel) if x.ndim == 3 else F.avg_pool2d(x, kernel)


class QuantConv2d(_FakeQuantConv, nn.Conv2d):
    """Conv2d whose forward pass uses per-channel fake-quantized weights."""


class QuantLinear(nn.Linear):
    """Linear layer whose forward pass uses per-channel fake-quantized weights."""

    def __init__(self, *args, bits: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bits = check_bits(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_weight(self.weight, self.bits), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}"


class QuantInput(nn.Module):
    """Input quantizer for 8-bit images in [0, 1]: ``x -> round_half_up(255 x) / 255``."""

    levels = 255

    def __init__(self) -> None:
        super().__init__()
        # switched off to evaluate the network on an already-coded input (e.g. ISI-decoded)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return round_half_up(x.clamp(0, 1) * self.levels) / self.levels


class _LSQGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, step, scale):
        ctx.scale = scale
        return step.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class QuantReLU(nn.Module):
    r"""Quantized ReLU with a learnable step (LSQ), optionally followed by rounded average pooling.

    ``codes = clamp(round_half_up(x / Sy), 0, qmax)``; output ``Sy * codes`` (or, with ``pool=p``,
    ``Sy * round_half_up(avgpool_p(codes))``). The step is initialised on the first training batch
    to ``2 mean(|x|) / sqrt(qmax)`` (LSQ).

    ``power_of_two=True`` uses ``Sy = 2^round(log2 s)`` of the learned ``s`` (gradient straight
    through to ``s``). A hidden Ca-LIF layer then sums spikes worth ``Sy_prev`` in float64 without
    rounding, so its codes equal the quantized ANN's by construction; with an arbitrary 24-bit
    step, ``Sy_prev sum_i w_i c_i`` needs up to ~70 bits and both sides round (at ~1e-16).

    The learned parameter is ``raw_step`` (LSQ's step before its sign is dropped);
    :attr:`step_size` is the positive ``Sy`` the forward pass uses. Checkpoints that call the
    parameter ``step`` (older versions) still load.
    """

    def __init__(
        self,
        bits: int = 8,
        *,
        qmax: int | None = None,
        pool: int = 1,
        init_step: float | None = None,
        power_of_two: bool = False,
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.power_of_two = bool(power_of_two)
        self.qmax = int(qmax) if qmax is not None else 2 ** (self.bits - 1) - 1
        if self.qmax < 1:
            raise ConfigError(f"qmax must be >= 1, got {qmax!r}")
        if not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"pool must be a positive integer, got {pool!r}")
        self.pool = pool
        self.raw_step = nn.Parameter(torch.tensor(float(init_step or 1.0)))
        self.register_buffer("initialized", torch.tensor(init_step is not None))

    @property
    def step_size(self) -> torch.Tensor:
        """The positive step ``Sy`` (the sign of the raw parameter is ignored)."""
        return self._effective(self.raw_step.detach().abs().clamp(min=1e-6))

    def _effective(self, step: torch.Tensor) -> torch.Tensor:
        if not self.power_of_two:
            return step
        exact = torch.exp2(torch.round(torch.log2(step.detach())))
        return exact + (step - step.detach())  # value exactly 2^k, gradient to the learned step

    @property
    def clip(self) -> float:
        """Largest representable activation ``Sy * qmax`` (a clipped ReLU's ceiling)."""
        return float(self.step_size) * self.qmax

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer activations before and after the pooling (equal without pooling)."""
        with torch.no_grad():
            pre = torch.clamp(torch.floor(x / self.step_size + 0.5), 0, self.qmax)
            post = torch.floor(avg_pool(pre, self.pool) + 0.5) if self.pool > 1 else pre
        return pre, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # LSQ's start 2 mean|x| / sqrt(qmax), decided on the device (no sync)
            with torch.no_grad():
                start = (2 * x.detach().abs().mean().double() / math.sqrt(self.qmax)).clamp(1e-4)
                self.raw_step.copy_(torch.where(self.initialized, self.raw_step, start))
                self.initialized.fill_(True)
        scale = 1.0 / math.sqrt(max(x[0].numel(), 1) * self.qmax)
        step = self._effective(_LSQGrad.apply(self.raw_step.abs().clamp(min=1e-6), scale))
        codes = torch.clamp(round_half_up(x / step), 0, self.qmax)
        if self.pool > 1:
            codes = round_half_up(avg_pool(codes, self.pool))
        return codes * step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints of older versions name the learned step ``step``
        old, new = prefix + "step", prefix + "raw_step"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        pow2 = ", power_of_two=True" if self.power_of_two else ""
        return f"bits={self.bits}, qmax={self.qmax}, pool={self.pool}{pow2}"


def fold_bn_into(
    layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded (weight, bias) of ``bn(layer(x))`` in inference mode."""
    with torch.no_grad():
        gain = (
            bn.weight / torch.sqrt(bn.running_var + bn.eps)
            if bn.affine
            else 1 / torch.sqrt(bn.running_var + bn.eps)
        )
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        weight = layer.weight * gain.view(-1, *([1] * (layer.weight.ndim - 1)))
        return weight.clone(), (shift + (bias - bn.running_mean) * gain).clone()
