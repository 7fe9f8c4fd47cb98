"""ANN helpers of the conversion path: a plain cross-entropy trainer for small in-memory ANNs
(tests, tutorials) and BN folding of a trained QAT model (the ``qat`` training method folds with
it between its two stages, :mod:`spikequant.methods.qat`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import create_model


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
    """Cross-entropy training with a cosine learning-rate schedule. ``cfg`` may set
    ``optimizer`` (sgd or adam), ``momentum`` and ``weight_decay`` (on conv/linear weights, as
    in recipes: :func:`~spikequant.train.trainer.build_optimizer`)."""
    from ..train.trainer import build_optimizer

    if epochs <= 0:
        return
    name = cfg.get("optimizer", "sgd")
    if name not in ("sgd", "adam"):
        raise ConfigError(f"train.optimizer must be 'sgd' or 'adam', got {name!r}")
    optim = {"momentum": 0.9, "weight_decay": 0.0, **cfg, "name": name, "lr": lr, "nesterov": False}
    opt = build_optimizer(model, optim)
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
    from ..quant.qat import QuantReLU, fold_bn_into

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
        src_acts = [m for m in model.modules() if isinstance(m, QuantReLU)]
        tgt_acts = [m for m in target.modules() if isinstance(m, QuantReLU)]
        for s, t in zip(src_acts, tgt_acts, strict=True):
            t.raw_step.copy_(s.raw_step)
            t.initialized.copy_(s.initialized)
    return target, folded_kwargs
