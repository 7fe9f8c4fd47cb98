"""Direct training: surrogate-gradient BPTT of a spiking network, ``L = CE(mean_t o_t, y)``
(the ATIF paper's procedure; the defaults of :class:`~spikequant.train.trainer.TrainingHooks`)."""

from __future__ import annotations

from .base import Method, register_method


@register_method
class Direct(Method):
    """``method: {name: direct}``: surrogate-gradient BPTT of the recipe's spiking model, no
    options."""
    name = "direct"
