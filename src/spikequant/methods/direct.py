"""Direct training: surrogate-gradient BPTT of a spiking network, ``L = CE(mean_t o_t, y)``
(the ATIF paper's procedure; the defaults of :class:`~spikequant.train.trainer.TrainingHooks`).

Each epoch record also holds ``v_th``: the mean trained threshold ``mean(V_th)`` of every neuron
layer whose threshold is learned (ATIF-u), keyed by module path, so that reports can show how the
thresholds evolve. A handful of scalars per epoch: nothing is recorded for fixed thresholds."""

from __future__ import annotations

from .base import Method, register_method


def learned_thresholds(model) -> dict[str, float]:
    """``{module path: mean V_th}`` of the layers whose threshold is a trained parameter."""
    found = {}
    for name, module in model.named_modules():
        threshold = getattr(module, "threshold", None)
        if getattr(threshold, "requires_grad", False) and hasattr(module, "threshold_value"):
            found[name] = float(module.threshold_value().detach().float().mean())
    return found


@register_method
class Direct(Method):
    """``method: {name: direct}``: surrogate-gradient BPTT of the recipe's spiking model, no
    options."""

    name = "direct"

    def on_epoch_end(self, trainer, record: dict) -> None:
        thresholds = learned_thresholds(trainer.model)
        if thresholds:
            record["v_th"] = thresholds
