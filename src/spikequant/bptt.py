r"""Checkpointed BPTT: training memory that stays nearly flat as the number of timesteps T grows.

Plain BPTT through a multi-step network keeps every layer's activations for all T steps, so memory
grows linearly in T. :func:`checkpointed_forward` splits the sequence into chunks of ``chunk``
steps and runs the network chunk by chunk under :func:`torch.utils.checkpoint.checkpoint`,
carrying the neuron states from one chunk into the next as explicit inputs. Only the chunk inputs,
outputs and the states at chunk boundaries are stored; each chunk's activations are recomputed
during backward. The gradients are exactly those of plain BPTT (the recurrence is identical); the
cost is one extra forward pass (about +30-40 % time of a training step).

Memory: ``O(T/chunk * state + chunk * activations)`` instead of ``O(T * activations)``.

Requirements and caveats:

* the model must be causal in time and output ``[T, B, ...]`` (put any mean over time, e.g.
  :class:`~spikequant.layers.MeanOverTime`, after this call, in the loss);
* BatchNorm in training mode normalises with the statistics of each chunk (``chunk * B`` samples)
  instead of all ``T * B``: a different (still valid) normalisation, so gradients then differ from
  plain BPTT. The running statistics are updated once per chunk, not again during recomputation;
* dropout masks are reproduced during recomputation (the RNG state is preserved).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError, ShapeError
from .neurons.base import SpikingNeuron


def _neurons(model: nn.Module) -> list[SpikingNeuron]:
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def _flatten_state(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, tuple):
        return [t for s in state for t in _flatten_state(s)]
    return []


def _unflatten_state(template, tensors: list[torch.Tensor]):
    """Rebuild ``template``'s structure, taking its tensors from the front of ``tensors``."""
    if isinstance(template, torch.Tensor):
        return tensors.pop(0)
    if isinstance(template, tuple):
        values = [_unflatten_state(s, tensors) for s in template]
        return type(template)(*values) if hasattr(template, "_fields") else tuple(values)
    return template


@contextlib.contextmanager
def _frozen_batchnorm_stats(model: nn.Module):
    """During recomputation, keep BatchNorm running statistics from being updated twice."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def checkpointed_forward(model: nn.Module, x_seq: torch.Tensor, chunk: int) -> torch.Tensor:
    """Run ``model`` over ``x_seq[T, B, ...]`` in checkpointed chunks of ``chunk`` timesteps.

    Returns the same ``[T, B, ...]`` output as ``model(x_seq)`` (neuron states are continued from
    whatever they hold, as in a plain call); backward recomputes one chunk at a time. With
    gradients disabled or ``chunk >= T`` this is a plain call.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer number of timesteps, got {chunk!r}")
    if x_seq.ndim < 2:
        raise ShapeError(f"expected time-first input [T, B, ...], got {tuple(x_seq.shape)}")
    steps = x_seq.shape[0]
    if chunk >= steps or not torch.is_grad_enabled():
        return model(x_seq)
    neurons = _neurons(model)
    outputs = []
    for start in range(0, steps, chunk):
        x_chunk = x_seq[start : start + chunk]
        templates = [n.state for n in neurons]
        if all(t is None for t in templates):
            state_tensors: list[torch.Tensor] = []
        else:
            if any(t is None for t in templates):
                raise ConfigError("some neurons hold state and others do not; call reset_state")
            state_tensors = [t for s in templates for t in _flatten_state(s)]
        calls = {"count": 0}

        def run_chunk(x, *states, _templates=templates, _calls=calls):
            recompute = _calls["count"] > 0
            _calls["count"] += 1
            kept = [n.state for n in neurons] if recompute else None
            pending = list(states)
            for n, template in zip(neurons, _templates, strict=False):
                n.state = None if template is None else _unflatten_state(template, pending)
            with _frozen_batchnorm_stats(model) if recompute else contextlib.nullcontext():
                out = model(x)
            new_states = [t for n in neurons for t in _flatten_state(n.state)]
            if recompute:
                for n, state in zip(neurons, kept, strict=False):
                    n.state = state
            return (out, *new_states)

        result = checkpoint(run_chunk, x_chunk, *state_tensors, use_reentrant=False)
        outputs.append(result[0])
        # continue from the checkpoint's outputs so the gradient flows across chunk boundaries
        pending = list(result[1:])
        for n in neurons:
            n.state = _unflatten_state(n.state, pending)
    return torch.cat(outputs, dim=0)


class CheckpointedBPTT(nn.Module):
    """Wrap a multi-step network so that its forward uses :func:`checkpointed_forward`."""

    def __init__(self, model: nn.Module, chunk: int) -> None:
        super().__init__()
        if not isinstance(chunk, int) or chunk < 1:
            raise ConfigError(f"chunk must be a positive integer, got {chunk!r}")
        self.model = model
        self.chunk = chunk

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return checkpointed_forward(self.model, x_seq, self.chunk)


__all__ = ["CheckpointedBPTT", "checkpointed_forward"]
