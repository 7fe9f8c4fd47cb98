import pickle

import numpy as np
import pytest
import torch

from spikequant.data import dataset_info, get_dataset, list_datasets, load_arrays
from spikequant.data.cifar import CIFAR10_MEAN, CIFAR10_STD, class_names
from spikequant.errors import DatasetNotFoundError

from .conftest import make_cifar10, make_cifar100


def test_registered():
    assert {"cifar10", "cifar100"} <= set(list_datasets())
    assert dataset_info("cifar100").num_classes == 100
    assert "data_batch_5" in dataset_info("cifar10").layout


def test_cifar10_fixture_roundtrip(tmp_path):
    written = make_cifar10(tmp_path)
    X, y = load_arrays("cifar10", "train", root=tmp_path)
    assert X.shape == (30, 3, 32, 32) and X.dtype == torch.float32
    assert y.dtype == torch.int64
    data, labels = written["train"]
    # channel-major layout: the first 1024 bytes are the red plane, row by row
    assert torch.equal(X[3, 0, 1, 2], torch.tensor(data[3, 32 + 2] / 255.0, dtype=torch.float32))
    assert torch.equal(X[4, 2, 31, 31], torch.tensor(data[4, 3071] / 255.0, dtype=torch.float32))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert 0.0 <= X.min() and X.max() <= 1.0
    Xt, yt = load_arrays("cifar10", "test", root=tmp_path)
    assert Xt.shape == (6, 3, 32, 32)
    assert torch.equal(yt, torch.from_numpy(written["test"][1].astype(np.int64)))
    Xv, _ = load_arrays("cifar10", "val", root=tmp_path)
    assert torch.equal(Xv, X[-3:])
    assert class_names("cifar10", root=tmp_path)[0] == "airplane"


def test_normalize_and_env_root(tmp_path, monkeypatch):
    make_cifar10(tmp_path)
    monkeypatch.setenv("SPIKEQUANT_DATA", str(tmp_path))
    raw, _ = load_arrays("cifar10", "test")
    norm, _ = load_arrays("cifar10", "test", normalize=True)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm, (raw - mean) / std)


def test_cifar100_fine_labels(tmp_path):
    written = make_cifar100(tmp_path)
    ds = get_dataset("cifar100", "test", root=tmp_path)
    assert len(ds) == 7
    x, y = ds[2]
    assert x.shape == (3, 32, 32)
    assert int(y) == int(written["test"][1][2])
    assert class_names("cifar100", root=tmp_path)[99] == "class99"


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_arrays("cifar10", "train", root=tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    for part in ("cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"):
        assert part in message


def test_partial_folder_names_missing_files(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_3"):
        load_arrays("cifar10", "test", root=tmp_path)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02garbage",
        b"",
        pickle.dumps([1, 2, 3], protocol=2),
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2),
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, protocol=2),
    ],
)
def test_damaged_batch_is_dataset_error_not_traceback(tmp_path, payload):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        load_arrays("cifar10", "test", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    make_cifar10(tmp_path)
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil()}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetNotFoundError, match="not a readable pickle"):
        load_arrays("cifar10", "test", root=tmp_path)


def test_str_keys_also_accepted(tmp_path):
    make_cifar10(tmp_path)
    batch = {"data": np.full((2, 3072), 255, np.uint8), "labels": [1, 2]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch))
    X, y = load_arrays("cifar10", "test", root=tmp_path)
    assert X.shape[0] == 2 and float(X.min()) == 1.0 and y.tolist() == [1, 2]
