r"""Surrogate-gradient BPTT training of spiking networks, evaluation with spike statistics, and
exactly resumable checkpoints.

Loss: cross-entropy of the rate-decoded logits, ``L = CE(mean_t o_t, y)`` (with mixup,
``lam CE(., y_a) + (1 - lam) CE(., y_b)``). The spike non-linearity's derivative is the neuron's
surrogate; gradients flow back through all T steps (BPTT, no truncation). Neuron state is reset
before every batch. Learning rate per iteration ``i`` of ``N``:

* cosine: ``lr_i = lr (r + (1 - r) (1 + cos(pi i / N)) / 2)`` with ``r = min_lr_ratio``;
* step (exponential): ``lr_i = lr gamma^floor(epoch / step_size)``;
* constant: ``lr_i = lr``.

Checkpoint layout under ``out_dir``::

    checkpoints/epoch_0003/{model.safetensors, meta.json, trainer_state.pt}
    latest.json                {"epoch": 3, "checkpoint": "checkpoints/epoch_0003"}

Each epoch is written to a fresh folder, then ``latest.json`` is replaced atomically, then the
previous folder is removed, so a run killed at any moment resumes from a complete epoch.
``trainer_state.pt`` holds the optimizer, scheduler, data-order generator and global RNG states,
so a resumed run ends with bit-identical weights to an unbroken run with the same seed.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError, NonFiniteError
from ..io import atomic_write_bytes, write_json
from ..metrics import SpikeMonitor
from ..neurons import SpikingNeuron, reset_state

LATEST = "latest.json"
TRAINER_STATE = "trainer_state.pt"


# ----------------------------------------------------------------------------- optimisation


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only; BN, biases, thresholds and levels are not decayed
    (decaying a threshold would pull it towards 0 regardless of the task)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, optim: dict) -> torch.optim.Optimizer:
    groups = parameter_groups(model, float(optim["weight_decay"]))
    lr = float(optim["lr"])
    if optim["name"] == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=float(optim["momentum"]),
            nesterov=bool(optim["nesterov"]) and optim["momentum"] > 0,
        )
    if optim["name"] == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(schedule: dict, iteration: int, iters_per_epoch: int, total_iters: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (see the module docstring)."""
    if schedule["name"] == "constant":
        return 1.0
    if schedule["name"] == "step":
        return float(schedule["gamma"]) ** (iteration // iters_per_epoch // schedule["step_size"])
    r = float(schedule["min_lr_ratio"])
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(iteration, total_iters) / total_iters))


def build_scheduler(optimizer, schedule: dict, iters_per_epoch: int, epochs: int):
    total = max(iters_per_epoch * epochs, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(schedule, i, iters_per_epoch, total)
    )


# ----------------------------------------------------------------------------- data


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches; in-memory tensor datasets are sliced directly (much faster than a loader)."""
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
    )
    yield from loader


def _batch_first_to_time_first(module, args):
    x = args[0]
    return (x.transpose(0, 1), *args[1:])


def accept_frame_sequences(model: nn.Module, dataset: Dataset) -> bool:
    """If the dataset's samples are frame sequences ``[T, C, H, W]`` (event data), a loader batch
    is ``[B, T, C, H, W]``: make ``model`` transpose it to the time-first ``[T, B, C, H, W]``.
    Returns whether the hook was added."""
    if len(dataset) == 0:
        return False
    x, _ = dataset[0]
    if x.ndim != 4:
        return False
    model.register_forward_pre_hook(_batch_first_to_time_first)
    return True


def num_batches(dataset: Dataset, batch_size: int) -> int:
    return math.ceil(len(dataset) / batch_size)


# ----------------------------------------------------------------------------- evaluation


def has_spiking_neurons(model: nn.Module) -> bool:
    return any(isinstance(m, SpikingNeuron) for m in model.modules())


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy and loss of the rate-decoded prediction, with spike statistics of the test pass.

    Returns ``accuracy`` (fraction), ``loss``, ``timesteps`` (latency T), ``theta`` (mean spikes per
    neuron per timestep, averaged over spiking layers), ``spikes_per_neuron`` (over the whole
    window), per-layer ``firing_rates``, ``synops`` and ``dense_macs`` per sample. For a network
    without spiking neurons (the ANN baseline) the spike statistics are ``None``.
    """
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    count = 0
    timesteps = None
    try:
        with SpikeMonitor(model) as monitor:
            for x, y in batches(dataset, batch_size, shuffle=False):
                reset_state(model)
                out = model(x)
                timesteps = out.shape[0]
                logits = out.mean(0)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
        report = monitor.report()
    finally:
        reset_state(model)
        model.train(was_training)
    spiking = has_spiking_neurons(model)
    dense_macs = report["dense_macs"]
    return {
        "accuracy": correct / max(count, 1),
        "loss": loss_sum / max(count, 1),
        "samples": count,
        "timesteps": timesteps,
        "theta": report["theta"] if spiking else None,
        "spikes_per_neuron": report["spikes_per_neuron"] if spiking else None,
        "spiking_neurons": report["total_neurons"] if spiking else 0,
        "firing_rates": {k: v["firing_rate"] for k, v in report["layers"].items()},
        "synops": report["synops"] if spiking else None,
        "dense_macs": dense_macs,
    }


# ----------------------------------------------------------------------------- RNG state


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "data": generator.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- checkpoints


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (``latest.json`` names its newest checkpoint)."""
    path = Path(path)
    pointer = path / LATEST
    if pointer.is_file():
        try:
            return path / json.loads(pointer.read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{pointer} is corrupt: {exc}") from None
    return path


def save_training_checkpoint(
    out_dir: Path, *, epoch: int, model: nn.Module, meta: dict, trainer_state: dict
) -> Path:
    folder = out_dir / "checkpoints" / f"epoch_{epoch:04d}"
    buffer = io.BytesIO()
    torch.save(trainer_state, buffer)
    atomic_write_bytes(folder / TRAINER_STATE, buffer.getvalue())
    save_checkpoint(folder, model.state_dict(), {**meta, "epoch": epoch})
    previous = out_dir / LATEST
    old = resolve_checkpoint(out_dir) if previous.is_file() else None
    write_json(previous, {"epoch": epoch, "checkpoint": str(folder.relative_to(out_dir))})
    if old is not None and old.resolve() != folder.resolve() and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_training_checkpoint(out_dir: Path) -> tuple[dict, dict, dict] | None:
    """``(model_state, meta, trainer_state)`` of the newest complete epoch, or None if none."""
    if not (out_dir / LATEST).is_file():
        return None
    folder = resolve_checkpoint(out_dir)
    state, meta = load_checkpoint(folder)
    path = folder / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {TRAINER_STATE}; it cannot be resumed")
    trainer_state = torch.load(path, weights_only=False)
    if trainer_state.get("epoch") != meta.get("epoch"):
        raise CheckpointError(f"{folder}: trainer state and weights are from different epochs")
    return state, meta, trainer_state


# ----------------------------------------------------------------------------- training

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple]


class Trainer:
    """Train ``model`` on ``train_set`` following a validated recipe (see :mod:`.recipe`).

    ``augment(x, y, generator)`` may return ``(x, y)`` or a mixup triple
    ``(x, y_a, y_b, lam)``; it must draw randomness only from ``generator`` or the global RNGs
    so that resumed runs repeat it exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: dict,
        train_set: Dataset,
        test_set: Dataset | None,
        *,
        out_dir: Path,
        meta: dict,
        augment: Augment | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.train_set = train_set
        self.test_set = test_set
        self.out_dir = Path(out_dir)
        self.meta = meta
        self.augment = augment
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.epochs = cfg["train"]["epochs"]
        self.batch_size = cfg["data"]["batch_size"]
        self.iters_per_epoch = num_batches(train_set, self.batch_size)
        self.generator = seed_everything(cfg["seed"])
        self.optimizer = build_optimizer(model, cfg["optim"])
        self.scheduler = build_scheduler(
            self.optimizer, cfg["schedule"], self.iters_per_epoch, self.epochs
        )
        self.epoch = 0
        self.history: list[dict] = []

    # -- state
    def trainer_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(self.generator),
            "history": self.history,
        }

    def resume(self) -> bool:
        loaded = load_training_checkpoint(self.out_dir)
        if loaded is None:
            return False
        state, meta, trainer_state = loaded
        if meta.get("model") != self.meta.get("model"):
            raise CheckpointError(
                f"cannot resume {self.out_dir}: its checkpoint was made for model "
                f"{meta.get('model')}, "
                f"the recipe builds {self.meta.get('model')}"
            )
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        restore_rng(trainer_state["rng"], self.generator)
        self.epoch = int(trainer_state["epoch"])
        self.history = list(trainer_state["history"])
        return True

    # -- loop
    def _loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lam = None
        y_b = None
        if self.augment is not None:
            result = self.augment(x, y, self.generator)
            if len(result) == 4:
                x, y, y_b, lam = result
            else:
                x, y = result
        reset_state(self.model)
        logits = self.model(x).mean(0)
        if lam is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_b)
        return loss, logits, y

    def train_epoch(self, bar=None, task=None) -> dict[str, float]:
        self.model.train()
        clip = self.cfg["optim"]["grad_clip"]
        loss_sum = 0.0
        correct = 0
        seen = 0
        for x, y in batches(
            self.train_set,
            self.batch_size,
            shuffle=True,
            generator=self.generator,
            num_workers=self.cfg["data"]["num_workers"],
        ):
            loss, logits, y_used = self._loss(x, y)
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"loss became {float(loss.detach())} in epoch {self.epoch + 1} (lr "
                    f"{self.scheduler.get_last_lr()[0]:.3g}); lower optim.lr or set optim.grad_clip"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y_used).sum())
            seen += len(y)
            if bar is not None:
                bar.update(task, advance=1, loss=loss_sum / seen, acc=100 * correct / seen)
        reset_state(self.model)
        return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}

    def fit(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train until ``train.epochs`` (or, for tests of resuming, stop after ``stop_after``
        epochs of this call as if killed). Returns the final evaluation."""
        progress_ctx = _progress(self.progress)
        eval_every = self.cfg["train"]["eval_every"]
        run_epochs = 0
        with progress_ctx as bar:
            while self.epoch < self.epochs:
                if stop_after is not None and run_epochs >= stop_after:
                    return {"stopped_after_epoch": self.epoch}
                task = None
                if bar is not None:
                    task = bar.add_task(
                        f"epoch {self.epoch + 1}/{self.epochs}",
                        total=self.iters_per_epoch,
                        loss=float("nan"),
                        acc=0.0,
                    )
                start = time.perf_counter()
                record = {
                    "epoch": self.epoch + 1,
                    **self.train_epoch(bar, task),
                    "lr": self.scheduler.get_last_lr()[0],
                    "seconds": time.perf_counter() - start,
                }
                self.epoch += 1
                last = self.epoch == self.epochs
                if self.test_set is not None and (
                    last or (eval_every and self.epoch % eval_every == 0)
                ):
                    ev = evaluate(
                        self.model, self.test_set, batch_size=self.cfg["data"]["eval_batch_size"]
                    )
                    record.update(
                        {
                            "test_accuracy": ev["accuracy"],
                            "test_loss": ev["loss"],
                            "theta": ev["theta"],
                        }
                    )
                    if last:
                        self.final_eval = ev
                self.history.append(record)
                if bar is not None:  # keeps the line above the live progress bars
                    bar.console.print(_epoch_line(record))
                else:
                    self.log(_epoch_line(record))
                save_training_checkpoint(
                    self.out_dir,
                    epoch=self.epoch,
                    model=self.model,
                    meta={**self.meta, "history": self.history},
                    trainer_state=self.trainer_state(),
                )
                run_epochs += 1
        final = getattr(self, "final_eval", None)
        if final is None and self.test_set is not None:
            final = evaluate(
                self.model, self.test_set, batch_size=self.cfg["data"]["eval_batch_size"]
            )
        return final or {}


def _epoch_line(r: dict) -> str:
    parts = [
        f"epoch {r['epoch']}",
        f"loss {r['train_loss']:.4f}",
        f"train {100 * r['train_accuracy']:.2f}%",
    ]
    if "test_accuracy" in r:
        parts.append(f"test {100 * r['test_accuracy']:.2f}%")
    if r.get("theta") is not None:
        parts.append(f"theta {r['theta']:.4f}")
    parts.append(f"{r['seconds']:.1f}s")
    return "  ".join(parts)


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2f}%"),
        TimeRemainingColumn(),
        transient=True,  # the epoch lines above keep the record
    )
