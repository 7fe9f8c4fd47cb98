r"""``rsnn_kws``: a single recurrent layer of spiking neurons (Cramer et al., 2022), the recurrent
baseline the ATIF paper compares with on Google Speech Commands.

The input ``x[B, C, F, D]`` is read as ``F`` frames of ``C * D`` features (for the ``gsc`` MFCCs
``[1, 49, 10]``: 49 frames of 10 coefficients). Each frame is presented for ``timesteps``
consecutive steps (``F * timesteps`` steps in all; ``timesteps = 1`` is one frame per step, as
Cramer et al.). At step ``k`` (frame ``f``, sub-step ``t``)::

    I(k) = W_in x_f + W_rec s(k - 1)          (s(0) = 0)
    s(k), state = neuron.step(I(k), state)     (LIF by default: 128 neurons)
    y(k) = W_out s(k) + b_out

The output is ``out[t] = (1/F) sum_f y(f, t)``, ``[timesteps, B, classes]``, so the library's rate
decoding ``argmax mean_t out[t]`` is the mean read-out over all ``F * timesteps`` steps. A
time-first input ``[T, B, C, F, D]`` gives frame ``f`` of ``x_t`` at sub-step ``t``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError
from ..registry import register_model
from .common import SpikingModel, check_positive_int, pair


class RecurrentSNN(SpikingModel):
    """A recurrent spiking network over a sequence of frames (registered model; see
    :mod:`spikequant.models`)."""

    def __init__(
        self,
        *,
        num_classes: int = 35,
        in_channels: int = 1,
        input_size=(49, 10),
        timesteps: int = 1,
        neuron: str = "lif",
        neuron_kwargs: dict | None = None,
        hidden: int = 128,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        hidden = check_positive_int("hidden", hidden)
        self.frames, depth = pair(input_size)
        self.input = nn.Linear(in_channels * depth, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.cell = self.make_neuron(hidden)
        self.readout = nn.Linear(hidden, num_classes)
        self.hidden = hidden

    def body(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch, channels, frames, depth = x.shape
        if frames != self.frames:
            raise ShapeError(f"rsnn_kws was built for {self.frames} frames, got {frames}")
        # [T, B, C, F, D] -> [F, T, B, C * D]: frame-major, each frame held for T sub-steps
        currents = self.input(x.permute(3, 0, 1, 2, 4).reshape(frames, steps, batch, -1))
        if not self.make_neuron.spiking:
            return self._ann_body(currents)
        spikes = currents.new_zeros(batch, self.hidden)
        state = self.cell.initial_state(spikes)
        outputs = []
        for f in range(frames):
            for t in range(steps):
                spikes, state = self.cell.step(currents[f, t] + self.recurrent(spikes), state)
                outputs.append(spikes)
        per_step = self.readout(torch.stack(outputs)).view(frames, steps, batch, -1)
        return per_step.mean(0)

    def _ann_body(self, currents: torch.Tensor) -> torch.Tensor:
        """The ``relu`` baseline: a ReLU recurrent net with the same wiring (T = 1)."""
        h = currents.new_zeros(currents.shape[2], self.hidden)
        outputs = []
        for f in range(currents.shape[0]):
            h = torch.relu(currents[f, 0] + self.recurrent(h))
            outputs.append(h)
        return self.readout(torch.stack(outputs)).mean(0, keepdim=True)

    def ann_form(self) -> nn.Module:
        """Refused: a recurrent network has no feed-forward ANN form; recurrent ANNs (LSTM,
        bi-LSTM) convert with :func:`spikequant.convert.recurrent.convert_lstm`."""
        from ..errors import ConversionError

        raise ConversionError(
            f"{type(self).__name__} is recurrent and has no feed-forward ANN form; convert an "
            "LSTM with spikequant.convert.recurrent.convert_lstm instead"
        )


@register_model(name="rsnn_kws")
def rsnn_kws(**kwargs) -> RecurrentSNN:
    """Recurrent SNN for keywords: one recurrent layer of 128 LIF neurons, linear read-out."""
    return RecurrentSNN(**kwargs)
