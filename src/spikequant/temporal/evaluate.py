"""Evaluation of TTFS networks: accuracy, spiking fraction (the paper's "sparsity"), energy.

Energy model (spec [R], matches the paper's three figures):
``E = n_weights * fraction_of_neurons_spiking * 10 pJ`` with ``n_weights`` counting bias inputs
and the fraction taken over every dense/conv neuron (output layer included), averaged over the
evaluated samples.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..devices import model_device
from .models import TTFSNet

ENERGY_PER_SPIKE_PJ = 10.0


@torch.no_grad()
def evaluate(
    model: TTFSNet,
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 250,
    z_input: torch.Tensor | None = None,
) -> dict:
    """Accuracy and spike statistics on ``(X, y)``; ``z_input`` overrides the encoder (jitter).
    Batches move to the model's device; the data may stay on the CPU."""
    starts = range(0, len(X), batch_size)
    return evaluate_batches(
        model,
        (
            (
                X[start : start + batch_size],
                y[start : start + batch_size],
                None if z_input is None else z_input[start : start + batch_size],
            )
            for start in starts
        ),
    )


@torch.no_grad()
def evaluate_batches(model: TTFSNet, batches: Iterable) -> dict:
    """:func:`evaluate` over batches ``(x, y)`` or ``(x, y, z_input)`` as they stream in (a
    dataset decoded file by file, e.g. ImageNet, never sits in memory at once)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    correct, n = 0, 0
    layer_fired: list[float] = []
    layer_sizes: list[int] = []
    for batch in batches:
        xb, yb = batch[0], batch[1]
        zb = batch[2] if len(batch) > 2 else None
        xb = xb.to(device, non_blocking=True)
        zb = None if zb is None else zb.to(device)
        yb = yb.to(device, non_blocking=True)
        outputs = model.layer_outputs(xb, zb)
        correct += int((model.predict(outputs[-1]) == yb).sum())
        n += len(yb)
        fired = [float((z < model.z_max).sum()) for z in outputs]
        if not layer_fired:
            layer_fired = [0.0] * len(outputs)
            layer_sizes = [z[0].numel() for z in outputs]
        layer_fired = [a + b for a, b in zip(layer_fired, fired, strict=False)]
    model.train(was_training)
    n = max(n, 1)
    neurons_total = sum(layer_sizes)
    neurons_fired = sum(layer_fired) / n
    fraction = neurons_fired / neurons_total if neurons_total else 0.0
    n_weights = model.n_weights()
    return {
        "accuracy": correct / n,
        "samples": n,
        "fraction_spiking": fraction,
        "layer_fraction_spiking": [
            f / n / s for f, s in zip(layer_fired, layer_sizes, strict=False)
        ],
        "neurons": neurons_total,
        "n_weights": n_weights,
        "energy_nJ": n_weights * fraction * ENERGY_PER_SPIKE_PJ * 1e-3,
    }
