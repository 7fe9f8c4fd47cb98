r"""Reference interpreter of an integer program (PyTorch int64; the C++ runtime must equal it).

Per time step and layer (equations in :mod:`spikequant.runtime.lower`)::

    x    = sum-pool_p(input)                      (integer counts / codes)
    acc  = conv(x, W) or W x                      (integer; exact in float64 below 2^53)
    I    = floor((M * acc + B) / 2^S)
    pre  = n * 2^(F+1-j) + 2 I
    drop = the spatial_drop locations with the lowest channel sum of pre (stable: lower index first)
    pre  = n * 2^(F+1-j) + 2 I * keep
    s    = pre >= TH,   n' = 0 if s else clamp(sign(pre) ((|pre| + 2^F - 1) >> (F+1)), lo, hi)

and the read-out adds ``M * acc + B`` to the integer logits of every step.

A Ca-LIF program (``program.kind == "calif"``) runs in :class:`~spikequant.runtime.calif.
CaLIFInterpreter`; :class:`ReferenceInterpreter` hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProgramError, ShapeError
from .format import Program


@dataclass
class Trace:
    """Per layer and step (lists ``[T]`` of ``[B, ...]`` int64): spikes, stored membrane indices,
    and the current codes ``I`` after spatial pruning."""

    spikes: list[list[torch.Tensor]]
    membranes: list[list[torch.Tensor]]
    currents: list[list[torch.Tensor]]


def _accumulate(layer: dict, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p = layer["pool"]
    if x.ndim == 4 and p > 1:
        b, c, h, w = x.shape
        hp, wp = h // p, w // p
        x = x[:, :, : hp * p, : wp * p].reshape(b, c, hp, p, wp, p).sum((3, 5))
    if layer["op"] == "conv":
        acc = F.conv2d(
            x.double(), weight.double(), stride=layer["stride"], padding=layer["padding"]
        )
    else:
        acc = x.reshape(x.shape[0], -1).double() @ weight.double().t()
    return acc.round().to(torch.int64)


def _channel_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(1, -1, *([1] * (ndim - 2)))


def qlif_integer_step(
    pre: torch.Tensor, threshold: torch.Tensor, frac: int, lo: int, hi: int, binary: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and stored indices from the pre-fire membrane codes (units ``2^-(F+1)``)."""
    fired = pre >= threshold
    magnitude = (pre.abs() + (1 << frac) - 1) >> (frac + 1)
    index = (torch.sign(pre) * magnitude).clamp(lo, hi)
    index = torch.where(fired, torch.zeros_like(index), index)
    if binary:
        index = index.clamp(min=0)
    return fired.to(torch.int64), index


class ReferenceInterpreter:
    """Runs a :class:`Program` on int64 tensors; ``run`` for whole windows, ``step`` streams."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.calif = None
        if program.kind == "calif":
            from .calif import CaLIFInterpreter

            self.calif = CaLIFInterpreter(program)
            self.state = None
            return
        self.weights = [
            torch.from_numpy(program.weight(i).astype(np.int64)) for i in range(len(program.layers))
        ]
        t = program.tensors
        self.multipliers = [
            torch.from_numpy(t[f"layers.{i}.multiplier"].astype(np.int64))
            for i in range(len(program.layers))
        ]
        self.offsets = [
            torch.from_numpy(t[f"layers.{i}.offset"].astype(np.int64))
            for i in range(len(program.layers))
        ]
        self.thresholds = [
            torch.from_numpy(t[f"layers.{i}.threshold"].astype(np.int64))
            if layer["neuron"]
            else None
            for i, layer in enumerate(program.layers)
        ]
        self.state: list[torch.Tensor] | None = None

    def reset(self) -> None:
        self.state = None

    def step(self, codes: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
        """One time step of ``codes[B, C, H, W]`` (int); returns this step's logits ``[B, K]``."""
        if self.calif is not None:
            raise ProgramError(
                "a Ca-LIF program has no streaming mode: it runs whole windows (its rounding "
                "phase follows step T)"
            )
        codes = torch.as_tensor(codes).to(torch.int64)
        shape = tuple(self.program.header["input"]["shape"])
        if codes.ndim != 4 or tuple(codes.shape[1:]) != shape:
            raise ShapeError(
                f"program input is [B, {', '.join(map(str, shape))}], got {tuple(codes.shape)}"
            )
        batch = codes.shape[0]
        if self.state is None or self.state[0].shape[0] != batch:
            self.state = [
                torch.zeros(batch, *layer["out_shape"], dtype=torch.int64)
                for layer in self.program.layers
            ]
        x = codes
        for i, layer in enumerate(self.program.layers):
            acc = _accumulate(layer, self.weights[i], x)
            m = _channel_view(self.multipliers[i], acc.ndim)
            b = _channel_view(self.offsets[i], acc.ndim)
            if layer["neuron"] is None:
                return m * acc + b
            frac, shift = layer["frac_bits"], layer["shift"]
            neuron = layer["neuron"]
            current = torch.div(m * acc + b, 1 << shift, rounding_mode="floor")
            leak = self.state[i] * (1 << (frac + 1 - neuron["leak_shift"]))
            drop = neuron["spatial_drop"]
            if drop > 0:
                pre = leak + 2 * current
                score = pre.sum(1).reshape(batch, -1)
                order = torch.sort(score, dim=1, stable=True).indices[:, :drop]
                keep = torch.ones_like(score)
                keep.scatter_(1, order, 0)
                current = current * keep.view(batch, 1, *acc.shape[2:])
            pre = leak + 2 * current
            th = _channel_view(self.thresholds[i], acc.ndim)
            spikes, index = qlif_integer_step(
                pre, th, frac, *neuron["levels"], neuron["binary_membrane"]
            )
            self.state[i] = index
            if trace is not None:
                trace.spikes[i].append(spikes)
                trace.membranes[i].append(index)
                trace.currents[i].append(current)
            x = spikes
        raise AssertionError("unreachable: the program ends with a read-out")

    def run(self, codes: torch.Tensor, trace: bool = False):
        """``codes[B, C, H, W]`` (static, repeated T times) or ``[T, B, C, H, W]`` -> integer logits
        summed over time ``[B, K]`` (and a :class:`Trace` with ``trace=True``). A Ca-LIF
        program takes pixels ``[B, C, H, W]`` (0..255) and traces a ``CaLIFTrace``."""
        if self.calif is not None:
            return self.calif.run(codes, trace=trace)
        codes = torch.as_tensor(codes)
        steps = self.program.timesteps
        frames = codes.unbind(0) if codes.ndim == 5 else [codes] * steps
        record = None
        if trace:
            n = len(self.program.layers)
            record = Trace([[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)])
        self.reset()
        total = None
        for frame in frames:
            out = self.step(frame, record)
            total = out if total is None else total + out
        self.reset()
        return (total, record) if trace else total


__all__ = ["ReferenceInterpreter", "Trace", "qlif_integer_step"]
