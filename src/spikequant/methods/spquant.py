r"""SpQuant-SNN: quantization-aware training of a spiking network with low-bit weights, a
ternary membrane and spatial/channel pruning (see :mod:`spikequant.spquant`).

Loss: TET, ``L = (1 - lam) mean_t CE(o_t, y) + lam MSE(o, 1)``, plus with channel gates the
density penalty ``rho * P(keep)``. The model is the recipe's spiking model with its weights
quantized, pruning set and gates attached; ``init_from`` starts it from an earlier stage's run
(a float FP-SNN checkpoint loads into the quantized layers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..options import Options, option
from ..spquant.pruning import GATE_PENALTY_MODES, gate_density_penalty
from .base import Method, register_method


@dataclasses.dataclass(frozen=True)
class SpQuantOptions(Options):
    """Options of ``method: {name: spquant}``: weight quantization, pruning, channel gates,
    learned threshold, TET weight and ``init_from``."""

    weight_bits: int = option(32, low=2)  # 32 = float weights; <= 4 power-of-two, else uniform
    weight_alpha: float = 4.0  # power-of-two clip scale (on standardised weights)
    weight_standardize: bool = True
    weight_std: float = 4.0  # std the weights are standardised to (power-of-two only)
    weight_rescale: bool = False  # map power-of-two weights back to the layer's float scale
    weight_exclude: list[str] = option(factory=list)
    learn_threshold: bool = False  # per-layer V_th with the separate gradient path
    # fraction of locations per sample/step without input current
    spatial_prune: float = option(0.0, low=0, below=1)
    channel_gates: bool = False  # membrane-guided channel masks between spiking conv layers
    gate_threshold: float = 0.47
    gate_init_bias: float = 0.0
    gate_init_std: float = 0.01
    gate_keep: float = option(0.31, above=0, high=1)  # target keep ratio (density penalty)
    gate_penalty: float = 1.0
    # cap: penalise only more than gate_keep open; target: both ways
    gate_penalty_mode: str = option("cap", choices=GATE_PENALTY_MODES)
    tet_lambda: float = option(0.05, low=0, high=1)
    init_from: str | None = None  # run folder of an earlier stage to start from


@register_method
class SpQuant(Method):
    """``method: {name: spquant}``: quantization-aware training with pruning (module docstring)."""

    name = "spquant"
    Options = SpQuantOptions
    default_neuron = "qlif"

    @classmethod
    def check_recipe(cls, cfg: dict) -> None:
        super().check_recipe(cfg)
        if cfg["method"]["learn_threshold"]:
            cfg["model"]["neuron_kwargs"]["learn_threshold"] = True

    def build_model(self) -> nn.Module:
        from ..spquant.build import build_spquant_model, init_from

        model = build_spquant_model(self.model_spec(), dataclasses.asdict(self.options))
        self.initialised_missing_keys = None
        if self.options.init_from:
            self.initialised_missing_keys = init_from(model, self.options.init_from)
        return model

    @classmethod
    def rebuild(cls, meta: dict) -> nn.Module:
        from ..spquant.build import build_spquant_model

        options = meta.get("method_options") or meta.get("spquant") or {}
        options = {k: v for k, v in options.items() if k != "name"}
        known = {f.name for f in dataclasses.fields(SpQuantOptions)}
        merged = dataclasses.asdict(SpQuantOptions(**{k: options[k] for k in known & set(options)}))
        return build_spquant_model(meta["model"], merged)

    def output_loss(self, trainer, out, y):
        from ..spquant.loss import tet_loss

        loss = tet_loss(out, y, float(self.options.tet_lambda))
        if self.options.channel_gates and self.options.gate_penalty:
            loss = loss + float(self.options.gate_penalty) * gate_density_penalty(
                trainer.model, float(self.options.gate_keep), self.options.gate_penalty_mode
            )
        return loss

    def final_metrics(self, trainer, final: dict) -> dict[str, Any]:
        from ..spquant.build import evaluate_spquant, learned_scales

        batch_size = self.cfg["data"]["eval_batch_size"]
        extra = evaluate_spquant(trainer.model, trainer.test_set, batch_size=batch_size)
        extra = {f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in extra.items()}
        return {
            **extra,
            "spquant": dataclasses.asdict(self.options),
            "initialised_missing_keys": getattr(self, "initialised_missing_keys", None),
            **learned_scales(trainer.model),
        }


def spquant_options(**given: Any) -> dict[str, Any]:
    """Validated SpQuant options with their defaults filled in (a recipe's ``method`` section
    without ``name``), as :func:`spikequant.spquant.build.build_spquant_model` takes them."""
    return dataclasses.asdict(SpQuantOptions(**given))
