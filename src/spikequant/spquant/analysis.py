r"""Inference-only clipping analysis of the membrane (SpQuant-SNN section 4.1).

For a layer with post-spike membrane ``u~_1`` after the first step and spikes ``o_t``::

    Gamma_c = {neurons with u~_1 < c}
    r_s(t)  = card(Gamma_c AND o_t = 1) / card(Gamma_c)

i.e. the fraction of the initially "silent" neurons (below the clipping boundary ``c``) that still
fire at step ``t``. Small ``r_s`` means clipping the membrane at ``c`` changes few spikes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..neurons import reset_state
from .neuron import QLIF


def clipping_fire_rate(u_first: torch.Tensor, spikes_t: torch.Tensor, clip: float) -> float:
    """``r_s(t)`` for one step; 0 when no neuron is below ``clip`` (an empty silent set)."""
    if u_first.shape != spikes_t.shape:
        raise ConfigError(
            f"u_1 {tuple(u_first.shape)} and o_t {tuple(spikes_t.shape)} differ in shape"
        )
    silent = u_first < clip
    count = int(silent.sum())
    if count == 0:
        return 0.0
    return float((silent & (spikes_t != 0)).sum()) / count


def _qlif_layers(model: nn.Module) -> dict[str, QLIF]:
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QLIF)}
    if not layers:
        raise ConfigError("the model has no QLIF (qlif) layers to analyse")
    return layers


@torch.no_grad()
def clipping_sweep(
    model: nn.Module, inputs: torch.Tensor, clips: Iterable[float] = (-5, -4, -3, -2, -1)
) -> dict:
    """Run ``model`` once (as it is, normally the FP-membrane network) recording every QLIF layer,
    and return ``{layer: {c: {"silent_fraction", "r_s": mean over t = 2..T, "u_min"}}}``."""
    layers = _qlif_layers(model)
    was_training = model.training
    model.eval()
    for layer in layers.values():
        layer.record_trace = True
    try:
        reset_state(model)
        model(inputs)
    finally:
        for layer in layers.values():
            layer.record_trace = False
        model.train(was_training)
    report: dict = {}
    for name, layer in layers.items():
        stored, spikes = layer.trace["stored"], layer.trace["spikes"]
        u_first = stored[0]
        per_clip = {}
        for c in clips:
            rates = [
                clipping_fire_rate(u_first, spikes[t], float(c)) for t in range(1, spikes.shape[0])
            ]
            per_clip[float(c)] = {
                "silent_fraction": float((u_first < c).float().mean()),
                "r_s": sum(rates) / len(rates) if rates else 0.0,
            }
        report[name] = {"u_min": float(stored.min()), "clips": per_clip}
        layer.trace = None
    return report


def set_membrane_clip(model: nn.Module, clip: float | None) -> None:
    """Clip every FP-membrane QLIF's stored potential at ``clip`` (``None`` removes the clip)."""
    for layer in _qlif_layers(model).values():
        layer.clip = None if clip is None else float(clip)


def set_binary_membrane(model: nn.Module, enabled: bool = True) -> None:
    """Prune the -1 level of every quantized membrane (the binary-membrane ablation)."""
    for layer in _qlif_layers(model).values():
        layer.binary_membrane = bool(enabled)


__all__ = ["clipping_fire_rate", "clipping_sweep", "set_binary_membrane", "set_membrane_clip"]
