"""Runner of ``kind: direct`` recipes: build data and model from the recipe, train, evaluate.

``run_recipe(cfg, out_dir=..., resume=False, progress=True)`` returns the final test metrics
(accuracy, latency T, theta, spikes per neuron, per-layer firing rates, SynOps) and writes the
checkpoints plus ``metrics.json`` under ``out_dir``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..data import dataset_info, get_dataset
from ..errors import ConfigError
from ..io import write_json
from ..registry import create_model
from .recipe import validate_recipe
from .trainer import Trainer, accept_frame_sequences


def _subset(dataset: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(dataset):
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    return Subset(dataset, range(n))


def model_spec(cfg: dict) -> dict[str, Any]:
    """``{"name", "kwargs"}`` of the model, with data-dependent defaults filled from the dataset."""
    info = dataset_info(cfg["data"]["name"])
    kwargs = dict(cfg["model"]["kwargs"])
    kwargs.setdefault("num_classes", info.num_classes)
    shape = tuple(info.input_shape)
    if len(shape) >= 3:
        kwargs.setdefault("in_channels", shape[0])
        kwargs.setdefault("input_size", list(shape[1:3]) if shape[1] != shape[2] else shape[1])
    kwargs.update(
        timesteps=cfg["model"]["timesteps"],
        neuron=cfg["model"]["neuron"],
        neuron_kwargs=dict(cfg["model"]["neuron_kwargs"]),
    )
    return {"name": cfg["model"]["name"], "kwargs": kwargs}


def build_model(cfg: dict):
    spec = model_spec(cfg)
    try:
        return create_model(spec["name"], **spec["kwargs"]), spec
    except TypeError as exc:  # an unknown model keyword
        raise ConfigError(f"model {spec['name']!r}: {exc}") from None


def build_augment(cfg: dict):
    """The recipe's augmentation as ``fn(x, y, generator)``, from :mod:`spikequant.data.augment`."""
    data = cfg["data"]
    aug = data["augment"]
    wanted = aug["crop_padding"] or aug["random_resize"] or aug["flip"] or data["mixup_alpha"] > 0
    if not wanted:
        return None
    try:
        from ..data import augment as augment_module
    except ImportError:
        raise ConfigError(
            "this recipe asks for augmentation/mixup but spikequant.data.augment is not available"
        ) from None
    return augment_module.build_batch_augment(
        crop_padding=aug["crop_padding"],
        random_resize=aug["random_resize"],
        flip=aug["flip"],
        mixup_alpha=data["mixup_alpha"],
    )


def run_recipe(
    cfg: dict,
    *,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train and evaluate a direct-training recipe; see the module docstring."""
    cfg = validate_recipe(cfg)
    out_dir = Path(out_dir)
    data = cfg["data"]
    train_set = _subset(get_dataset(data["name"], "train", root=data["root"]), data["train_subset"])
    test_set = _subset(get_dataset(data["name"], "test", root=data["root"]), data["test_subset"])
    torch.manual_seed(cfg["seed"])  # the initial weights depend on the seed only
    model, spec = build_model(cfg)
    accept_frame_sequences(model, train_set)
    augment = build_augment(cfg)
    meta = {"kind": "direct", "model": spec, "recipe": cfg, "dataset": data["name"]}

    trainer = Trainer(
        model,
        cfg,
        train_set,
        test_set,
        out_dir=out_dir,
        meta=meta,
        augment=augment,
        progress=progress,
        log=log_to_stderr if progress else None,
    )
    resumed_from = None
    if resume and trainer.resume():
        resumed_from = trainer.epoch
        log_to_stderr(f"resumed {out_dir} after epoch {trainer.epoch}")
    elif resume:
        log_to_stderr(f"no checkpoint in {out_dir} yet: starting from epoch 1")
    final = trainer.fit(stop_after=stop_after)
    if "stopped_after_epoch" in final:
        return final
    result = {
        "name": cfg["name"],
        "kind": "direct",
        "dataset": data["name"],
        "model": spec,
        "epochs": trainer.epoch,
        "resumed_from_epoch": resumed_from,
        "train_seconds": sum(r["seconds"] for r in trainer.history),
        **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in final.items()},
        "history": trainer.history,
        "checkpoint": str(out_dir / "latest.json"),
    }
    write_json(out_dir / "metrics.json", result)
    return result


def log_to_stderr(msg: str) -> None:
    """The runners' log line: stderr, so that ``--json`` output on stdout stays parseable."""
    print(msg, file=sys.stderr, flush=True)
