"""Dataset registry: name -> loader of ``(X, y)`` tensors or a Dataset, plus static info."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

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


def limit_dataset(dataset: Dataset, limit: int | None) -> Dataset:
    """``limit`` samples of ``dataset`` (all if None): the first ones of an in-memory dataset;
    of a dataset decoded file by file (ImageNet, event recordings), ``limit`` spread evenly over
    it, because its files are sorted by class and the first ones would all be one class."""
    size = len(dataset)
    if limit is None or limit >= size:
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:limit] for t in dataset.tensors))
    return Subset(dataset, [i * size // limit for i in range(limit)])


def load_arrays(
    name: str, split: str = "train", root: str | None = None, limit: int | None = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as ``(X, y)`` tensors: all of it, or the ``limit`` samples of
    :func:`limit_dataset` (only those are decoded: a whole file dataset may not fit in memory)."""
    _check_split(split)
    result = dataset_info(name).loader(split, root=root, **kwargs)
    if isinstance(result, tuple):  # held in memory: the first ``limit``, as limit_dataset takes
        return limit_dataset(TensorDataset(*result), limit).tensors
    samples = limit_dataset(result, limit)
    xs, ys = zip(*(samples[i] for i in range(len(samples))), strict=False)
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)
