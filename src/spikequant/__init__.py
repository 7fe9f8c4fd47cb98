"""spikequant: low-latency, low-precision spiking neural networks on PyTorch.

Time is always the leading dimension: tensors are ``[T, B, ...]``.
"""

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
from .surrogate import Atan, Rectangle, Sigmoid, Surrogate, Triangle, create_surrogate

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
