"""Dataset registry: name -> loader of ``(X, y)`` tensors or a Dataset, plus static info."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    bundled: bool
    description: str
    loader: Callable[..., Any] = field(repr=False, compare=False)
    layout: str = ""  # expected folder layout for datasets read from disk


DATASETS: dict[str, DatasetInfo] = {}
# Each imports only the core packages at import time; the optional ones (mlxtend, librosa, tonic,
# ...) are imported through spikequant._optional when a loader runs.
_BUILTIN_MODULES = (
    "spikequant.data.digits",
    "spikequant.data.cifar",
    "spikequant.data.speech",
    "spikequant.data.events",
    "spikequant.data.mnist",
    "spikequant.data.images",
    "spikequant.data.text",
    "spikequant.data.waveform",
    "spikequant.data.canvas",
    "spikequant.data.gen1",
)


def register_dataset(
    name: str, *, num_classes: int, input_shape, bundled: bool, description: str, layout: str = ""
):
    """Register ``loader(split, root=None, **kw)`` returning ``(X, y)`` tensors or a Dataset."""

    def decorator(loader):
        DATASETS[name] = DatasetInfo(
            name, num_classes, tuple(input_shape), bundled, description, loader, layout
        )
        return loader

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def dataset_info(name: str) -> DatasetInfo:
    _load_builtins()
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


def list_datasets() -> list[str]:
    _load_builtins()
    return sorted(DATASETS)


def _check_split(split: str) -> None:
    if split not in ("train", "test", "val"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}")


def get_dataset(name: str, split: str = "train", root: str | None = None, **kwargs) -> Dataset:
    _check_split(split)
    result = dataset_info(name).loader(split, root=root, **kwargs)
    if isinstance(result, tuple):
        return TensorDataset(*result)
    return result


def load_arrays(
    name: str, split: str = "train", root: str | None = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as ``(X, y)`` tensors."""
    _check_split(split)
    result = dataset_info(name).loader(split, root=root, **kwargs)
    if isinstance(result, tuple):
        return result
    xs, ys = zip(*(result[i] for i in range(len(result))), strict=False)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)
