"""Fixtures that write tiny datasets in the real on-disk formats into tmp_path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from spikequant.data.events import CIFAR10_CLASSES


def write_cifar_batch(
    path: Path, data: np.ndarray, labels, label_key: bytes, extra: dict | None = None
) -> None:
    """One batch as the real files store it: a protocol-2 pickle of a dict with bytes keys."""
    batch = {
        b"batch_label": b"fixture",
        b"data": data,
        label_key: list(map(int, labels)),
        b"filenames": [b"x.png"] * len(data),
    }
    batch.update(extra or {})
    path.write_bytes(pickle.dumps(batch, protocol=2))


def make_cifar10(root: Path, per_batch: int = 6, seed: int = 0) -> dict:
    """A CIFAR-10 folder with 5 train batches and a test batch of ``per_batch`` images each."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(base / name, data, labels, b"labels")
        part = "test" if name == "test_batch" else "train"
        written[part][0].append(data)
        written[part][1].append(labels)
    meta = {
        b"label_names": [n.encode() for n in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {part: (np.concatenate(d), np.concatenate(lab)) for part, (d, lab) in written.items()}


def make_cifar100(root: Path, n: int = 7, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    written = {}
    for part in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n)
        coarse = fine // 5
        write_cifar_batch(
            base / part, data, fine, b"fine_labels", {b"coarse_labels": list(map(int, coarse))}
        )
        written[part] = (data, fine)
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    (base / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def make_imagenet(root: Path, wnids, seed: int = 0) -> None:
    """ImageNet class folders under ``root/imagenet``: 2 train and 1 validation JPEG (48x40, random
    pixels) per class of ``wnids``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for wnid in wnids:
        for split, count in (("train", 2), ("val", 1)):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
