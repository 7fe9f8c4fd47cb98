"""Per-epoch metric loggers of a run folder, chosen by the recipe's ``train.loggers``.

* ``jsonl`` (always on): ``OUT/metrics.jsonl``, one JSON line per epoch, written by the trainer
  itself (:func:`spikequant.runfolder.write_epoch_log`); the run folder's own record.
* ``csv``: ``OUT/metrics.csv``, one row per epoch, one column per key seen in any epoch. Rewritten
  whole from the history after every epoch, so a resumed run never repeats the rows of the
  epochs a kill undid.
* ``tensorboard``: event files under ``OUT/tensorboard/`` (``torch.utils.tensorboard``, needs
  the ``tensorboard`` package), one scalar per numeric key at step = epoch. Nested dicts (e.g.
  per-layer thresholds) become ``key/sub`` tags.

Only the main process logs (the trainer calls :func:`log_epoch` on rank 0).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from ..io import atomic_write_bytes

LOGGERS = ("jsonl", "csv", "tensorboard")
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


def check_available(names: list[str]) -> None:
    """Raise a one-line :class:`MissingDependencyError` if a chosen logger's package is missing."""
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is None:
        raise MissingDependencyError(
            "recipe: train.loggers includes tensorboard but the tensorboard package is not "
            "installed: pip install tensorboard"
        )


def flatten_record(record: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; lists and other values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_record(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def csv_text(history: list[dict]) -> str:
    """The CSV of ``history``: columns in first-seen order, an empty cell where an epoch lacks a
    key (e.g. test accuracy between ``eval_every`` epochs)."""
    rows = [flatten_record(r) for r in history]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


class EpochLoggers:
    """The loggers of one run folder; :meth:`write` after every epoch with the whole history."""

    def __init__(self, run_dir: Path, names: list[str]) -> None:
        check_available(names)
        self.run_dir = Path(run_dir)
        self.names = list(names)
        self._tensorboard = None

    def write(self, history: list[dict]) -> None:
        if not history:
            return
        if "csv" in self.names:
            atomic_write_bytes(self.run_dir / CSV_FILE, csv_text(history).encode())
        if "tensorboard" in self.names:
            self._write_tensorboard(history[-1])

    def _write_tensorboard(self, record: dict) -> None:
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        step = int(record["epoch"])
        for tag, value in flatten_record(record).items():
            if tag == "epoch" or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tensorboard.add_scalar(tag, value, global_step=step)
        self._tensorboard.flush()  # a kill must not lose the epoch

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def log_epoch(trainer) -> None:
    """Write the trainer's history to the recipe's loggers (created on first use and kept on
    the trainer, so the tensorboard writer opens one event file per process)."""
    loggers = getattr(trainer, "_epoch_loggers", None)
    if loggers is None:
        names = trainer.cfg["train"].get("loggers", ["jsonl"])
        loggers = trainer._epoch_loggers = EpochLoggers(trainer.out_dir, names)
    loggers.write(trainer.history)
    if trainer.epoch >= trainer.epochs:
        loggers.close()
