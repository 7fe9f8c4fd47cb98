"""CIFAR-10 and CIFAR-100 from the standard "python version" pickle batch folders.

Expected layout (the archives from https://www.cs.toronto.edu/~kriz/cifar.html, extracted)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

``<root>`` is the ``root`` argument, else ``$SPIKEQUANT_DATA``, else ``./data``.
Each batch is a pickled dict (bytes keys, written by Python 2) with ``b"data"``: uint8
``[N, 3072]`` (1024 red, 1024 green, 1024 blue values, row-major 32x32 each) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, 100 classes).

Returned images are float32 ``[3, 32, 32]`` with ``x = byte / 255`` in [0, 1]; with
``normalize=True`` each channel becomes ``(x - mean_c) / std_c`` with the usual per-channel
training-set statistics below. Splits: ``train`` (50,000), ``test`` (10,000) and ``val`` = the
last 10 % of ``train`` (a subset, for monitoring only).

The files are unpickled with a restricted unpickler that only accepts numpy arrays and plain
Python containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetNotFoundError
from .paths import data_root
from .registry import register_dataset

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_IMAGE_BYTES = 3 * 32 * 32

_SPECS = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "num_classes": 10,
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "num_classes": 100,
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
    },
}

# Globals a genuine CIFAR batch may reference: numpy's array reconstruction, plus the harmless
# ``_codecs.encode`` that Python 3 uses to pickle bytes at protocol 2 (re-saved copies).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def layout(name: str) -> str:
    spec = _SPECS[name]
    files = spec["train"] + spec["test"] + [spec["meta"]]
    return f"<root>/{spec['folder']}/ with {', '.join(files)}"


def _not_found(name: str, root: Path, problem: str) -> DatasetNotFoundError:
    spec = _SPECS[name]
    return DatasetNotFoundError(
        f"{spec['title']} {problem}; expected the python-pickle version under {root}: "
        f"{layout(name)} (set root= or $SPIKEQUANT_DATA to the folder holding "
        f"{spec['folder']}/)"
    )


def _unpickle(path: Path) -> dict:
    """Read one batch; keys come back as ``str`` whether the file used bytes or str keys."""
    try:
        with open(path, "rb") as fh:
            obj = _BatchUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any decoding failure means "not a CIFAR batch"
        raise ValueError(
            f"{path.name} is not a readable pickle batch ({type(exc).__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name} does not hold a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path.name} lacks the keys b'data' and b'{label_key}'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        raise ValueError(
            f"{path.name}: b'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path.name}: {len(labels)} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path.name}: labels outside 0..{num_classes - 1}")
    return data, labels


def _load_raw(name: str, folder: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    # The stat signature makes the memo notice files that were replaced since the last call.
    base = Path(folder) / _SPECS[name]["folder"]
    signature = tuple(
        (f, st.st_size, st.st_mtime_ns) if (st := _stat(base / f)) else (f,)
        for f in _SPECS[name][part]
    )
    return _load_raw_memo(name, folder, part, signature)


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None


@lru_cache(maxsize=4)
def _load_raw_memo(name: str, folder: str, part: str, signature) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 3072]`` and int64 labels of the train or test part, validated."""
    spec = _SPECS[name]
    base = Path(folder) / spec["folder"]
    root = Path(folder)
    if not base.is_dir():
        raise _not_found(name, root, f"folder {base} does not exist")
    expected = spec["train"] + spec["test"] + [spec["meta"]]
    missing = [f for f in expected if not (base / f).is_file()]
    if missing:
        raise _not_found(name, root, f"folder {base} is incomplete (missing {', '.join(missing)})")
    arrays, labels = [], []
    try:
        for filename in spec[part]:
            data, lab = _read_batch(base / filename, spec["label_key"], spec["num_classes"])
            arrays.append(data)
            labels.append(lab)
    except ValueError as exc:
        raise _not_found(name, root, f"file is damaged: {exc}") from None
    return np.concatenate(arrays), np.concatenate(labels)


def load_cifar(
    name: str, split: str, root=None, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)``: X float32 ``[N, 3, 32, 32]`` (``byte / 255``, or per-channel standardised with
    ``normalize=True``), y int64 ``[N]``."""
    folder = data_root(root).resolve()
    data, labels = _load_raw(name, str(folder), "test" if split == "test" else "train")
    if split == "val":
        start = len(data) - len(data) // 10
        data, labels = data[start:], labels[start:]
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    if normalize:
        spec = _SPECS[name]
        mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
        images = (images - mean) / std
    return images, torch.from_numpy(labels.copy())


def class_names(name: str, root=None) -> list[str]:
    """Label names from ``batches.meta`` / ``meta`` (fine label names for CIFAR-100)."""
    spec = _SPECS[name]
    folder = data_root(root).resolve()
    path = folder / spec["folder"] / spec["meta"]
    if not path.is_file():
        raise _not_found(name, folder, f"file {path} does not exist")
    try:
        meta = _unpickle(path)
    except ValueError as exc:
        raise _not_found(name, folder, f"file is damaged: {exc}") from None
    key = "label_names" if name == "cifar10" else "fine_label_names"
    names = meta.get(key)
    if not isinstance(names, list):
        raise _not_found(name, folder, f"{spec['meta']} lacks b'{key}'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


@register_dataset(
    "cifar10",
    num_classes=10,
    input_shape=(3, 32, 32),
    bundled=False,
    description="CIFAR-10 from the python-pickle batches (50,000 train / 10,000 test)",
    layout=layout("cifar10"),
)
def load_cifar10(split: str, root=None, normalize: bool = False):
    return load_cifar("cifar10", split, root=root, normalize=normalize)


@register_dataset(
    "cifar100",
    num_classes=100,
    input_shape=(3, 32, 32),
    bundled=False,
    description="CIFAR-100 (fine labels) from the python-pickle files (50,000 train / 10,000 test)",
    layout=layout("cifar100"),
)
def load_cifar100(split: str, root=None, normalize: bool = False):
    return load_cifar("cifar100", split, root=root, normalize=normalize)
