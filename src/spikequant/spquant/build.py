"""Building, loading and evaluating SpQuant-SNN models (the training method itself is
:mod:`spikequant.methods.spquant`, whose options are the ``method:`` section of a recipe).

The model's neuron should be ``qlif`` (``neuron_kwargs: {membrane: ternary}`` or ``fp``).
Evaluation adds to the shared metrics: measured sparsity, effective SynOps (masked outputs
skipped, :func:`spikequant.cost.measure_activity`), memory, and the binary-membrane ablation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, ConfigError
from ..train.trainer import evaluate, resolve_checkpoint
from .analysis import set_binary_membrane
from .pruning import attach_channel_gates, configure_pruning, qlif_layers
from .weights import quantize_weights


def example_input(spec: dict) -> torch.Tensor:
    kw = spec["kwargs"]
    size = kw.get("input_size", 28)
    h, w = (size, size) if isinstance(size, int) else size
    return torch.zeros(2, kw.get("in_channels", 1), h, w)


def apply_spquant(model: torch.nn.Module, spq: dict, example: torch.Tensor) -> dict:
    """Quantize weights, set pruning and attach channel gates in place; returns what was done."""
    done: dict[str, Any] = {}
    done["quantized_layers"] = quantize_weights(
        model,
        int(spq["weight_bits"]),
        alpha=float(spq["weight_alpha"]),
        standardize=bool(spq["weight_standardize"]),
        weight_std=float(spq["weight_std"]),
        rescale=bool(spq["weight_rescale"]),
        exclude=list(spq["weight_exclude"]),
    )
    if (spq["spatial_prune"] or spq["channel_gates"]) and not qlif_layers(model):
        raise ConfigError("pruning needs a model built with neuron: qlif")
    if spq["spatial_prune"]:
        configure_pruning(model, spatial=float(spq["spatial_prune"]))
    if spq["channel_gates"]:
        done["gates"] = attach_channel_gates(
            model,
            example,
            threshold=float(spq["gate_threshold"]),
            init_bias=float(spq["gate_init_bias"]),
            init_std=float(spq["gate_init_std"]),
        )
    for _, layer in qlif_layers(model):
        layer.reset_sparsity_stats()
    return done


def build_spquant_model(spec: dict, spq: dict) -> torch.nn.Module:
    from ..train.build import build_model

    model = build_model(spec)
    apply_spquant(model, spq, example_input(spec))
    return model


def load_spquant_model(path: str | Path):
    """Rebuild a SpQuant run's model (weight quantizers and gates included) with its weights."""
    from ..pipeline import load_run_model, run_method_name

    model, meta = load_run_model(path)
    if run_method_name(meta) != "spquant":
        raise CheckpointError(f"{path} is not a run of method spquant")
    return model, meta


def float_to_parametrized_keys(state: dict, model: torch.nn.Module) -> dict:
    """Rename ``<layer>.weight`` of a float checkpoint to ``<layer>.parametrizations.weight.
    original`` where ``model`` quantizes that weight, so a Quant-SNN can start from the FP SNN."""
    own = set(model.state_dict())
    renamed = {}
    for key, value in state.items():
        if key not in own and key.endswith(".weight"):
            target = key[: -len("weight")] + "parametrizations.weight.original"
            if target in own:
                key = target
        renamed[key] = value
    return renamed


def init_from(model: torch.nn.Module, path: str) -> list[str]:
    """Load an earlier stage's weights (a run or checkpoint folder) non-strictly; returns the
    keys the checkpoint did not have (e.g. the gates of a SpQuant-SNN started from a Quant-SNN)."""
    state, _ = load_checkpoint(resolve_checkpoint(path))
    state = float_to_parametrized_keys(state, model)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"init_from {path}: unexpected weights {result.unexpected_keys[:5]}")
    return list(result.missing_keys)


def learned_scales(model: torch.nn.Module) -> dict:
    """Per-layer ``V_th`` and power-of-two weight scale ``alpha`` after training (to see whether
    the learnable ones moved)."""
    from torch.nn.utils import parametrize

    thresholds = {name: layer.threshold.detach().tolist() for name, layer in qlif_layers(model)}
    alphas = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                quantizer = getattr(p, "quantizer", p)
                if hasattr(quantizer, "log2_alpha"):
                    alphas[name] = float(quantizer.alpha.detach())
    return {"thresholds": thresholds, "weight_alpha": alphas}


def evaluate_spquant(
    model: torch.nn.Module,
    test_set: Dataset,
    *,
    batch_size: int = 256,
    ablation: bool = True,
) -> dict:
    """Accuracy + spike statistics (shared evaluate) + measured sparsity, effective SynOps and
    memory; with ``ablation``, the accuracy with the -1 membrane level pruned (no fine-tuning)."""
    from ..cost import measure_activity, model_cost

    result = evaluate(model, test_set, batch_size=batch_size)
    activity = measure_activity(model, test_set, batch_size=batch_size)
    cost = model_cost(model, example_input_from(test_set), sparsity=activity)
    result.update(
        {
            "effective_synops": activity["effective_synops"],
            "spike_synops": activity["spike_synops"],
            "first_layer_macs": activity["first_layer_macs"],
            "spatial_sparsity": activity["spatial_sparsity"],
            "channel_sparsity": activity["channel_sparsity"],
            "layer_sparsity": activity["layers"],
            "memory_mb": cost["memory_mb"],
            "dense_flops_per_step": cost["dense_macs_per_step"],
            "sparse_flops_per_step": cost["sparse_macs_per_step"],
        }
    )
    layers = qlif_layers(model)
    if ablation and layers and layers[0][1].levels is not None:
        set_binary_membrane(model, True)
        try:
            result["binary_membrane_accuracy"] = evaluate(model, test_set, batch_size=batch_size)[
                "accuracy"
            ]
        finally:
            set_binary_membrane(model, False)
    return result


def example_input_from(dataset: Dataset) -> torch.Tensor:
    """A batch-1 static input of the dataset's sample shape (event samples ``[T, C, H, W]`` give
    ``[1, C, H, W]``: the model repeats it over its own T, which is all a cost profile needs)."""
    x, _ = dataset[0]
    if x.ndim == 4:
        x = x[0]
    return torch.zeros(1, *x.shape)
