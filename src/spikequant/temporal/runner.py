"""Recipe runner for ``kind: ttfs`` (``spikequant train recipes/ttfs-fc.yaml``).

Recipe keys (defaults in brackets)::

    seed: 0
    data:  {dataset: mnist5k, train_limit: null, test_limit: null}
    model: {name: ttfs_fc, kwargs: {sizes: [784, 800, 10], alpha: 3.0, input_noise: 0.0}}
    train: {epochs: 1, batch_size: 10, lr: 1e-3, lr_end: <lr>, eval_batch_size: 250, threads: 1}
    loss:  {form: code, K: 100, beta: 1.0, l2: 1e-3, l2_conv: 1e-2, clip: 10.0}
    qat:   {bits: [32], epochs_per_stage: 1, lr: <lr_end>, range_quantile: 1.0}

Training: Adam; the learning rate moves linearly from ``lr`` (first epoch) to ``lr_end`` (last
full-precision epoch). After the full-precision epochs, each further entry of ``qat.bits`` (e.g.
``[32, 8, 4, 2]``) fine-tunes ``epochs_per_stage`` epochs with the forward pass quantized to
that many bits (straight-through backward) at ``qat.lr``. Each stage's test accuracy is recorded
and its model saved in ``out_dir/bits<b>``; ``out_dir`` holds the final model. With
``resume=True`` training continues after the last completed epoch.

``train.threads`` (default 1) sets torch's intra-op threads for the run (restored afterwards):
a TTFS step is thousands of small tensor operations, and on a shared CPU the synchronisation of
several threads per operation made an epoch up to 10x slower than one thread. ``0`` keeps
torch's setting.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import require
from ..errors import ConfigError
from ..io import write_json
from ..registry import create_model
from .evaluate import evaluate
from .layers import FULL_PRECISION_BITS, set_weight_bits
from .loss import LOSS_FORMS, clip_row_normalised, ttfs_loss

OPTIMIZER_FILE = "optimizer.pt"


def _section(cfg: dict, key: str) -> dict:
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"recipe: {key} must be a mapping, got {value!r}")
    return value


def _settings(cfg: dict) -> dict:
    train, loss, qat, data = (_section(cfg, k) for k in ("train", "loss", "qat", "data"))
    require(cfg, "model.name", str)
    s = {
        "seed": int(cfg.get("seed", 0)),
        "dataset": str(data.get("dataset", "mnist5k")),
        "train_limit": data.get("train_limit"),
        "test_limit": data.get("test_limit"),
        "epochs": int(train.get("epochs", 1)),
        "batch_size": int(train.get("batch_size", 10)),
        "lr": float(train.get("lr", 1e-3)),
        "eval_batch_size": int(train.get("eval_batch_size", 250)),
        "threads": int(train.get("threads", 1)),
        "form": str(loss.get("form", "code")),
        "K": float(loss.get("K", 100.0)),
        "beta": float(loss.get("beta", 1.0)),
        "l2": float(loss.get("l2", 1e-3)),
        "l2_conv": float(loss.get("l2_conv", 1e-2)),
        "clip": float(loss.get("clip", 10.0)),
        "bits": [int(b) for b in qat.get("bits", [FULL_PRECISION_BITS])],
        "epochs_per_stage": int(qat.get("epochs_per_stage", 1)),
        "range_quantile": float(qat.get("range_quantile", 1.0)),
    }
    s["lr_end"] = float(train.get("lr_end", s["lr"]))
    s["qat_lr"] = float(qat.get("lr", s["lr_end"]))
    if s["epochs"] < 1 or s["batch_size"] < 1 or s["eval_batch_size"] < 1:
        raise ConfigError(
            "recipe: train.epochs, train.batch_size and train.eval_batch_size must be >= 1"
        )
    if not (s["lr"] > 0 and s["lr_end"] > 0 and s["qat_lr"] > 0):
        raise ConfigError("recipe: train.lr, train.lr_end and qat.lr must be > 0")
    if not 0 < s["range_quantile"] <= 1:
        raise ConfigError(
            f"recipe: qat.range_quantile must be in (0, 1], got {s['range_quantile']}"
        )
    if s["threads"] < 0:
        raise ConfigError("recipe: train.threads must be >= 0 (0 = keep torch's setting)")
    if s["form"] not in LOSS_FORMS:
        raise ConfigError(f"recipe: loss.form must be one of {LOSS_FORMS}, got {s['form']!r}")
    if not s["bits"] or s["bits"][0] != FULL_PRECISION_BITS or any(b < 2 for b in s["bits"]):
        raise ConfigError(
            f"recipe: qat.bits must start with 32 and hold integers >= 2, got {s['bits']}"
        )
    return s


def _epoch_plan(s: dict) -> list[tuple[int, float]]:
    """(weight bits, learning rate) of every epoch, full precision first."""
    plan = []
    for e in range(s["epochs"]):
        frac = e / (s["epochs"] - 1) if s["epochs"] > 1 else 0.0
        plan.append((FULL_PRECISION_BITS, s["lr"] + frac * (s["lr_end"] - s["lr"])))
    for bits in s["bits"][1:]:
        plan += [(bits, s["qat_lr"])] * s["epochs_per_stage"]
    return plan


def _load_split(name: str, split: str, limit) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load_arrays

    X, y = load_arrays(name, split)
    if limit is not None:
        X, y = X[: int(limit)], y[: int(limit)]
    return X.float(), y.long()


def train_epoch(model, optimizer, X, y, s: dict, generator: torch.Generator) -> dict:
    """One pass over ``(X, y)`` in shuffled mini-batches; returns mean loss and gradient norms."""
    model.train()
    order = torch.randperm(len(X), generator=generator)
    total, batches, clipped = 0.0, 0, 0
    for start in range(0, len(X), s["batch_size"]):
        idx = order[start : start + s["batch_size"]]
        z_out = model(X[idx])
        loss = ttfs_loss(
            model,
            z_out,
            y[idx],
            form=s["form"],
            K=s["K"],
            beta=s["beta"],
            l2=s["l2"],
            l2_conv=s["l2_conv"],
        )
        if not torch.isfinite(loss):
            continue  # a batch whose correct neuron never fires and form="paper": skip, keep going
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = clip_row_normalised(model, s["clip"])
        clipped += sum(n > s["clip"] for n in norms)
        optimizer.step()
        total += loss.item()
        batches += 1
    return {"loss": total / max(batches, 1), "clipped_grads": clipped}


def run_recipe(cfg: dict, *, out_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a TTFS network from a recipe; returns final metrics (also ``out_dir/metrics.json``)."""
    s = _settings(cfg)
    previous_threads = torch.get_num_threads()
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    try:
        return _run(cfg, s, Path(out_dir), resume, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(cfg: dict, s: dict, out_dir: Path, resume: bool, progress: bool) -> dict:
    model_spec = {"name": cfg["model"]["name"], "kwargs": dict(cfg["model"].get("kwargs") or {})}
    from . import models  # noqa: F401  (registers ttfs_fc / ttfs_scnn)

    torch.manual_seed(s["seed"])
    model = create_model(model_spec["name"], **model_spec["kwargs"])
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"])
    X, y = _load_split(s["dataset"], "train", s["train_limit"])
    Xt, yt = _load_split(s["dataset"], "test", s["test_limit"])

    plan = _epoch_plan(s)
    history: list[dict] = []
    start_epoch = 0
    if resume and (out_dir / "meta.json").is_file():
        state, meta = load_checkpoint(out_dir)
        model.load_state_dict(state)
        history = list(meta.get("history", []))
        start_epoch = int(meta.get("epochs_done", 0))
        if (out_dir / OPTIMIZER_FILE).is_file():
            optimizer.load_state_dict(torch.load(out_dir / OPTIMIZER_FILE, weights_only=True))

    stage_accuracy = {str(h["bits"]): h["test_accuracy"] for h in history}
    for epoch in range(start_epoch, len(plan)):
        bits, lr = plan[epoch]
        set_weight_bits(model, bits, s["range_quantile"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(s["seed"] * 1000 + epoch)
        started = time.perf_counter()
        stats = train_epoch(model, optimizer, X, y, s, generator)
        seconds = time.perf_counter() - started
        report = evaluate(model, Xt, yt, s["eval_batch_size"])
        row = {
            "epoch": epoch + 1,
            "bits": bits,
            "lr": lr,
            "train_loss": stats["loss"],
            "clipped_grads": stats["clipped_grads"],
            "seconds": seconds,
            "test_accuracy": report["accuracy"],
            "fraction_spiking": report["fraction_spiking"],
        }
        history.append(row)
        stage_accuracy[str(bits)] = report["accuracy"]
        if progress:
            print(
                f"[ttfs] epoch {epoch + 1}/{len(plan)} bits={bits} lr={lr:.2e} "
                f"loss={stats['loss']:.4f} test_acc={report['accuracy']:.4f} "
                f"spiking={report['fraction_spiking']:.3f} ({seconds:.1f}s)",
                flush=True,
            )
        meta = _meta(cfg, model_spec, s, bits, history, epoch + 1, report)
        last_of_stage = epoch + 1 == len(plan) or plan[epoch + 1][0] != bits
        if last_of_stage and len(s["bits"]) > 1:
            save_checkpoint(out_dir / f"bits{bits}", model.state_dict(), meta)
        save_checkpoint(out_dir, model.state_dict(), meta)
        torch.save(optimizer.state_dict(), out_dir / OPTIMIZER_FILE)

    final = evaluate(model, Xt, yt, s["eval_batch_size"])
    if not math.isfinite(final["accuracy"]):
        raise ConfigError("evaluation produced a non-finite accuracy")
    metrics = {
        "name": cfg.get("name"),
        "recipe": cfg.get("name"),
        "epochs": len(history),
        "model": model_spec,
        "dataset": s["dataset"],
        "weight_bits": plan[-1][0] if plan else FULL_PRECISION_BITS,
        "weight_range_quantile": s["range_quantile"],
        "test_accuracy": final["accuracy"],
        "fraction_spiking": final["fraction_spiking"],
        "layer_fraction_spiking": final["layer_fraction_spiking"],
        "n_weights": final["n_weights"],
        "energy_nJ": final["energy_nJ"],
        "accuracy_by_bits": stage_accuracy,
        "seconds_per_epoch": [h["seconds"] for h in history],
        "history": history,
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _meta(cfg, model_spec, s, bits, history, epochs_done, report) -> dict:
    return {
        "model": model_spec,
        "kind": "ttfs",
        "recipe": cfg.get("name"),
        "dataset": s["dataset"],
        "weight_bits": bits,
        "epochs_done": epochs_done,
        "test_accuracy": report["accuracy"],
        "history": history,
    }
