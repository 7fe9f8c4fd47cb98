r"""Reference interpreter of a Ca-LIF program (int64 PyTorch; the C++ engine must equal it).

Input: 8-bit pixels ``pix``, ISI-coded inside the program with budget ``K`` over ``T`` steps
(:class:`spikequant.coding.IsiEncoder`, in integers): up to step ``t`` a pixel has sent
``min(ceil((t + 1) K pix / (255 T)) - 1, floor(K pix / 255))`` spikes (0 for ``pix = 0``).

Per step ``t = 1..T``, layer by layer (zero delay), with ``x`` the previous layer's spikes::

    acc = conv(x, L) or L x                                     (int64)
    V  += A acc + B                                             (per channel)
    s   = +1 if V >= TH and c < qmax;  -1 if V <= -TH and c > 0 (gate);  else 0
    V  -= s TH;  c += s
    pooled layer: P += sum-pool_p(s);  s' = +1 if P >= p^2, -1 if P <= -p^2;  P -= s' p^2

and the read-out adds ``A acc`` to the integer logits. After step ``T`` the rounding phase runs
once through the layers: a layer integrates the previous layer's net rounding spikes ``r``
(``V += A acc(r)``, no bias) and fires until quiescent, which nets

    k = floor((2 V + TH) / (2 TH))          (tie "up": V = +TH/2 fires)
    k = ceil((2 V - TH) / (2 TH))           (tie "down")

clamped to ``[-c, qmax - c]`` (the gate and the saturation; the pool neuron has neither), then
``V -= k TH``, ``c += k``; the read-out adds ``A acc(r) + B``. ``c`` is the layer's integer
activation (the quantized ANN's code), ``logit_unit`` times the logits the float read-out
``c Vth + V``. Units and the lowering: :mod:`spikequant.runtime.lower_calif`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProgramError, ShapeError
from .format import Program


@dataclass
class CaLIFTrace:
    """Per spiking layer: the Ca-LIF spikes of every step (``[T]`` lists of ``[B, C, H, W]``
    int8), the pool neuron's spikes (empty without pooling), the counts after the rounding phase
    (before and after pooling) and the total number of spikes per sample (steps: every nonzero
    spike; rounding phase: ``|k|``), as the float network counts them."""

    spikes: list[list[torch.Tensor]]
    pool_spikes: list[list[torch.Tensor]]
    counts: list[torch.Tensor] = field(default_factory=list)
    pool_counts: list[torch.Tensor] = field(default_factory=list)
    total_spikes: torch.Tensor | None = None


def isi_spikes(pix: torch.Tensor, t: int, timesteps: int, budget: int) -> torch.Tensor:
    """Input spikes (0/1, int64) of 1-indexed step ``t`` of integer pixels ``pix``."""

    def upto(step: int) -> torch.Tensor:
        total = (budget * pix) // 255
        sent = ((step + 1) * budget * pix - 1) // (255 * timesteps)
        return torch.where(pix > 0, torch.minimum(sent, total), torch.zeros_like(pix))

    return upto(t) - upto(t - 1)


def round_count(v, threshold, tie: str):
    """Net rounding spikes of membranes ``v`` (ungated): ``|v - k TH| <= TH/2`` after them
    (integer arrays; ``//`` is floor division)."""
    if tie == "up":
        return (2 * v + threshold) // (2 * threshold)
    return -((threshold - 2 * v) // (2 * threshold))


def _sum_pool(x: np.ndarray, p: int) -> np.ndarray:
    b, c, h, w = x.shape
    hp, wp = h // p, w // p
    return x[:, :, : hp * p, : wp * p].reshape(b, c, hp, p, wp, p).sum((3, 5))


class CaLIFInterpreter:
    """Runs a Ca-LIF :class:`Program` on int64 tensors (whole windows: the rounding phase follows
    step ``T``)."""

    def __init__(self, program: Program) -> None:
        if program.kind != "calif":
            raise ProgramError("CaLIFInterpreter runs Ca-LIF programs")
        self.program = program
        t = program.tensors
        n = len(program.layers)
        self.weights = [torch.from_numpy(program.weight(i).astype(np.int64)) for i in range(n)]
        self.float_weights = [w.double() for w in self.weights]
        self.largest_level = [int(w.abs().max()) if w.numel() else 0 for w in self.weights]
        self.multipliers = [torch.from_numpy(t[f"layers.{i}.multiplier"]) for i in range(n)]
        self.offsets = [torch.from_numpy(t[f"layers.{i}.offset"]) for i in range(n)]
        self.thresholds = [
            torch.from_numpy(t[f"layers.{i}.threshold"]) if layer["neuron"] else None
            for i, layer in enumerate(program.layers)
        ]

    def _accumulate(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer, weight = self.program.layers[i], self.weights[i]
        fan_in = weight[0].numel() if len(weight) else 0
        largest = int(x.abs().max()) if x.numel() else 0
        if fan_in * self.largest_level[i] * largest < 2**53:
            # every partial sum is an integer below 2^53: float64 computes it exactly
            if layer["op"] == "linear":
                acc = x.reshape(x.shape[0], -1).double() @ self.float_weights[i].t()
            else:
                acc = F.conv2d(
                    x.double(),
                    self.float_weights[i],
                    stride=layer["stride"],
                    padding=layer["padding"],
                )
            return acc.to(torch.int64)
        if layer["op"] == "linear":
            return x.reshape(x.shape[0], -1) @ weight.t()
        k, pad, stride = layer["kernel"], layer["padding"], layer["stride"]
        h = (x.shape[2] + 2 * pad - k) // stride + 1
        w = (x.shape[3] + 2 * pad - k) // stride + 1
        cols = F.unfold(x.double(), k, padding=pad, stride=stride).to(torch.int64)
        acc = weight.reshape(weight.shape[0], -1) @ cols
        return acc.reshape(x.shape[0], weight.shape[0], h, w)

    def run(self, pixels, trace: bool = False):
        """``pixels[B, *shape]`` (integers 0..255) -> integer logits ``[B, K]`` (int64; times
        ``logit_unit``: the float network's logits), and a :class:`CaLIFTrace` with ``trace``.

        Membranes and logits are Python integers (numpy object arrays): a program whose exact
        membranes need more than 64 bits (``"membrane_bits": 128``) runs as exactly as one that
        does not; the logits leave as ``floor(logits / 2^logit_shift)``."""
        header = self.program.header
        spec = header["input"]
        pix = torch.as_tensor(np.asarray(pixels)).to(torch.int64)
        shape = tuple(spec["shape"])
        if pix.ndim != len(shape) + 1 or tuple(pix.shape[1:]) != shape:
            raise ShapeError(
                f"Ca-LIF program input is [B, {', '.join(map(str, shape))}] pixels, got "
                f"{tuple(pix.shape)}"
            )
        if pix.numel() and (pix.min() < 0 or pix.max() > 255):
            raise ProgramError("Ca-LIF program input must be 8-bit pixels 0..255")
        steps, budget = self.program.timesteps, int(spec["budget"])
        layers = self.program.layers
        batch = pix.shape[0]
        record = CaLIFTrace([[] for _ in layers], [[] for _ in layers]) if trace else None
        state = []
        for i, layer in enumerate(layers):
            if layer["neuron"] is None:
                state.append(None)
                continue
            zeros = _ints(np.zeros((batch, *self._pre_pool_shape(i)), np.int64))
            pooled = _ints(np.zeros((batch, *layer["out_shape"]), np.int64))
            state.append({"v": zeros, "c": zeros.copy(), "pv": pooled, "pc": pooled.copy()})
        logits = _ints(np.zeros((batch, header["num_classes"]), np.int64))
        spikes_total = np.zeros(batch, np.int64)
        for t in range(1, steps + 1):
            x = isi_spikes(pix, t, steps, budget)
            for i, layer in enumerate(layers):
                acc = _ints(self._accumulate(i, x).numpy())
                m = self._channel(self.multipliers[i], acc.ndim)
                if layer["neuron"] is None:
                    logits = logits + m * acc
                    break
                b = self._channel(self.offsets[i], acc.ndim)
                s = self._fire(i, state[i], m * acc + b)
                spikes_total += self._count(state[i], record, i)
                x = torch.from_numpy(s.astype(np.int64))
        x = None
        for i, layer in enumerate(layers):
            if x is None:  # the input sends no rounding spikes
                acc = _ints(np.zeros((batch, *self._pre_pool_shape(i)), np.int64))
            else:
                acc = _ints(self._accumulate(i, x).numpy())
            m = self._channel(self.multipliers[i], acc.ndim)
            if layer["neuron"] is None:
                logits = logits + m * acc + self._channel(self.offsets[i], acc.ndim)
                break
            x = torch.from_numpy(self._round(i, state[i], m * acc).astype(np.int64))
            spikes_total += state[i].pop("round_spikes")
        shift = int(layers[-1].get("logit_shift", 0))
        logits = torch.from_numpy((logits >> shift).astype(np.int64))
        if record is None:
            return logits
        record.counts = [torch.from_numpy(s["c"].astype(np.int64)) for s in state if s]
        record.pool_counts = [
            torch.from_numpy(s["pc"].astype(np.int64))
            for s, layer in zip(state, layers, strict=True)
            if s is not None and layer["neuron"]["pool"] > 1
        ]
        record.total_spikes = torch.from_numpy(spikes_total)
        return logits, record

    @staticmethod
    def _channel(values: torch.Tensor, ndim: int) -> np.ndarray:
        return _ints(values.numpy()).reshape(1, -1, *([1] * (ndim - 2)))

    def _pre_pool_shape(self, i: int) -> list[int]:
        layer = self.program.layers[i]
        neuron = layer["neuron"]
        if neuron is None or neuron["pool"] == 1:
            return list(layer["out_shape"])
        p = neuron["pool"]
        k, pad, stride = layer["kernel"], layer["padding"], layer["stride"]
        _, h, w = layer["in_shape"]
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        if (ho // p, wo // p) != tuple(layer["out_shape"][1:]):
            raise ProgramError(f"layer {i}: pooled shape does not fit the header")
        return [layer["out_shape"][0], ho, wo]

    def _fire(self, i: int, st: dict, current: np.ndarray) -> np.ndarray:
        neuron = self.program.layers[i]["neuron"]
        th = self._channel(self.thresholds[i], current.ndim)
        v, c = st["v"] + current, st["c"]
        pos = v >= th
        if neuron["qmax"] is not None:
            pos &= c < neuron["qmax"]
        neg = v <= -th
        if neuron["gate"]:
            neg &= c > 0
        s = _ints(pos.astype(np.int64) - neg.astype(np.int64))
        st["v"], st["c"], st["s"] = v - s * th, c + s, s
        p = neuron["pool"]
        if p == 1:
            st["ps"] = None
            return s
        pv = st["pv"] + _sum_pool(s, p)
        ps = _ints((pv >= p * p).astype(np.int64) - (pv <= -p * p).astype(np.int64))
        st["pv"], st["pc"], st["ps"] = pv - ps * (p * p), st["pc"] + ps, ps
        return ps

    def _count(self, st: dict, record: CaLIFTrace | None, i: int) -> np.ndarray:
        s, ps = st["s"], st["ps"]
        total = (s != 0).reshape(len(s), -1).sum(1)
        if ps is not None:
            total = total + (ps != 0).reshape(len(ps), -1).sum(1)
        if record is not None:
            record.spikes[i].append(torch.from_numpy(s.astype(np.int8)))
            if ps is not None:
                record.pool_spikes[i].append(torch.from_numpy(ps.astype(np.int8)))
        return total

    def _round(self, i: int, st: dict, current: np.ndarray) -> np.ndarray:
        neuron = self.program.layers[i]["neuron"]
        th = self._channel(self.thresholds[i], current.ndim)
        v, c = st["v"] + current, st["c"]
        k = round_count(v, th, neuron["tie"])
        if neuron["qmax"] is not None:
            k = np.minimum(k, neuron["qmax"] - c)
        if neuron["gate"]:
            k = np.maximum(k, -c)
        st["v"], st["c"] = v - k * th, c + k
        total = np.abs(k).reshape(len(k), -1).sum(1).astype(np.int64)
        p = neuron["pool"]
        if p > 1:
            pv = st["pv"] + _sum_pool(k, p)
            kp = round_count(pv, p * p, neuron["tie"])
            st["pv"], st["pc"] = pv - kp * (p * p), st["pc"] + kp
            total = total + np.abs(kp).reshape(len(kp), -1).sum(1).astype(np.int64)
            k = kp
        st["round_spikes"] = total
        return k


def _ints(array: np.ndarray) -> np.ndarray:
    """``array`` as Python integers (exact at any width)."""
    return np.asarray(array).astype(object)


__all__ = ["CaLIFInterpreter", "CaLIFTrace", "isi_spikes", "round_count"]
