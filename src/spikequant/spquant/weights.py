r"""Apply weight quantizers to every conv/linear layer of any model (via ``parametrize``).

``quantize_weights(model, bits)`` registers on each ``weight``

* ``bits <= 4``: :class:`~spikequant.quant.pow2.PowerOfTwoQuantizer` (learnable power-of-two
  ``alpha``, init 4), preceded by per-tensor weight standardisation to a standard deviation of
  ``weight_std`` (default 4): ``4 (w - mean) / std``. So ``alpha = 4`` clips at one standard
  deviation and the ternary (2-bit) threshold ``alpha / 2`` sits at half a standard deviation,
  whatever the layer's initial scale. (Standardising to unit std, as APoT does, would put the
  ternary threshold at 2 std: every weight of PyTorch's uniform init, max 1.73 std, would be 0.)
* ``bits > 4``: :class:`~spikequant.quant.uniform.UniformQuantizer` (max-abs init, learnable step).

The original float weights stay trainable (``module.parametrizations.weight.original``); the
forward pass always sees the quantized weights. A model with quantized weights is saved and loaded
with its state dict after calling this function again with the same arguments.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..quant.pow2 import PowerOfTwoQuantizer
from ..quant.uniform import UniformQuantizer

SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class WeightStandardize(nn.Module):
    """``gain * (w - mean(w)) / (std(w) + eps)`` over the whole tensor."""

    def __init__(self, gain: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.gain = float(gain)
        self.eps = eps

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.gain * (w - w.mean()) / (w.std() + self.eps)


class RescaledPowerOfTwo(nn.Module):
    """PoT quantization in the standardised domain, mapped back to the layer's scale::

        s = std(w) (detached),  w_hat = gain (w - mean(w)) / s,  w_q = PoT(w_hat) * s / gain

    The integer levels and the power-of-two ``alpha`` live in the standardised domain; the single
    per-layer float ``s / gain`` keeps the layer's output scale (it matters for a read-out layer
    that no BN follows, whose logits would otherwise be ``gain / std`` times larger).
    """

    def __init__(
        self, bits: int, alpha: float, gain: float, learn_alpha: bool = True, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.quantizer = PowerOfTwoQuantizer(bits, alpha, learn_alpha=learn_alpha)
        self.bits = bits
        self.gain = float(gain)
        self.eps = eps

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = w.detach().std() + self.eps
        return self.quantizer(self.gain * (w - w.mean()) / scale) * scale / self.gain


def synapse_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SYNAPSES)]


def quantize_weights(
    model: nn.Module,
    bits: int,
    *,
    alpha: float = 4.0,
    standardize: bool = True,
    weight_std: float = 4.0,
    rescale: bool = False,
    learn_scale: bool = True,
    exclude: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """Quantize the weights of every conv/linear layer (except names in ``exclude``) to ``bits``.

    Returns the names of the quantized layers. ``bits >= 32`` is a no-op (full precision).
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 2:
        raise ConfigError(f"weight bits must be an integer >= 2, got {bits!r}")
    if bits >= 32:
        return []
    layers = synapse_layers(model)
    unknown = set(exclude) - {name for name, _ in layers}
    if unknown:
        raise ConfigError(f"exclude names no conv/linear layer: {sorted(unknown)}")
    done = []
    for name, module in layers:
        if name in exclude:
            continue
        if parametrize.is_parametrized(module, "weight"):
            raise ConfigError(f"layer {name!r} already has a weight parametrization")
        if bits <= 4 and standardize and rescale:
            parametrize.register_parametrization(
                module, "weight", RescaledPowerOfTwo(bits, alpha, weight_std, learn_scale)
            )
        elif bits <= 4:
            if standardize:
                standardizer = WeightStandardize(weight_std)
                parametrize.register_parametrization(module, "weight", standardizer)
            parametrize.register_parametrization(
                module, "weight", PowerOfTwoQuantizer(bits, alpha, learn_alpha=learn_scale)
            )
        else:
            parametrize.register_parametrization(
                module, "weight", UniformQuantizer(bits, module.weight, learn_step=learn_scale)
            )
        done.append(name)
    return done


def bake_weights(model: nn.Module) -> nn.Module:
    """Replace every weight parametrization by its current quantized value (for export)."""
    for _, module in synapse_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


__all__ = ["WeightStandardize", "bake_weights", "quantize_weights", "synapse_layers"]
