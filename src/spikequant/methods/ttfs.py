r"""TTFS: time-to-first-spike networks trained with exact spike-time gradients
(:mod:`spikequant.temporal`).

Loss (``form``): ``code`` = softmax cross-entropy on ``-z`` (the authors' code), ``paper`` = the
printed eq. (5), plus ``l2`` / ``l2_conv`` weight penalties and the ``K``-weighted spike-time
regulariser. After backward each layer's gradient ``G`` is scaled by ``clip / n`` when
``n = ||G||_F / rows > clip`` (row-normalised clipping). Learning rate: linear from
``optim.lr`` (first epoch) to ``lr_end`` (last full-precision epoch); each further entry of
``bits`` (e.g. ``[32, 8, 4, 2]``) fine-tunes ``epochs_per_stage`` epochs with the forward pass
quantized to that many bits at ``stage_lr``; each stage's model is saved in ``OUT/bits<b>``.
Each epoch's data order comes from its own generator seeded ``1000 seed + epoch``. Training
batches are augmented as ``data.augment`` says (random crop, resized crop, flip of the pixels
before encoding; the paper's CIFAR-10 and ImageNet training); mixup is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..checkpoint import save_checkpoint
from ..errors import ConfigError
from ..options import OptionError, Options, option
from ..temporal.layers import FULL_PRECISION_BITS
from ..temporal.loss import LOSS_FORMS
from .base import Method, register_method


@dataclasses.dataclass(frozen=True)
class TTFSOptions(Options):
    """Options of ``method: {name: ttfs}``: loss form and weights, gradient clipping, learning-
    rate schedule and the weight-precision stages ``bits``."""

    form: str = option("code", choices=LOSS_FORMS)
    K: float = option(100.0, low=0)
    beta: float = option(1.0, low=0)
    l2: float = option(1e-3, low=0)
    l2_conv: float = option(1e-2, low=0)
    clip: float = option(10.0, low=0)
    lr_end: float | None = option(None, above=0)  # default optim.lr
    bits: list[int] = option(factory=lambda: [FULL_PRECISION_BITS])
    epochs_per_stage: int = option(1, low=1)
    stage_lr: float | None = option(None, above=0)  # default lr_end
    range_quantile: float = option(1.0, above=0, high=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bits or self.bits[0] != FULL_PRECISION_BITS or min(self.bits) < 2:
            raise OptionError("bits", f"must start with 32 and hold integers >= 2, got {self.bits}")


@register_method
class TTFS(Method):
    """``method: {name: ttfs}``: TTFS training with exact spike-time gradients (module
    docstring)."""

    name = "ttfs"
    Options = TTFSOptions
    spiking_model = False

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        from ..temporal.layers import FULL_PRECISION_BITS

        o = self.options
        lr = float(cfg["optim"]["lr"])
        lr_end = o.lr_end if o.lr_end is not None else lr
        stage_lr = o.stage_lr if o.stage_lr is not None else lr_end
        epochs = cfg["train"]["epochs"]
        self.plan: list[tuple[int, float]] = []  # (weight bits, learning rate) of every epoch
        for e in range(epochs):
            frac = e / (epochs - 1) if epochs > 1 else 0.0
            self.plan.append((FULL_PRECISION_BITS, lr + frac * (lr_end - lr)))
        for bits in o.bits[1:]:
            self.plan += [(bits, stage_lr)] * o.epochs_per_stage

    def total_epochs(self) -> int:
        return len(self.plan)

    @classmethod
    def check_recipe(cls, cfg: dict) -> None:
        super().check_recipe(cfg)
        if cfg["data"]["mixup_alpha"] > 0:
            raise ConfigError(
                "recipe: method ttfs classifies by the earliest output spike and has no mixed-"
                "label loss; set data.mixup_alpha to 0 (crop and flip in data.augment work)"
            )

    def datasets(self):
        """In-memory splits as float/int64 tensors; datasets decoded file by file (ImageNet)
        stream batch by batch."""
        sets = []
        for dataset in super().datasets():
            if isinstance(dataset, TensorDataset):
                X, y = dataset.tensors[:2]
                dataset = TensorDataset(X.float(), y.long())
            sets.append(dataset)
        return tuple(sets)

    def model_spec(self) -> dict:
        return {"name": self.cfg["model"]["name"], "kwargs": dict(self.cfg["model"]["kwargs"])}

    def prepare_model(self, model, dataset) -> None:
        pass

    # -- hooks
    def shuffle_generator(self, trainer, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg["seed"] * 1000 + epoch)

    def lr_factor(self, trainer, iteration: int) -> float:
        return self.plan[trainer.epoch][1] / float(self.cfg["optim"]["lr"])

    def on_epoch_start(self, trainer) -> None:
        from ..temporal.layers import set_weight_bits

        set_weight_bits(trainer.model, self.plan[trainer.epoch][0], self.options.range_quantile)

    @staticmethod
    def scores(out: torch.Tensor) -> torch.Tensor:
        return -out  # spike times: the earliest output spike is the class

    def criterion(self, trainer, x, y):
        from ..temporal.loss import ttfs_loss

        o = self.options
        if trainer.augment is not None:  # crop / flip of the pixels (mixup is refused)
            x, y = trainer.augment(x, y, trainer.generator)
        x, y = trainer.to_device(x), trainer.to_device(y)
        z_out = trainer.forward(x)
        loss = ttfs_loss(
            trainer.model, z_out, y, form=o.form, K=o.K, beta=o.beta, l2=o.l2, l2_conv=o.l2_conv
        )
        if o.form == "paper" and torch.isinf(loss):
            return None, -z_out, y  # the correct neuron never fired: eq. (5) is undefined
        return loss, -z_out, y

    def after_backward(self, trainer) -> dict[str, float]:
        from ..temporal.loss import clip_row_normalised

        norms = clip_row_normalised(trainer.model, self.options.clip)
        return {"clipped_grads": (norms > self.options.clip).sum()}  # read once per epoch

    def evaluate(self, trainer, model, dataset) -> dict[str, Any]:
        self.last_eval = super().evaluate(trainer, model, dataset)
        return self.last_eval

    @classmethod
    def evaluate_model(cls, model, dataset, batch_size: int) -> dict[str, Any]:
        """Accuracy, spiking fraction and energy (:mod:`spikequant.temporal.evaluate`), batch by
        batch (a dataset decoded file by file never sits in memory at once)."""
        from ..temporal.evaluate import evaluate_batches
        from ..train.trainer import batches

        return evaluate_batches(model, batches(dataset, batch_size, shuffle=False))

    def on_epoch_end(self, trainer, record: dict) -> None:
        bits = self.plan[trainer.epoch - 1][0]
        record["bits"] = bits
        if "test_accuracy" not in record:  # every TTFS epoch is evaluated (stage table)
            record["test_accuracy"] = self.evaluate(trainer, trainer.model, trainer.test_set)[
                "accuracy"
            ]
        record["fraction_spiking"] = self.last_eval["fraction_spiking"]
        last_of_stage = trainer.epoch == len(self.plan) or self.plan[trainer.epoch][0] != bits
        if last_of_stage and len(self.options.bits) > 1:
            meta = {**self.checkpoint_meta(trainer), "weight_bits": bits}
            save_checkpoint(trainer.out_dir / f"bits{bits}", trainer.model.state_dict(), meta)

    @classmethod
    def rebuild(cls, meta: dict) -> nn.Module:
        from ..temporal.layers import set_weight_bits
        from ..train.build import build_model

        model = build_model(meta["model"])
        if meta.get("weight_bits"):
            set_weight_bits(model, int(meta["weight_bits"]))
        return model

    def final_metrics(self, trainer, final: dict) -> dict[str, Any]:
        by_bits = {str(r["bits"]): r["test_accuracy"] for r in trainer.history}
        return {
            "weight_bits": self.plan[-1][0],
            "weight_range_quantile": self.options.range_quantile,
            "accuracy_by_bits": by_bits,
            "seconds_per_epoch": [r["seconds"] for r in trainer.history],
        }

    def checkpoint_meta(self, trainer) -> dict:
        bits = self.plan[min(trainer.epoch, len(self.plan)) - 1][0] if trainer.epoch else 32
        return {**super().checkpoint_meta(trainer), "weight_bits": bits}
