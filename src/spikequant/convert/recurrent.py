r"""LSTM and bi-LSTM classifiers converted to spiking networks with MSAT neurons.

The MSAT paper (Table 5) converts a bi-LSTM for IMDB but does not say how the LSTM cell is mapped
to spikes. spikequant's mapping: every value an LSTM layer *sends* (its hidden state ``h``, to
the next layer, to its own next sequence element and to the read-out) travels as spikes of
MSAT neurons; the cell's gating (sigmoid, tanh and the products) has no integrate-and-fire
equivalent and is computed by the cell from the spike rates it has received so far.

Each sequence element ``s`` is presented for ``T`` steps (total latency ``S T`` steps). In step
``t`` of element ``s``, a layer with input rate estimate ``r(t)`` (layer 0: the analog input
``x_s`` itself, as the first layer of every converted network; deeper layers: the running mean
``(1/t) sum_{tau <= t} in(tau)`` of the spikes received in this window) computes::

    z(t)  = W r(t) + U h^_{s-1} + b                 (gates i, f, g, o; PyTorch's order)
    c(t)  = sigmoid(f) c_{s-1} + sigmoid(i) tanh(g)
    h(t)  = sigmoid(o) tanh(c(t))
    out(t) = N+(h(t)) - N-(-h(t))                   (a signed pair of MSAT neurons, scale lambda)

and at the end of the window ``c_s = c(T)`` and ``h^_s = (1/T) sum_t out(t)``, the decoded rate.
``N`` is :class:`~spikequant.convert.msat.MSAT` (``neuron="msat"``) or a soft-reset IF with
threshold ``lambda`` (``neuron="if"``, the constant-threshold baseline). Both neurons of a pair
start each window from rest, so a window carries only its own element. ``lambda`` is, per layer
and direction, the largest ``|h|`` over the calibration data (MSAT Algorithm 1: the maximum
activation). The read-out ``logits = W_o h^ + b_o`` reads the decoded rates of the last window
(forward direction: element S; backward direction: element 1). As ``T`` grows, ``h^_s`` tends
to ``h_s`` and the logits to the LSTM's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..neurons.integrate_fire import IF
from .msat import MSAT


class LSTMClassifier(nn.Module):
    """``x[B, S, F]`` (or token ids ``[B, S]`` with ``vocab_size``) -> logits ``[B, classes]``.

    ``nn.LSTM`` (``num_layers``, optionally bidirectional) and a linear read-out of the final
    hidden state of the last layer (both directions concatenated for a bi-LSTM)."""

    def __init__(
        self,
        input_size: int,
        hidden: int = 64,
        num_classes: int = 10,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding = None
        if vocab_size is not None:
            self.embedding = nn.Embedding(vocab_size, input_size, padding_idx=0)
        self.lstm = nn.LSTM(
            input_size, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
        )
        self.readout = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) if self.embedding is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(self.embed(x))
        directions = 2 if self.lstm.bidirectional else 1
        final = torch.cat(list(h_n[-directions:]), dim=-1)
        return self.readout(final)


def _layer_weights(lstm: nn.LSTM, layer: int, reverse: bool):
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    w_ih = getattr(lstm, f"weight_ih{suffix}")
    w_hh = getattr(lstm, f"weight_hh{suffix}")
    bias = torch.zeros(w_ih.shape[0], device=w_ih.device, dtype=w_ih.dtype)
    if lstm.bias:
        bias = getattr(lstm, f"bias_ih{suffix}") + getattr(lstm, f"bias_hh{suffix}")
    return w_ih.detach(), w_hh.detach(), bias.detach()


def _cell(z: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = z.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@torch.no_grad()
def lstm_layer_outputs(model: LSTMClassifier, x: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the ANN's hidden states ``[B, S, directions * hidden]`` (for calibration)."""
    outputs = []
    features = model.embed(x)
    lstm = model.lstm
    for layer in range(lstm.num_layers):
        single = nn.LSTM(
            features.shape[-1], lstm.hidden_size, bidirectional=lstm.bidirectional,
            batch_first=True, bias=lstm.bias,
        ).to(features.device)  # fmt: skip
        for name, _ in single.named_parameters():
            source = name.replace("_l0", f"_l{layer}")
            getattr(single, name).copy_(getattr(lstm, source))
        features, _ = single(features)
        outputs.append(features)
    return outputs


class SpikingLSTM(nn.Module):
    """The converted network; :meth:`forward` runs ``T`` steps per sequence element."""

    def __init__(self, model: LSTMClassifier, scales: torch.Tensor, neuron: str, **neuron_kw):
        super().__init__()
        if neuron not in ("msat", "if"):
            raise ConfigError(f"neuron must be 'msat' or 'if', got {neuron!r}")
        self.model = model.eval()
        self.register_buffer("scales", scales.detach().clone())
        self.neuron = neuron
        self.neuron_kw = dict(neuron_kw)
        self.last_spikes = 0.0
        self.last_neurons = 0

    @property
    def directions(self) -> int:
        return 2 if self.model.lstm.bidirectional else 1

    def _make_neuron(self, scale: torch.Tensor) -> nn.Module:
        if self.neuron == "msat":
            return MSAT(float(scale), **self.neuron_kw).to(scale.device)
        return IF(float(scale), scale_output=True, backend="torch").to(scale.device)

    def _run_direction(self, inputs, analog, w_ih, w_hh, bias, scale, reverse, timesteps, keep):
        """``inputs``: layer input per element ``[S, T, B, F]`` (spikes) or ``[S, B, F]``
        (analog). Returns the spike outputs ``[S, T, B, H]`` (only with ``keep``: the next layer
        needs them) and the decoded ``h^`` of the last element processed."""
        length = inputs.shape[0]
        batch = inputs.shape[-2]
        hidden = w_hh.shape[1]
        h_hat = inputs.new_zeros(batch, hidden)
        c = inputs.new_zeros(batch, hidden)
        spikes = inputs.new_zeros(length, timesteps, batch, hidden) if keep else None
        neuron = self._make_neuron(scale)
        order = range(length - 1, -1, -1) if reverse else range(length)
        for s in order:
            recurrent = h_hat @ w_hh.T + bias
            if analog:
                drive_in = (inputs[s] @ w_ih.T).expand(timesteps, -1, -1)
            else:
                projected = inputs[s] @ w_ih.T  # [T, B, 4H]; linear, so average after projecting
                steps = torch.arange(1, timesteps + 1, device=inputs.device, dtype=inputs.dtype)
                drive_in = projected.cumsum(0) / steps.view(-1, 1, 1)
            state = None
            total = torch.zeros_like(h_hat)
            fired = torch.zeros((), device=inputs.device)
            for t in range(timesteps):
                if t == 0 or not analog:  # an analog input drives the cell identically each step
                    h_t, c_t = _cell(drive_in[t] + recurrent, c)
                    pair = torch.cat([h_t, -h_t], dim=-1)
                if state is None:
                    state = neuron.initial_state(pair)
                out, state = neuron.step(pair, state)
                fired += (out != 0).sum()
                signed = out[:, :hidden] - out[:, hidden:]
                if keep:
                    spikes[s, t] = signed
                total += signed
            c = c_t
            h_hat = total / timesteps
            self.last_spikes += float(fired)
        self.last_neurons += 2 * hidden * batch
        return spikes, h_hat

    @torch.no_grad()
    def forward(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        """Logits ``[B, classes]`` after ``T = timesteps`` steps per element."""
        if timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {timesteps}")
        features = self.model.embed(x)
        if features.ndim != 3:
            raise ShapeError(f"expected a sequence [B, S, F], got {tuple(features.shape)}")
        self.last_spikes, self.last_neurons = 0.0, 0
        inputs = features.transpose(0, 1)  # [S, B, F]
        analog = True
        lstm = self.model.lstm
        finals = []
        for layer in range(lstm.num_layers):
            outs, finals = [], []
            for direction in range(self.directions):
                w_ih, w_hh, bias = _layer_weights(lstm, layer, reverse=direction == 1)
                scale = self.scales[layer, direction]
                spikes, h_hat = self._run_direction(
                    inputs,
                    analog,
                    w_ih,
                    w_hh,
                    bias,
                    scale,
                    direction == 1,
                    timesteps,
                    keep=layer + 1 < lstm.num_layers,
                )
                outs.append(spikes)
                finals.append(h_hat)
            if layer + 1 < lstm.num_layers:
                inputs = torch.cat(outs, dim=-1)  # [S, T, B, directions * H]
            analog = False
        return self.model.readout(torch.cat(finals, dim=-1))


@torch.no_grad()
def convert_lstm(
    model: LSTMClassifier, calibration: torch.Tensor, neuron: str = "msat", **neuron_kw
) -> SpikingLSTM:
    """Calibrate ``lambda`` = max ``|h|`` per layer and direction on ``calibration`` and return the
    spiking network. ``neuron_kw`` go to :class:`MSAT` (preset, det_delta, ...)."""
    if not isinstance(model, LSTMClassifier):
        raise ConfigError(f"convert_lstm expects an LSTMClassifier, got {type(model).__name__}")
    model.eval()
    hidden = model.lstm.hidden_size
    directions = 2 if model.lstm.bidirectional else 1
    scales = torch.empty(model.lstm.num_layers, directions)
    for layer, out in enumerate(lstm_layer_outputs(model, calibration)):
        for d in range(directions):
            peak = float(out[..., d * hidden : (d + 1) * hidden].abs().max())
            scales[layer, d] = max(peak, 1e-6)
    return SpikingLSTM(model, scales.to(next(model.parameters()).device), neuron, **neuron_kw)


@torch.no_grad()
def accuracy_by_timesteps(
    snn: SpikingLSTM,
    x: torch.Tensor,
    y: torch.Tensor,
    timesteps: Sequence[int],
    batch_size: int = 500,
) -> list[dict]:
    """Per T: accuracy (fraction, 0..1) and spikes per neuron per sequence element window."""
    rows = []
    for t in sorted({int(t) for t in timesteps}):
        correct, spikes, neurons = 0, 0.0, 0
        for i in range(0, len(x), batch_size):
            logits = snn(x[i : i + batch_size], t)
            correct += int((logits.argmax(1) == y[i : i + batch_size]).sum())
            spikes += snn.last_spikes
            neurons += snn.last_neurons
        rows.append(
            {
                "timesteps": t,
                "accuracy": correct / max(len(x), 1),
                "spikes_per_neuron": spikes / max(neurons, 1) / x.shape[1],
            }
        )
    return rows
