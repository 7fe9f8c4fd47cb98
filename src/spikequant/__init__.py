"""spikequant: low-latency, low-precision spiking neural networks on PyTorch.

Time is always the leading dimension: tensors are ``[T, B, ...]``.
"""

# The built-in plugins register their models and neurons on import (the registry imports none).
from . import models  # noqa: E402,F401,I001  (snn families)
from .convert import models as _conversion_anns  # noqa: E402,F401  (ann families)
from .convert import calif as _calif, msat as _msat  # noqa: E402,F401  (ca_lif, msat neurons)
from .detection import model as _detectors  # noqa: E402,F401  (detection family)
from .errors import (
    CheckpointError,
    ConfigError,
    ConversionError,
    DatasetNotFoundError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
    SpikequantError,
    StaleStateError,
    StateShapeError,
)
from .neurons import (
    IF,
    LIF,
    ATIFnu,
    ATIFu,
    SpikingNeuron,
    Subtract,
    Zero,
    detach_state,
    reset_state,
)
from .registry import (
    create_model,
    create_neuron,
    list_models,
    list_neurons,
    register_model,
    register_neuron,
)
from .spquant import neuron as _qlif  # noqa: E402,F401  (qlif)
from .surrogate import Atan, Rectangle, Sigmoid, Surrogate, Triangle, create_surrogate
from .temporal import models as _ttfs_models  # noqa: E402,F401  (ttfs families)

__version__ = "0.1.0"

__all__ = [
    "ATIFnu",
    "ATIFu",
    "Atan",
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "DatasetNotFoundError",
    "IF",
    "LIF",
    "MissingDependencyError",
    "NonFiniteError",
    "Rectangle",
    "ShapeError",
    "Sigmoid",
    "SpikequantError",
    "SpikingNeuron",
    "StaleStateError",
    "StateShapeError",
    "Subtract",
    "Surrogate",
    "Triangle",
    "Zero",
    "create_model",
    "create_neuron",
    "create_surrogate",
    "detach_state",
    "list_models",
    "list_neurons",
    "register_model",
    "register_neuron",
    "reset_state",
]
