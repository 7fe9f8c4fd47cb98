"""Recipe runner for ``kind: qat``: train an ANN for conversion (optionally quantization-aware).

Stages: (1) train with BN and fake-quantized weights/activations; (2) if the model is QAT with BN,
fold BN into the conv weights, rebuild the model without BN and fine-tune the folded, re-quantized
weights for ``qat.fold_epochs``; (3) evaluate and save a checkpoint that ``load_model`` rebuilds;
(4) with a ``convert`` section, convert and sweep T, writing the report to ``docs/results``.

Recipe keys: ``model.name``/``model.kwargs``, ``data.dataset``, ``train.{epochs, batch_size, lr,
momentum, weight_decay, optimizer}``, ``qat.{fold_epochs, fold_lr}``, ``convert.{methods,
timesteps, options}``, ``seed``.
"""

from __future__ import annotations

import pathlib
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint, load_model, save_checkpoint
from ..config import require
from ..data import load_arrays
from ..errors import ConfigError
from ..registry import create_model
from . import models  # noqa: F401  (registers the conversion ANNs)
from .evaluate import ann_accuracy, compare_methods, write_report


def _optimizer(params, cfg: dict, lr: float):
    name = cfg.get("optimizer", "sgd")
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"train.optimizer must be 'sgd' or 'adam', got {name!r}")


def train_epochs(
    model: nn.Module,
    x,
    y,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    cfg: dict,
    generator: torch.Generator,
    progress: bool = False,
    label: str = "train",
) -> None:
    """Cross-entropy training with a cosine learning-rate schedule."""
    if epochs <= 0:
        return
    opt = _optimizer(model.parameters(), cfg, lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if progress:
            print(f"[{label}] epoch {epoch + 1}/{epochs} loss {total / len(x):.4f}", flush=True)


def fold_model(model: nn.Sequential, name: str, kwargs: dict) -> tuple[nn.Module, dict]:
    """Rebuild ``name`` without BN and load the BN-folded weights of ``model``."""
    from ..quant.qat import fold_bn_into

    folded_kwargs = {**kwargs, "bn": False}
    target = create_model(name, **folded_kwargs)
    src_modules = dict(model.named_modules())
    state = {}
    # pair every weight layer with the BN right after it (same parent, next index)
    for mname, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            parent, _, idx = mname.rpartition(".")
            nxt = f"{parent}.{int(idx) + 1}" if parent else str(int(idx) + 1)
            bn = src_modules.get(nxt)
            if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                weight, bias = fold_bn_into(module, bn)
            else:
                weight, bias = module.weight.detach(), module.bias.detach()
            state[mname] = (weight, bias)
    tgt_layers = [
        (n, m) for n, m in target.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    src_layers = list(state.values())
    if len(tgt_layers) != len(src_layers):
        raise ConfigError(f"cannot fold {name}: layer structure differs without BN")
    with torch.no_grad():
        for (_, layer), (weight, bias) in zip(tgt_layers, src_layers, strict=True):
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        src_acts = [
            m for m in model.modules() if hasattr(m, "step") and isinstance(m.step, nn.Parameter)
        ]
        tgt_acts = [
            m for m in target.modules() if hasattr(m, "step") and isinstance(m.step, nn.Parameter)
        ]
        for s, t in zip(src_acts, tgt_acts, strict=True):
            t.step.copy_(s.step)
            t.initialized.copy_(s.initialized)
    return target, folded_kwargs


def run_recipe(
    cfg: dict, *, out_dir: pathlib.Path, resume: bool = False, progress: bool = True
) -> dict:
    out_dir = pathlib.Path(out_dir)
    name = require(cfg, "model.name", str)
    kwargs = dict(cfg["model"].get("kwargs") or {})
    dataset = cfg.get("data", {}).get("dataset", "mnist5k")
    tcfg = cfg.get("train", {}) or {}
    epochs = int(tcfg.get("epochs", 5))
    batch_size = int(tcfg.get("batch_size", 64))
    lr = float(tcfg.get("lr", 0.05))
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ConfigError("train.epochs >= 0, train.batch_size >= 1 and train.lr > 0 are required")
    seed = int(cfg.get("seed", 0))
    if resume and (out_dir / "meta.json").is_file():
        _, meta = load_checkpoint(out_dir)
        if meta.get("complete"):
            # the trained ANN is kept; a convert section is (re)run on it, which is cheap
            metrics = dict(meta.get("metrics", {}))
            if cfg.get("convert"):
                _check_same_model(cfg, meta)
                torch.manual_seed(seed)
                model, _ = load_model(out_dir)
                model.eval()
                _convert_and_report(model, cfg, meta, out_dir, dataset, metrics, progress)
            return metrics
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = load_arrays(dataset, "train")
    x_test, y_test = load_arrays(dataset, "test")
    start = time.time()
    model = create_model(name, **kwargs)
    train_epochs(
        model,
        x_train,
        y_train,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        cfg=tcfg,
        generator=generator,
        progress=progress,
    )
    metrics = {"accuracy_before_fold": ann_accuracy(model, x_test, y_test) / 100}
    qcfg = cfg.get("qat", {}) or {}
    if kwargs.get("qat") and kwargs.get("bn", name != "ann_mlp"):
        model, kwargs = fold_model(model, name, kwargs)
        metrics["accuracy_after_fold"] = ann_accuracy(model, x_test, y_test) / 100
        train_epochs(
            model,
            x_train,
            y_train,
            epochs=int(qcfg.get("fold_epochs", 2)),
            lr=float(qcfg.get("fold_lr", lr / 10)),
            batch_size=batch_size,
            cfg=tcfg,
            generator=generator,
            progress=progress,
            label="fine-tune folded",
        )
    model.eval()
    metrics["test_accuracy"] = (
        ann_accuracy(model, x_test, y_test) / 100
    )  # fraction, as every runner
    metrics["train_seconds"] = round(time.time() - start, 1)
    meta = {
        "model": {"name": name, "kwargs": kwargs},
        "dataset": dataset,
        "recipe": cfg,
        "metrics": metrics,
        "complete": True,
        "kind": "qat",
    }
    save_checkpoint(out_dir, model.state_dict(), meta)
    if cfg.get("convert"):
        _convert_and_report(model, cfg, meta, out_dir, dataset, metrics, progress)
    return metrics


def _check_same_model(cfg: dict, meta: dict) -> None:
    """A resumed conversion must run on the ANN the recipe describes."""
    saved = meta.get("recipe", {})
    for key in ("model", "data", "train", "qat", "seed"):
        if saved.get(key) != cfg.get(key):
            raise ConfigError(
                f"--resume: the checkpoint was trained with a different {key!r} section "
                f"({saved.get(key)!r} vs {cfg.get(key)!r}); use another --out"
            )


def _convert_and_report(
    model: nn.Module,
    cfg: dict,
    meta: dict,
    out_dir: pathlib.Path,
    dataset: str,
    metrics: dict,
    progress: bool,
) -> None:
    """Stage 4: convert with every method/variant of ``cfg['convert']``, sweep T, write the
    report to docs/results (or ``convert.out``) and add the rows to ``metrics``."""
    ccfg = cfg["convert"]
    x_train, _ = load_arrays(dataset, "train")
    x_test, y_test = load_arrays(dataset, "test")
    kwargs = meta["model"].get("kwargs", {})
    methods = ccfg.get("methods", ["calif" if kwargs.get("qat") else "rate"])
    timesteps = ccfg.get("timesteps", [8, 16, 32, 64, 128, 256])
    report = compare_methods(
        model, methods, x_train, x_test, y_test, timesteps, options=ccfg.get("options", {})
    )
    report.update({"checkpoint": str(out_dir), "model": meta["model"], "dataset": dataset})
    if "calif_exactness" in report:  # compared at the sweep's largest T
        metrics["calif_layer_mismatches"] = sum(
            v["mismatch_vs_decoded_input"] for v in report["calif_exactness"]["layers"].values()
        )
    paths = write_report(report, cfg.get("name", "conversion"), ccfg.get("out"))
    metrics["conversion"] = {m: e["rows"] for m, e in report["methods"].items()}
    metrics["within_1_point_at_T"] = {
        m: {"first": e["within_1_point_at_T"], "settled": e["settled_within_1_point_at_T"]}
        for m, e in report["methods"].items()
    }
    metrics["reports"] = paths
    if progress:
        print(f"conversion report: {paths['markdown']}", flush=True)
