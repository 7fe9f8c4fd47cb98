"""Spiking neurons: pure step functions, thin stateful modules, state helpers."""

from .atif_nu import (
    ATIFnu,
    atif_nu_step,
    atif_nu_transfer,
    levels_to_step_thresholds,
    uniform_levels,
)
from .base import (
    SpikingNeuron,
    channel_view,
    detach_state,
    probe_forward,
    reset_state,
    run_sequence,
)
from .integrate_fire import (
    IF,
    LIF,
    ATIFu,
    IFParams,
    LIFParams,
    MembraneState,
    if_step,
    lif_step,
)
from .reset import Subtract, Zero, create_reset

__all__ = [
    "ATIFnu",
    "ATIFu",
    "IF",
    "IFParams",
    "LIF",
    "LIFParams",
    "MembraneState",
    "SpikingNeuron",
    "Subtract",
    "Zero",
    "atif_nu_step",
    "atif_nu_transfer",
    "channel_view",
    "create_reset",
    "detach_state",
    "if_step",
    "levels_to_step_thresholds",
    "lif_step",
    "probe_forward",
    "reset_state",
    "run_sequence",
    "uniform_levels",
]
