"""Exceptions raised by spikequant. The CLI maps every one of them to exit code 2."""


class SpikequantError(Exception):
    """Base class of every error spikequant raises on purpose (bad input, not a bug)."""


class ConfigError(SpikequantError, ValueError):
    """A recipe, option or argument is invalid."""


class ShapeError(SpikequantError, ValueError):
    """A tensor has the wrong shape, e.g. not time-first ``[T, B, ...]``."""


class StateShapeError(ShapeError):
    """A stateful neuron received input whose shape differs from its stored state.

    Call :func:`spikequant.reset_state` on the model between sequences of different shape.
    """


class NonFiniteError(SpikequantError, ValueError):
    """An input or parameter contains NaN or infinity."""


class DatasetNotFoundError(SpikequantError, FileNotFoundError):
    """A dataset directory is missing or does not have the expected layout."""


class CheckpointError(SpikequantError):
    """A checkpoint is missing, corrupt, or does not match the model."""


class ConversionError(SpikequantError):
    """A network cannot be converted (e.g. it contains max pooling)."""


class RunFolderError(SpikequantError):
    """A run folder cannot be used: not writable, already holding a run, or locked by another
    process."""


class MissingDependencyError(SpikequantError, ImportError):
    """A feature needs an optional package that is not installed (see ``spikequant._optional``)."""


class StaleStateError(SpikequantError, RuntimeError):
    """A neuron still holds the state of a batch whose autograd graph was already backpropagated.

    Call :func:`spikequant.reset_state` on the model before each batch (or
    :func:`spikequant.detach_state` to carry the state on without its graph).
    """


class ProgramError(SpikequantError):
    """An integer program cannot be built from a model, or a program file is corrupt or from an
    unsupported format version."""
