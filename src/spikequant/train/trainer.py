r"""Surrogate-gradient BPTT training of spiking networks, evaluation with spike statistics, and
exactly resumable checkpoints.

Loss: cross-entropy of the rate-decoded logits, ``L = CE(mean_t o_t, y)`` (with mixup,
``lam CE(., y_a) + (1 - lam) CE(., y_b)``). The spike non-linearity's derivative is the neuron's
surrogate; gradients flow back through all T steps (BPTT, no truncation). Neuron state is reset
before every batch. Learning rate per iteration ``i`` of ``N``:

* cosine: ``lr_i = lr (r + (1 - r) (1 + cos(pi i / N)) / 2)`` with ``r = min_lr_ratio``;
* step (exponential): ``lr_i = lr gamma^floor(epoch / step_size)``;
* constant: ``lr_i = lr``.

What a method changes (loss, learning-rate plan, gradient clipping, model surgery between
epochs, evaluation) it plugs in through :class:`TrainingHooks`; the loop itself is written once.

Checkpoints: each epoch is written to a fresh folder of the run folder (layout and guarantees in
:mod:`spikequant.runfolder`): weights, and the trainer state (optimizer, iteration, data-order
generator and global RNG states) as safetensors + JSON, so a resumed run ends with bit-identical
weights to an unbroken run with the same seed.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .. import runfolder
from ..devices import model_device
from ..errors import CheckpointError, ConfigError, NonFiniteError
from ..finite import deferred_checks
from ..metrics import SpikeMonitor
from ..neurons import SpikingNeuron, reset_state
from . import distributed, loggers

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
    """The optimizer of the recipe's ``optim`` section (SGD, Adam or AdamW) over
    :func:`parameter_groups` (weight decay on conv/linear weights only)."""
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


# ----------------------------------------------------------------------------- data


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``batch_size`` samples (with ``world_size`` > 1: this rank's share of
    each global batch of that size). In-memory tensor datasets are sliced directly (much faster
    than a loader), rank ``r`` taking every ``world_size``-th sample of the shared order, so the
    ranks' shares of batch ``k`` together are exactly the single-process batch ``k``; other
    datasets go through a DataLoader (with a DistributedSampler under DDP)."""
    local = batch_size // world_size
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        order = order[rank::world_size]
        for start in range(0, len(order), local):
            idx = order[start : start + local]
            yield x[idx], y[idx]
        return
    sampler = None
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if shuffle else 0
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )
        sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=local,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    yield from loader


def _batch_first_to_time_first(module, args):
    x = args[0]
    if x.ndim != 5:  # a static [B, C, H, W] probe (the cost profile): the model repeats it over T
        return None
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
    """Batches per epoch: ``ceil(len(dataset) / batch_size)``."""
    return math.ceil(len(dataset) / batch_size)


# ----------------------------------------------------------------------------- evaluation


def has_spiking_neurons(model: nn.Module) -> bool:
    """Whether the model holds any :class:`~spikequant.neurons.SpikingNeuron`."""
    return any(isinstance(m, SpikingNeuron) for m in model.modules())


def rate_scores(out: torch.Tensor) -> torch.Tensor:
    """Class scores of a spiking network's output ``[T, B, classes]``: the rate ``mean_t o_t``."""
    return out.mean(0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    scores: Callable[[torch.Tensor], torch.Tensor] = rate_scores,
) -> dict[str, Any]:
    """Accuracy and loss of the prediction ``argmax scores(output)``, with spike statistics of the
    test pass. ``scores``: the rate over time by default; an ANN's ``[B, classes]`` logits are
    their own scores (``lambda out: out``).

    Returns ``accuracy`` (fraction), ``loss``, ``timesteps`` (latency T; None for an ANN's
    ``[B, classes]`` output), ``theta`` (mean spikes per neuron per timestep, averaged over
    spiking layers), ``spikes_per_neuron`` (over the whole window), per-layer ``firing_rates``,
    ``synops`` and ``dense_macs`` per sample. For a network without spiking neurons (an ANN) the
    spike statistics are ``None``.
    """
    was_training = model.training
    model.eval()
    count = 0
    timesteps = None
    try:
        with SpikeMonitor(model) as monitor:
            device = model_device(model)
            # summed on the device (float64: the sums of the float32 values are exact to the
            # last bit of a host sum) and read once, so a GPU is not stopped after every batch
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.float64, device=device)
            for x, y in batches(dataset, batch_size, shuffle=False):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                reset_state(model)
                with deferred_checks() as checks:
                    out = model(x)
                if checks.entries:  # a NaN threshold: refused before its accuracy is reported
                    checks.raise_first(checks.verdicts(device).tolist())
                timesteps = out.shape[0] if out.ndim > 2 else None
                logits = scores(out)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                correct += (logits.argmax(1) == y).sum().double()
                count += len(y)
        report = monitor.report()
        loss_sum, correct = loss_sum.item(), int(correct.item())
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
    """The torch, data-order, numpy and python random states (saved with every checkpoint)."""
    return {
        "torch": torch.get_rng_state(),
        "data": generator.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back random states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and python with ``seed``; returns the data-order generator."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- checkpoints


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (``latest.json`` names its newest checkpoint)."""
    return runfolder.resolve(path)


# ----------------------------------------------------------------------------- training

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple]


class TrainingHooks:
    """What a training method plugs into :class:`Trainer`. Every hook has a default that gives
    plain surrogate-gradient BPTT with ``L = CE(mean_t o_t, y)``; a method overrides only what it
    changes. Hooks receive the trainer, whose ``model``, ``optimizer``, ``epoch``, ``iteration``
    and ``generator`` they may read (and, at epoch boundaries, replace via
    :meth:`Trainer.replace_model`)."""

    def criterion(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``(loss, scores [B, classes], labels)`` of one batch; ``loss=None`` skips the batch.
        Default: augmentation, neuron reset, rate-decoded cross-entropy (mixup aware)."""
        lam = y_b = None
        if trainer.augment is not None:
            result = trainer.augment(x, y, trainer.generator)
            if len(result) == 4:
                x, y, y_b, lam = result
            else:
                x, y = result
        x, y = trainer.to_device(x), trainer.to_device(y)
        reset_state(trainer.model)
        out = trainer.forward(x)
        loss = self.output_loss(trainer, out, y)
        if lam is not None:
            y_b = trainer.to_device(y_b)
            loss = lam * loss + (1 - lam) * self.output_loss(trainer, out, y_b)
        return loss, self.scores(out), y

    def output_loss(self, trainer: Trainer, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scores(out), y)

    #: class scores from the model output (argmax = prediction); default: the rate over time
    scores = staticmethod(rate_scores)

    def lr_factor(self, trainer: Trainer, iteration: int) -> float:
        """Multiplier of the base learning rate before optimizer step ``iteration``."""
        return lr_factor(
            trainer.cfg["schedule"], iteration, trainer.iters_per_epoch, trainer.total_iters
        )

    def shuffle_generator(self, trainer: Trainer, epoch: int) -> torch.Generator:
        """Generator of the data order of ``epoch`` (0-based). Default: the trainer's own."""
        return trainer.generator

    def on_epoch_start(self, trainer: Trainer) -> None:
        pass

    def after_backward(self, trainer: Trainer) -> dict[str, float | torch.Tensor]:
        """Gradient hook, between backward and the optimizer step; returns counters summed over
        the epoch into its record (numbers, or scalar tensors summed on their device). Default:
        ``optim.grad_clip`` (global norm)."""
        clip = trainer.cfg["optim"]["grad_clip"]
        if clip:
            nn.utils.clip_grad_norm_(trainer.model.parameters(), float(clip))
        return {}

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        pass

    def on_resume(self, trainer: Trainer, meta: dict) -> None:
        """Before a checkpoint's weights are loaded: make ``trainer.model`` the architecture the
        checkpoint was saved from (a method that changes the model mid-run rebuilds it here)."""

    def evaluate(self, trainer: Trainer, model: nn.Module, dataset: Dataset) -> dict[str, Any]:
        return self.evaluate_model(model, dataset, trainer.cfg["data"]["eval_batch_size"])

    @classmethod
    def evaluate_model(cls, model: nn.Module, dataset: Dataset, batch_size: int) -> dict[str, Any]:
        """Accuracy of ``model`` on ``dataset`` and what else the method measures (also what
        ``spikequant eval`` reports of a run of the method). Default: :func:`evaluate` with
        :attr:`scores`."""
        return evaluate(model, dataset, batch_size=batch_size, scores=cls.scores)

    def checkpoint_meta(self, trainer: Trainer) -> dict:
        """Metadata saved with every epoch (must let the method rebuild the model)."""
        return dict(trainer.meta)


class Trainer:
    """Train ``model`` on ``train_set`` following a validated recipe (see :mod:`.recipe`), with a
    method's :class:`TrainingHooks`; checkpoints go to the run folder ``out_dir``
    (:mod:`spikequant.runfolder`), one epoch folder at a time.

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
        hooks: TrainingHooks | None = None,
        augment: Augment | None = None,
        epochs: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.train_set = train_set
        self.test_set = test_set
        self.out_dir = Path(out_dir)
        self.meta = meta
        self.hooks = hooks or TrainingHooks()
        self.augment = augment
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.epochs = epochs if epochs is not None else cfg["train"]["epochs"]
        self.batch_size = cfg["data"]["batch_size"]
        self.world = distributed.world()
        if self.batch_size % self.world.size:
            raise ConfigError(
                f"data.batch_size {self.batch_size} (the global batch) must be divisible by the "
                f"{self.world.size} processes"
            )
        self.device = distributed.resolve_device(cfg["train"]["device"])
        self.precision = cfg["train"]["precision"]
        self.iters_per_epoch = num_batches(train_set, self.batch_size)
        self.total_iters = max(self.iters_per_epoch * self.epochs, 1)
        self.generator = seed_everything(cfg["seed"])
        if self.world.distributed:  # per-rank global RNG (augmentation noise), same data order
            torch.manual_seed(cfg["seed"] + 1_000_003 * self.world.rank)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")
        self.epoch = 0
        self.iteration = 0
        self.history: list[dict] = []
        self.final_eval: dict | None = None
        self.replace_model(model)

    def replace_model(self, model: nn.Module, optim: dict | None = None) -> None:
        """Continue with ``model`` (e.g. BN folded) and a fresh optimizer over its weights; the
        model is moved to the run's device and, under DDP, wrapped for gradient averaging."""
        if self.world.distributed and self.cfg["train"]["sync_batchnorm"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.net = self.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # BN statistics and neuron state stay with each rank
            )
        self.optimizer = build_optimizer(self.model, optim or self.cfg["optim"])

    # -- device, precision, BPTT
    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def autocast(self):
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward: under autocast at the recipe's precision, through DDP when
        distributed, and in checkpointed chunks of ``train.bptt_chunk`` steps with
        ``train.bptt: checkpointed`` (static input is encoded to ``[T, B, ...]`` first)."""
        with self.autocast():
            if self.cfg["train"]["bptt"] == "checkpointed":
                from ..bptt import checkpointed_forward

                encode = getattr(self.model, "encode", None)
                if encode is not None and x.ndim == getattr(self.model, "static_ndim", -1):
                    x = encode(x)
                return checkpointed_forward(self.net, x, self.cfg["train"]["bptt_chunk"])
            return self.net(x)

    # -- state
    def trainer_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(self.generator),
            "history": self.history,
        }

    def resume(self) -> bool:
        loaded = runfolder.load_epoch(self.out_dir)
        if loaded is None:
            return False
        state, meta, trainer_state = loaded
        if not isinstance(trainer_state, dict) or trainer_state.get("epoch") != meta.get("epoch"):
            raise CheckpointError(f"{self.out_dir}: trainer state and weights disagree")
        self.hooks.on_resume(self, meta)
        if meta.get("model") != self.hooks.checkpoint_meta(self).get("model"):
            raise CheckpointError(
                f"cannot resume {self.out_dir}: its checkpoint was made for model "
                f"{meta.get('model')}, the recipe builds {self.meta.get('model')}"
            )
        try:
            self.model.load_state_dict(state)
            self.optimizer.load_state_dict(trainer_state["optimizer"])
            if trainer_state.get("scaler"):
                self.scaler.load_state_dict(trainer_state["scaler"])
            restore_rng(trainer_state["rng"], self.generator)
            self.epoch = int(trainer_state["epoch"])
            self.iteration = int(trainer_state["iteration"])
            self.history = list(trainer_state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume {self.out_dir}: {exc}") from None
        return True

    # -- loop
    def _set_lr(self) -> None:
        factor = self.hooks.lr_factor(self, self.iteration)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor

    def train_epoch(self, bar=None, task=None) -> dict[str, float]:
        self.model.train()
        loss_sum = 0.0
        correct = 0
        seen = 0
        counters: dict[str, float] = {}
        generator = self.hooks.shuffle_generator(self, self.epoch)
        if self.world.distributed:  # reseeded per epoch: a resumed rank repeats its randomness
            torch.manual_seed(self.cfg["seed"] + 1_000_003 * self.world.rank + 7919 * self.epoch)
        for step, (x, y) in enumerate(
            batches(
                self.train_set,
                self.batch_size,
                shuffle=True,
                generator=generator,
                num_workers=self.cfg["data"]["num_workers"],
                pin_memory=self.device.type == "cuda",
                rank=self.world.rank,
                world_size=self.world.size,
                epoch=self.epoch,
            ),
            start=1,
        ):
            with deferred_checks() as checks:  # one host read per step, below
                loss, scores, y_used = self.hooks.criterion(self, x, y)
                if loss is None:
                    continue
                self._set_lr()
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                for key, value in self.hooks.after_backward(self).items():
                    counters[key] = counters.get(key, 0) + value
            # every check of the step and the step's loss and correct count in one transfer:
            # reading each on the host would make a GPU wait for its queue every time
            # (host-to-device copies non_blocking: a blocking one waits for the queue as well)
            device = loss.device
            true = torch.ones((), dtype=torch.bool, device=device)
            finite_batch = torch.isfinite(x).all() if x.is_floating_point() else true
            finite_grads = (
                _finite_gradients(self.model, device)
                if not self.scaler.is_enabled()  # float16 loss scaling skips such steps itself
                else true
            )
            values = torch.cat(
                [
                    finite_batch.to(device, torch.float64, non_blocking=True).reshape(1),
                    checks.verdicts(device),
                    torch.stack([torch.isfinite(loss), finite_grads]).double(),
                    loss.detach().double().reshape(1) * len(y_used),
                    (scores.argmax(1) == y_used).sum().double().reshape(1),
                ]
            ).tolist()
            batch_ok, *verdicts, loss_ok, grads_ok, loss_total, step_correct = values
            where = f"in epoch {self.epoch + 1}, step {step}"
            if not batch_ok:
                raise NonFiniteError(
                    f"the training batch {where} holds NaN or infinity; clean the dataset "
                    "(the last good checkpoint is kept)"
                )
            checks.raise_first(verdicts)
            if not loss_ok:
                raise NonFiniteError(
                    f"loss became {loss_total / len(y_used)} {where} (lr "
                    f"{self.optimizer.param_groups[0]['lr']:.3g}); the last good checkpoint "
                    "is kept: lower optim.lr or set optim.grad_clip"
                )
            if not grads_ok:
                raise NonFiniteError(
                    f"gradients became NaN or infinite {where}; the weights were not updated "
                    "and the last good checkpoint is kept: lower optim.lr or set optim.grad_clip"
                )
            self.scaler.step(self.optimizer)  # a plain step unless float16 loss scaling is on
            self.scaler.update()
            self.iteration += 1
            loss_sum += loss_total
            correct += int(step_correct)
            seen += len(y_used)
            if bar is not None:
                bar.update(task, advance=1, loss=loss_sum / seen, acc=100 * correct / seen)
        reset_state(self.model)
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            # a hook's counter may be a device tensor, summed there and read here once
            **{k: v.item() if isinstance(v, torch.Tensor) else v for k, v in counters.items()},
        }

    def fit(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train until ``self.epochs`` (or, for tests of resuming, stop after ``stop_after``
        epochs of this call as if killed). Returns the final evaluation."""
        main = self.world.main
        progress_ctx = _progress(self.progress and main)
        eval_every = self.cfg["train"]["eval_every"]
        run_epochs = 0
        with progress_ctx as bar:
            while self.epoch < self.epochs:
                if stop_after is not None and run_epochs >= stop_after:
                    return {"stopped_after_epoch": self.epoch}
                self.hooks.on_epoch_start(self)
                task = None
                if bar is not None:
                    task = bar.add_task(
                        f"epoch {self.epoch + 1}/{self.epochs}",
                        total=self.iters_per_epoch,
                        loss=float("nan"),
                        acc=0.0,
                    )
                start = time.perf_counter()
                record = {"epoch": self.epoch + 1, **self.train_epoch(bar, task)}
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                record["seconds"] = time.perf_counter() - start
                self.epoch += 1
                last = self.epoch == self.epochs
                if (
                    main
                    and self.test_set is not None
                    and (last or (eval_every and self.epoch % eval_every == 0))
                ):
                    ev = self.hooks.evaluate(self, self.model, self.test_set)
                    record["test_accuracy"] = ev["accuracy"]
                    for key in ("loss", "theta"):
                        if key in ev:
                            record["test_loss" if key == "loss" else key] = ev[key]
                    if last:
                        self.final_eval = ev
                self.hooks.on_epoch_end(self, record)
                self.history.append(record)
                if bar is not None:  # keeps the line above the live progress bars
                    bar.console.print(_epoch_line(record))
                elif main:
                    self.log(_epoch_line(record))
                if main:
                    runfolder.save_epoch(
                        self.out_dir,
                        epoch=self.epoch,
                        model_state=self.model.state_dict(),
                        meta={**self.hooks.checkpoint_meta(self), "history": self.history},
                        trainer_state=self.trainer_state(),
                    )
                    runfolder.write_epoch_log(self.out_dir, self.history)
                    loggers.log_epoch(self)  # train.loggers: csv, tensorboard
                distributed.barrier()
                run_epochs += 1
        final = self.final_eval
        if main and final is None and self.test_set is not None:
            final = self.hooks.evaluate(self, self.model, self.test_set)
        return final or {}


def _finite_gradients(model: nn.Module, device: torch.device) -> torch.Tensor:
    """Whether every gradient is finite, as a boolean tensor on ``device`` (read with the step's
    other values)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()


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


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()  # enters as None: no bar
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
