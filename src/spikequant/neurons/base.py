"""Stateful multi-step neuron base, the sequence runner and the state helpers.

Time is always the first dimension: a neuron maps ``x[T, B, ...]`` to ``out[T, B, ...]``.
A neuron keeps its state between calls (so long sequences can be fed in chunks); call
:func:`reset_state` between independent sequences. Feeding a different shape without a reset
raises :class:`StateShapeError` instead of silently starting again from zero, and a state whose
autograd graph was already backpropagated (no reset between training batches) raises
:class:`StaleStateError` instead of torch's "backward through the graph a second time".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..devices import model_device
from ..errors import ConfigError, ShapeError, StaleStateError, StateShapeError
from ..finite import require_finite
from ..kernels import BACKENDS

State = Any  # a NamedTuple of tensors (and ints), specific to each neuron


def run_sequence(
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    x_seq: torch.Tensor,
    state: State,
) -> tuple[torch.Tensor, State]:
    """Fold ``step`` over the leading time axis: ``out[t], state = step(x[t], state)``."""
    outputs = []
    for x in x_seq.unbind(0):
        out, state = step(x, state)
        outputs.append(out)
    return torch.stack(outputs), state


def _map_state(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple):
        values = [_map_state(s, fn) for s in state]
        return type(state)(*values) if hasattr(state, "_fields") else tuple(values)
    return state


def _state_shape(state: State) -> torch.Size | None:
    if isinstance(state, torch.Tensor):
        return state.shape
    if isinstance(state, tuple):
        for s in state:
            shape = _state_shape(s)
            if shape is not None:
                return shape
    return None


def _state_tensors(state: State):
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, tuple):
        for s in state:
            yield from _state_tensors(s)


# How many autograd nodes behind a stored state are inspected: the last step's spike function or
# fused kernel is among the first 11 for every built-in neuron (IF/LIF/ATIF 1-3, QLIF 11).
_PROBED_NODES = 16


def _graph_already_backpropagated(state: State) -> bool:
    """Whether the autograd graph that produced ``state`` was already backpropagated without
    ``retain_graph``, so that a backward through this state would fail.

    The sign: a custom ``autograd.Function`` node (the spike functions, the fused kernels) whose
    saved tensors were freed. Only their raw handles are touched: unpacking saved tensors would
    run saved-tensor hooks, e.g. recompute a checkpointed chunk.
    """
    todo = [t.grad_fn for t in _state_tensors(state) if t.grad_fn is not None]
    seen: set = set()
    while todo and len(seen) < _PROBED_NODES:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(type(node), "_raw_saved_tensors"):
            try:
                node._raw_saved_tensors  # noqa: B018  (raises once backward has freed them)
            except RuntimeError as exc:
                if "freed" in str(exc):
                    return True
        todo.extend(fn for fn, _ in node.next_functions)
    return False


class SpikingNeuron(nn.Module):
    """Base class of every stateful spiking layer (time-first ``[T, B, ...]``).

    Subclasses implement :meth:`initial_state` and :meth:`step` (usually a call into a pure step
    function with the module's parameters); :meth:`forward` runs them over time and keeps state.

    :meth:`forward` refuses empty input (:class:`ShapeError`) and non-finite parameters
    (:class:`NonFiniteError` naming the layer). NaN *input* is not checked here: that would read
    every activation a second time; the trainer checks every batch, loss and gradient instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: State | None = None

    def initial_state(self, x: torch.Tensor) -> State:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def run(self, x_seq: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Process a whole sequence from ``state``; fused backends override this."""
        return run_sequence(self.step, x_seq, state)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.ndim < 2:
            raise ShapeError(
                f"{type(self).__name__} expects time-first input [T, B, ...], got shape "
                f"{tuple(x_seq.shape)}"
            )
        if x_seq.shape[0] == 0 or x_seq.shape[1] == 0 or x_seq.numel() == 0:
            raise ShapeError(
                f"{type(self).__name__} received an empty input of shape {tuple(x_seq.shape)} "
                "(needs T >= 1 steps of B >= 1 samples)"
            )
        if not x_seq.is_floating_point():
            raise ShapeError(f"{type(self).__name__} takes floating-point input, got {x_seq.dtype}")
        check_finite_parameters(self)
        if x_seq.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(
            x_seq.device.type
        ):
            # under mixed precision membranes integrate in float32: in half precision small
            # currents would round away and spikes flip (autocast hands neurons half conv outputs)
            x_seq = x_seq.float()
        if self.state is None:
            state = self.initial_state(x_seq[0])
        else:
            state = self.state
            expected = _state_shape(state)
            if expected is not None and tuple(expected) == tuple(x_seq.shape):
                raise StateShapeError(
                    f"{type(self).__name__} holds state of one step of shape {tuple(expected)} "
                    f"and received input of that same shape, i.e. one step without the time "
                    "dimension: a spikequant neuron is multi-step and takes [T, B, ...]; pass "
                    "x.unsqueeze(0) for a single step, or use step mode: state = "
                    "neuron.initial_state(x), then out, state = neuron.step(x, state)"
                )
            if expected is not None and tuple(expected) != tuple(x_seq.shape[1:]):
                raise StateShapeError(
                    f"{type(self).__name__} holds state of shape {tuple(expected)} but received "
                    f"steps of shape {tuple(x_seq.shape[1:])}; call spikequant.reset_state(model) "
                    "between sequences of different shape"
                )
            if torch.is_grad_enabled() and _graph_already_backpropagated(state):
                raise StaleStateError(
                    f"{type(self).__name__} still holds the state of a previous batch whose graph "
                    "was already backpropagated (the next backward would go through the graph a "
                    "second time): call spikequant.reset_state(model) before each batch, or "
                    "spikequant.detach_state(model) to carry the state on without its graph"
                )
        out, state = self.run(x_seq, state)
        self.state = state
        return out

    def reset_state(self) -> None:
        self.state = None

    def detach_state(self) -> None:
        if self.state is not None:
            self.state = _map_state(self.state, torch.Tensor.detach)


def _tracing() -> bool:
    """True while torch.compile / torch.jit / ONNX export trace the forward: a data-dependent
    check cannot be traced (and the traced graph is checked when it runs eagerly)."""
    import sys

    onnx = sys.modules.get("torch.onnx")
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or (onnx is not None and onnx.is_in_onnx_export())
    )


def check_finite_parameters(neuron: nn.Module) -> None:
    """Raise :class:`NonFiniteError` naming ``neuron`` and the parameter when one of its own
    parameters or buffers (thresholds, levels, time constants) holds NaN or infinity: a NaN
    threshold silently stops every spike (``h - NaN >= 0`` is false), so the layer refuses it.

    One fused reduction per forward over the neuron's few parameter values, whose verdict the
    trainer reads with its own once per step (:mod:`spikequant.finite`); on the input NaN is not
    checked here (that would read every activation again): the trainer checks each batch and
    the loss.
    """
    named = [
        (n, t)
        for n, t in (*neuron.named_parameters(recurse=False), *neuron.named_buffers(recurse=False))
        if t.is_floating_point()
    ]  # calibrated thresholds (conversion neurons) are buffers
    if not named or _tracing():
        return
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(t).all() for _, t in named])

    def message(verdicts: list[bool]) -> str:
        bad = [n for (n, _), ok in zip(named, verdicts, strict=True) if not ok]
        return (
            f"{neuron.__class__.__name__} layer ({neuron.extra_repr() or 'no options'}): "
            f"parameter {', '.join(bad)} holds NaN or infinity"
        )

    require_finite(finite, message)


def _stateful_modules(model: nn.Module):
    for module in model.modules():
        if callable(getattr(module, "reset_state", None)):
            yield module


def reset_state(model: nn.Module) -> nn.Module:
    """Forget the state of every stateful module nested anywhere inside ``model``."""
    for module in _stateful_modules(model):
        module.reset_state()
    return model


def detach_state(model: nn.Module) -> nn.Module:
    """Cut the autograd history of every nested state (truncated BPTT across chunks)."""
    for module in _stateful_modules(model):
        if callable(getattr(module, "detach_state", None)):
            module.detach_state()
    return model


@torch.no_grad()
def probe_forward(model: nn.Module, example: torch.Tensor, hooks) -> None:
    """One eval-mode forward pass of ``example`` with ``hooks`` (``(module, forward_hook)`` pairs)
    registered; state, hooks and training mode are restored afterwards, whatever happens."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    model.eval()
    try:
        reset_state(model)
        model(example.to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
        reset_state(model)
        model.train(was_training)


def channel_view(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-layer (0-d) or per-channel ``[C]`` parameter against ``x[B, C, ...]``."""
    if param.ndim == 0:
        return param
    if x.ndim < 2 or x.shape[1] != param.shape[0]:
        hint = ""
        if x.ndim >= 1 and x.shape[0] == param.shape[0]:
            hint = (
                "; the channels sit at dimension 0, as if one step [B, C, ...] was given to a "
                "multi-step neuron: pass [T, B, C, ...] (x.unsqueeze(0) for one step) or use "
                "neuron.step(x, state)"
            )
        raise ShapeError(
            f"per-channel parameter of {param.shape[0]} channels does not match input of shape "
            f"{tuple(x.shape)} (channels are dimension 1 of each step){hint}"
        )
    return param.view(param.shape[0], *([1] * (x.ndim - 2)))


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def kernel_surrogate(surrogate) -> dict | str:
    """``{"surrogate_kind", "alpha"}`` of a built-in surrogate (the kernels implement exactly
    these), or why ``surrogate`` has no kernel (a user subclass may change ``grad``)."""
    from .. import surrogate as surrogates

    builtin = (surrogates.Sigmoid, surrogates.Triangle, surrogates.Atan, surrogates.Rectangle)
    if type(surrogate) not in builtin:
        return f"surrogate {surrogate!r} is not a built-in one"
    return {"surrogate_kind": surrogate.kind, "alpha": float(surrogate.alpha)}


def run_kernel(backend: str, x_seq: torch.Tensor, v: torch.Tensor, params: dict | str):
    """Run a fused kernel with a neuron's ``params`` (from its ``kernel_params``), or return None
    for the reference loop; ``params`` is a string when the neuron's configuration has no kernel
    (an error unless ``backend="auto"``)."""
    from .. import kernels

    if isinstance(params, str):
        if backend == "auto":
            return None
        raise ConfigError(f"backend={backend!r} cannot run this neuron: {params}")
    return kernels.integrate_fire(x_seq, v, backend=backend, **params)
