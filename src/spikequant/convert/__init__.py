"""ANN-to-SNN conversion: torch.fx converter (validate, calibrate, replace, finalize) with the
``rate`` (IF + threshold balancing), ``msat`` (multi-stage adaptive threshold) and ``calif``
(QAT network -> calcium-gated bipolar LIF, exact) recipes. Importing registers the small ANNs
``ann_mlp``, ``ann_lenet`` and ``ann_cnn``."""

from . import models  # noqa: F401  (registers the conversion ANNs)
from .calif import CaLIF, CaPool, EventLIF, isi_encode, isi_spike_counts, pixels_from_unit
from .graph import calibrate, prepare, trace, validate
from .msat import MSAT, PRESETS, msat_hyperparameters, resting_threshold
from .network import METHODS, SpikingNetwork, convert, sin_statistics

__all__ = [
    "CaLIF",
    "CaPool",
    "EventLIF",
    "METHODS",
    "MSAT",
    "PRESETS",
    "SpikingNetwork",
    "calibrate",
    "convert",
    "isi_encode",
    "isi_spike_counts",
    "msat_hyperparameters",
    "pixels_from_unit",
    "prepare",
    "resting_threshold",
    "sin_statistics",
    "trace",
    "validate",
]
