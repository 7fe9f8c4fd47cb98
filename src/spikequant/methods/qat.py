r"""QAT: train an ANN for conversion (optionally quantization-aware), then convert it.

Stages: (1) train the ANN (``L = CE(f(x), y)``; with ``model.kwargs.qat`` the weights and
activations are fake-quantized); (2) for a QAT model with BN, fold BN into the conv weights
(``w' = w gamma / sigma``, ``b' = beta + (b - mu) gamma / sigma``), rebuild the model without
BN and fine-tune the folded, re-quantized weights ``fold_epochs`` epochs at ``fold_lr`` (cosine
over the fine-tune); (3) with a ``convert`` option, convert with each listed method (rate,
MSAT, Ca-LIF) and sweep T, writing the report to ``convert.out`` (default: ``OUT/conversion``);
the sweep runs on the test split (its first ``data.test_subset`` images if set) and calibrates on
512 training images.

Stages 1 and 2 augment every training batch as the recipe's ``data.augment`` and
``data.mixup_alpha`` say, as the other methods do: per streamed batch, with randomness drawn from
the run's generator, so a resumed run repeats it exactly. Calibration and evaluation use the
plain images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..options import OptionError, Options, check_keys, option
from ..train.trainer import lr_factor
from .base import Method, register_method

CONVERT_KEYS = ("methods", "timesteps", "options", "out")
#: training images the conversion calibrates on (:func:`~spikequant.convert.compare_methods`)
CALIBRATION_IMAGES = 512


@dataclasses.dataclass(frozen=True)
class QATOptions(Options):
    """Options of ``method: {name: qat}``: BN-folding fine-tune epochs and learning rate, and
    the optional ``convert`` section (methods, timesteps, options, out)."""

    fold_epochs: int = option(2, low=0)
    fold_lr: float | None = option(None, above=0)  # default optim.lr / 10
    convert: dict | None = None  # {methods: [...], timesteps: [...], options: {...}, out: DIR}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.convert is not None:
            check_keys("method.convert", self.convert, CONVERT_KEYS)
            steps = self.convert.get("timesteps", [1])
            if not isinstance(steps, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 4096 for t in steps
            ):
                raise OptionError("convert.timesteps", "must be a list of integers in 1..4096")


@register_method
class QAT(Method):
    """``method: {name: qat}``: train a (quantization-aware) ANN, fold BN, then optionally
    convert it (module docstring)."""

    name = "qat"
    Options = QATOptions
    spiking_model = False

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        kwargs = cfg["model"]["kwargs"]
        self.folds = bool(kwargs.get("qat")) and bool(
            kwargs.get("bn", cfg["model"]["name"] != "ann_mlp")
        )
        self.main_epochs = cfg["train"]["epochs"]
        self.fold_epochs = self.options.fold_epochs if self.folds else 0
        self.folded = False
        self.metrics: dict[str, Any] = {}

    def total_epochs(self) -> int:
        return self.main_epochs + self.fold_epochs

    def model_spec(self) -> dict:
        kwargs = dict(self.cfg["model"]["kwargs"])
        if self.folded:
            kwargs["bn"] = False
        return {"name": self.cfg["model"]["name"], "kwargs": kwargs}

    def prepare_model(self, model, dataset) -> None:
        pass

    # -- hooks
    @staticmethod
    def scores(out: torch.Tensor) -> torch.Tensor:
        return out  # an ANN: [B, classes]

    def lr_factor(self, trainer, iteration: int) -> float:
        ipe = trainer.iters_per_epoch
        main = self.main_epochs * ipe
        if iteration < main:
            return lr_factor(self.cfg["schedule"], iteration, ipe, max(main, 1))
        fold_total = max(self.fold_epochs * ipe, 1)
        return lr_factor(self.cfg["schedule"], iteration - main, ipe, fold_total)

    def on_epoch_end(self, trainer, record: dict) -> None:
        if self.folds and trainer.epoch == self.main_epochs:
            self.metrics["accuracy_before_fold"] = self.evaluate(
                trainer, trainer.model, trainer.test_set
            )["accuracy"]
            self._fold(trainer, trainer.model)
            self.metrics["accuracy_after_fold"] = self.evaluate(
                trainer, trainer.model, trainer.test_set
            )["accuracy"]
            record.update(self.metrics)

    def on_resume(self, trainer, meta: dict) -> None:
        kwargs = meta.get("model", {}).get("kwargs", {})
        if self.folds and kwargs.get("bn") is False and not self.folded:
            self.folded = True
            trainer.replace_model(self.rebuild(meta), self._fold_optim())
        for row in meta.get("history", []):
            for key in ("accuracy_before_fold", "accuracy_after_fold"):
                if key in row:
                    self.metrics[key] = row[key]

    def _fold_optim(self) -> dict:
        lr = self.options.fold_lr or float(self.cfg["optim"]["lr"]) / 10
        return {**self.cfg["optim"], "lr": lr}

    def _fold(self, trainer, model: nn.Module) -> None:
        from ..convert.ann import fold_model

        folded, _ = fold_model(model, self.cfg["model"]["name"], dict(self.cfg["model"]["kwargs"]))
        self.folded = True
        trainer.replace_model(folded, self._fold_optim())

    def final_metrics(self, trainer, final: dict) -> dict[str, Any]:
        metrics = dict(self.metrics)
        if self.options.convert is not None:
            metrics.update(self._convert(trainer))
        return metrics

    def _convert(self, trainer) -> dict[str, Any]:
        """Stage 3: convert with every method/variant, sweep T, write the report."""
        from ..convert.evaluate import compare_methods, write_report
        from ..data import load_arrays

        ccfg = self.options.convert
        data = self.cfg["data"]
        x_train, _ = load_arrays(data["name"], "train", data["root"], limit=CALIBRATION_IMAGES)
        x_test, y_test = load_arrays(data["name"], "test", data["root"], limit=data["test_subset"])
        model = trainer.model.eval()
        kwargs = self.cfg["model"]["kwargs"]
        methods = ccfg.get("methods", ["calif" if kwargs.get("qat") else "rate"])
        timesteps = ccfg.get("timesteps", [8, 16, 32, 64, 128, 256])
        report = compare_methods(
            model, methods, x_train, x_test, y_test, timesteps, options=ccfg.get("options", {})
        )
        spec = self.model_spec()
        report.update({"checkpoint": str(trainer.out_dir), "model": spec, "dataset": data["name"]})
        metrics: dict[str, Any] = {}
        if "calif_exactness" in report:  # compared at the sweep's largest T
            metrics["calif_layer_mismatches"] = sum(
                v["mismatch_vs_decoded_input"] for v in report["calif_exactness"]["layers"].values()
            )
        out = ccfg.get("out") or trainer.out_dir / "conversion"
        paths = write_report(report, self.cfg["name"], out)
        metrics["conversion"] = {m: e["rows"] for m, e in report["methods"].items()}
        metrics["within_1_point_at_T"] = {
            m: {"first": e["within_1_point_at_T"], "settled": e["settled_within_1_point_at_T"]}
            for m, e in report["methods"].items()
        }
        metrics["reports"] = paths
        return metrics
