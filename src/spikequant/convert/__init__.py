"""ANN-to-SNN conversion: registered methods ``rate`` (IF + threshold balancing), ``msat``
(multi-stage adaptive threshold) and ``calif`` (QAT network -> calcium-gated bipolar LIF, exact),
each a recipe of four stages (prepare, calibrate, replace, finalize) over a ``torch.fx`` graph.
Importing registers the small ANNs ``ann_mlp``, ``ann_lenet`` and ``ann_cnn``."""

from . import models  # noqa: F401  (registers the conversion ANNs)
from .calif import (
    CaLIF,
    CaPool,
    EventLIF,
    calif_step,
    isi_encode,
    isi_spike_counts,
    pixels_from_unit,
)
from .graph import calibrate, prepare, trace, validate
from .methods import (
    CONVERSION_METHODS,
    CaLIFOptions,
    ConversionMethod,
    MSATOptions,
    RateOptions,
    ann_form,
    convert,
    create_method,
    list_methods,
    method_class,
    register_method,
)
from .msat import MSAT, PRESETS, msat_hyperparameters, msat_step, resting_threshold
from .network import SpikingNetwork, sin_statistics
from .qat_form import quantize_for_calif
from .saved import is_converted, load_converted, save_converted

__all__ = [
    "CONVERSION_METHODS",
    "CaLIF",
    "CaLIFOptions",
    "CaPool",
    "ConversionMethod",
    "EventLIF",
    "MSAT",
    "MSATOptions",
    "PRESETS",
    "RateOptions",
    "SpikingNetwork",
    "ann_form",
    "is_converted",
    "load_converted",
    "calibrate",
    "calif_step",
    "convert",
    "create_method",
    "isi_encode",
    "isi_spike_counts",
    "list_methods",
    "method_class",
    "msat_hyperparameters",
    "msat_step",
    "pixels_from_unit",
    "prepare",
    "quantize_for_calif",
    "register_method",
    "resting_threshold",
    "save_converted",
    "sin_statistics",
    "trace",
    "validate",
]
