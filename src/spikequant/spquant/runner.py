r"""Runner of ``kind: spquant`` recipes: Quant-SNN / SpQuant-SNN training on the shared trainer.

A recipe is a direct-training recipe (``data``, ``model``, ``optim``, ``schedule``, ``train``;
see :mod:`spikequant.train.recipe`) plus a ``spquant`` section::

    spquant:
      weight_bits: 2            # 32 = float weights; <= 4 power-of-two, else uniform
      weight_alpha: 4.0         # power-of-two clip scale (on standardised weights)
      weight_standardize: true
      weight_std: 4.0           # standard deviation the weights are standardised to (PoT only)
      weight_rescale: false     # map PoT weights back to the layer's float scale (s / gain)
      weight_exclude: []        # conv/linear module names kept in float
      learn_threshold: false    # per-layer V_th with the separate gradient path
      spatial_prune: 0.0        # fraction of locations per sample/step without input current
      channel_gates: false      # membrane-guided channel masks between spiking conv layers
      gate_threshold: 0.47
      gate_init_bias: 0.0       # bias of the gates' 1x1 conv at initialisation
      gate_init_std: 0.01       # std of the gates' 1x1 conv weights at initialisation
      gate_keep: 0.31           # target keep ratio of the gates (density penalty)
      gate_penalty: 1.0
      gate_penalty_mode: cap    # cap: penalise only > keep open; target: hold keep both ways
      tet_lambda: 0.05          # TET loss (1-lam) CE_t + lam MSE(O, 1)
      init_from: null           # checkpoint of an earlier stage to start from (non-strict)

The model's neuron should be ``qlif`` (``neuron_kwargs: {membrane: ternary}`` or ``fp``). The
result adds to the direct runner's metrics: measured sparsity, effective SynOps (masked outputs
skipped, :func:`spikequant.cost.measure_activity`), memory, and the binary-membrane ablation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..checkpoint import load_checkpoint
from ..data import get_dataset
from ..errors import CheckpointError, ConfigError
from ..io import write_json
from ..neurons import reset_state
from ..registry import create_model
from ..train.recipe import validate_recipe
from ..train.runner import _subset, build_augment, log_to_stderr, model_spec
from ..train.trainer import Trainer, evaluate, resolve_checkpoint
from .analysis import set_binary_membrane
from .loss import tet_loss
from .pruning import (
    GATE_PENALTY_MODES,
    attach_channel_gates,
    configure_pruning,
    gate_density_penalty,
    qlif_layers,
)
from .weights import quantize_weights

DEFAULTS: dict[str, Any] = {
    "weight_bits": 32,
    "weight_alpha": 4.0,
    "weight_standardize": True,
    "weight_std": 4.0,
    "weight_rescale": False,
    "weight_exclude": [],
    "learn_threshold": False,
    "spatial_prune": 0.0,
    "channel_gates": False,
    "gate_threshold": 0.47,
    "gate_init_bias": 0.0,
    "gate_init_std": 0.01,
    "gate_keep": 0.31,
    "gate_penalty": 1.0,
    "gate_penalty_mode": "cap",
    "tet_lambda": 0.05,
    "init_from": None,
}


def validate_spquant(section: dict | None) -> dict:
    section = dict(section or {})
    unknown = set(section) - set(DEFAULTS)
    if unknown:
        raise ConfigError(
            f"recipe: unknown key(s) {', '.join('spquant.' + k for k in sorted(unknown))}; "
            f"allowed: {', '.join(sorted(DEFAULTS))}"
        )
    out = {**copy.deepcopy(DEFAULTS), **section}
    bits = out["weight_bits"]
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 2:
        raise ConfigError(f"spquant.weight_bits must be an integer >= 2, got {bits!r}")
    if not isinstance(out["spatial_prune"], (int, float)) or not 0 <= out["spatial_prune"] < 1:
        raise ConfigError(f"spquant.spatial_prune must be in [0, 1), got {out['spatial_prune']!r}")
    if not 0 <= float(out["tet_lambda"]) <= 1:
        raise ConfigError(f"spquant.tet_lambda must be in [0, 1], got {out['tet_lambda']!r}")
    if not 0 < float(out["gate_keep"]) <= 1:
        raise ConfigError(f"spquant.gate_keep must be in (0, 1], got {out['gate_keep']!r}")
    if out["gate_penalty_mode"] not in GATE_PENALTY_MODES:
        raise ConfigError(
            f"spquant.gate_penalty_mode must be one of {', '.join(GATE_PENALTY_MODES)}, "
            f"got {out['gate_penalty_mode']!r}"
        )
    return out


def split_recipe(cfg: dict) -> tuple[dict, dict]:
    """``(validated direct-training part, validated spquant section)``."""
    cfg = copy.deepcopy(cfg)
    spq = validate_spquant(cfg.pop("spquant", None))
    cfg["kind"] = "direct"
    base = validate_recipe(cfg)
    base["kind"] = "spquant"
    if spq["learn_threshold"]:
        base["model"]["neuron_kwargs"]["learn_threshold"] = True
    return base, spq


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
    try:
        model = create_model(spec["name"], **spec["kwargs"])
    except TypeError as exc:
        raise ConfigError(f"model {spec['name']!r}: {exc}") from None
    apply_spquant(model, spq, example_input(spec))
    return model


def load_spquant_model(path: str | Path):
    """Rebuild a model saved by this runner (weights quantizers and gates included)."""
    state, meta = load_checkpoint(resolve_checkpoint(path))
    if "spquant" not in meta or "model" not in meta:
        raise CheckpointError(f"{path} was not written by the spquant runner")
    model = build_spquant_model(meta["model"], validate_spquant(meta["spquant"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit the rebuilt model: {exc}") from None
    return model, meta


class SpQuantTrainer(Trainer):
    """The shared trainer with the TET loss and the gate density penalty."""

    def __init__(self, *args, spq: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spq = spq

    def _loss(self, x, y):
        lam_mix = y_b = None
        if self.augment is not None:
            result = self.augment(x, y, self.generator)
            if len(result) == 4:
                x, y, y_b, lam_mix = result
            else:
                x, y = result
        reset_state(self.model)
        out = self.model(x)
        tet_lam = float(self.spq["tet_lambda"])
        loss = tet_loss(out, y, tet_lam)
        if lam_mix is not None:
            loss = lam_mix * loss + (1 - lam_mix) * tet_loss(out, y_b, tet_lam)
        if self.spq["channel_gates"] and self.spq["gate_penalty"]:
            loss = loss + float(self.spq["gate_penalty"]) * gate_density_penalty(
                self.model, float(self.spq["gate_keep"]), self.spq["gate_penalty_mode"]
            )
        return loss, out.mean(0), y


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


def _init_from(model: torch.nn.Module, path: str) -> list[str]:
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


def _refuse_other_recipe(out_dir: Path, recipe: dict) -> None:
    """Resuming continues the run in ``out_dir`` only if it was made by the same recipe: a
    finished run of another recipe (say fewer epochs) would otherwise be silently reported."""
    if not (out_dir / "latest.json").is_file():
        return
    _, meta = load_checkpoint(resolve_checkpoint(out_dir))
    stored = json.loads(json.dumps(meta.get("recipe")))
    if isinstance(stored, dict) and isinstance(stored.get("spquant"), dict):
        # An option added after the run was made reads as its default (the old behaviour).
        stored["spquant"] = {**copy.deepcopy(DEFAULTS), **stored["spquant"]}
    if stored != json.loads(json.dumps(recipe)):
        raise CheckpointError(
            f"{out_dir} holds a run of a different recipe; use a fresh output folder"
        )


def evaluate_spquant(
    model: torch.nn.Module,
    test_set: Dataset,
    spq: dict,
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


def _time_first(module, args):
    """Event datasets yield ``[B, T, C, H, W]`` batches; the models take time first."""
    x = args[0]
    if x.ndim == 5:
        return (x.transpose(0, 1),) + tuple(args[1:])
    return None


def accept_batch_first_frames(model: torch.nn.Module, dataset: Dataset) -> None:
    """Register the transpose when the dataset's samples are frame sequences ``[T, C, H, W]``."""
    x, _ = dataset[0]
    if x.ndim == 4:
        model.register_forward_pre_hook(_time_first)


def run_recipe(
    cfg: dict,
    *,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train and evaluate a ``kind: spquant`` recipe; see the module docstring."""
    cfg, spq = split_recipe(cfg)
    out_dir = Path(out_dir)
    data = cfg["data"]
    train_set = _subset(get_dataset(data["name"], "train", root=data["root"]), data["train_subset"])
    test_set = _subset(get_dataset(data["name"], "test", root=data["root"]), data["test_subset"])
    torch.manual_seed(cfg["seed"])
    spec = model_spec(cfg)
    model = build_spquant_model(spec, spq)
    accept_batch_first_frames(model, test_set)
    initialised = None
    if spq["init_from"]:
        initialised = _init_from(model, spq["init_from"])
    meta = {
        "kind": "spquant",
        "model": spec,
        "spquant": spq,
        "recipe": {**cfg, "spquant": spq},
        "dataset": data["name"],
    }

    trainer = SpQuantTrainer(
        model,
        cfg,
        train_set,
        test_set,
        out_dir=out_dir,
        meta=meta,
        augment=build_augment(cfg),
        progress=progress,
        log=log_to_stderr if progress else None,
        spq=spq,
    )
    resumed_from = None
    if resume:
        _refuse_other_recipe(out_dir, meta["recipe"])
    if resume and trainer.resume():
        resumed_from = trainer.epoch
        log_to_stderr(f"resumed {out_dir} after epoch {trainer.epoch}")
    trainer.fit(stop_after=stop_after)
    if stop_after is not None and trainer.epoch < trainer.epochs:
        return {"stopped_after_epoch": trainer.epoch}
    final = evaluate_spquant(model, test_set, spq, batch_size=data["eval_batch_size"])
    result = {
        "name": cfg["name"],
        "kind": "spquant",
        "dataset": data["name"],
        "model": spec,
        "spquant": spq,
        "epochs": trainer.epoch,
        "resumed_from_epoch": resumed_from,
        "initialised_missing_keys": initialised,
        "train_seconds": sum(r["seconds"] for r in trainer.history),
        **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in final.items()},
        **learned_scales(model),
        "history": trainer.history,
        "checkpoint": str(out_dir / "latest.json"),
    }
    write_json(out_dir / "metrics.json", result)
    return result
