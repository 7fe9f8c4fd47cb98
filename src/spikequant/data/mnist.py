"""Full MNIST (60,000 train / 10,000 test) from the four standard IDX files.

Expected layout (the files from the MNIST page, gzipped or not)::

    <root>/mnist/train-images-idx3-ubyte[.gz]   <root>/mnist/train-labels-idx1-ubyte[.gz]
    <root>/mnist/t10k-images-idx3-ubyte[.gz]    <root>/mnist/t10k-labels-idx1-ubyte[.gz]

``<root>`` is the ``root`` argument, else ``$SPIKEQUANT_DATA``, else ``./data``.

IDX format: a big-endian header ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = unsigned byte), then
``ndim`` big-endian uint32 sizes, then the values row-major. Images are ``[N, 28, 28]`` uint8,
labels ``[N]`` uint8. The split keeps the raw bytes (47 MB for train) and converts one image per
``__getitem__`` to float32 ``[1, 28, 28] = byte / 255``. ``val`` is the last 10 % of ``train``.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetNotFoundError
from .paths import data_root
from .registry import register_dataset

MNIST_FOLDER = "mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUT = f"<root>/{MNIST_FOLDER}/ with " + ", ".join(
    f"{name}[.gz]" for pair in _FILES.values() for name in pair
)
_UBYTE = 0x08


def _not_found(root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"MNIST {problem}; expected the IDX files under {root}: {LAYOUT} "
        f"(set root= or $SPIKEQUANT_DATA to the folder holding {MNIST_FOLDER}/)"
    )


def _find(base: Path, name: str) -> Path | None:
    for candidate in (base / name, base / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file (gzip detected by the ``.gz`` suffix); ValueError if the
    header or length is wrong."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path.name} cannot be read ({type(exc).__name__})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise ValueError(f"{path.name} does not start with an IDX magic number")
    if blob[2] != _UBYTE:
        raise ValueError(f"{path.name} holds IDX type 0x{blob[2]:02x}, not unsigned bytes (0x08)")
    ndim = blob[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(blob) < header:
        raise ValueError(f"{path.name} has a truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape))
    if len(blob) - header != count:
        raise ValueError(
            f"{path.name} holds {len(blob) - header} values but its header says {list(shape)}"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=2)
def _load_part(folder: str, part: str, signature) -> tuple[np.ndarray, np.ndarray]:
    root = Path(folder)
    base = root / MNIST_FOLDER
    paths = [_find(base, name) for name in _FILES[part]]
    try:
        images, labels = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _not_found(root, f"file is damaged: {exc}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _not_found(root, f"{paths[0].name} holds {list(images.shape)}, not [N, 28, 28]")
    if labels.shape != (images.shape[0],):
        raise _not_found(root, f"{len(labels)} labels for {images.shape[0]} images in {part}")
    if labels.size and labels.max() > 9:
        raise _not_found(root, f"{paths[1].name} holds labels outside 0..9")
    return images, labels.astype(np.int64)


def _raw(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    base = root / MNIST_FOLDER
    if not base.is_dir():
        raise _not_found(root, f"folder {base} does not exist")
    missing = [name for pair in _FILES.values() for name in pair if _find(base, name) is None]
    if missing:
        raise _not_found(root, f"folder {base} is incomplete (missing {', '.join(missing)})")
    paths = [_find(base, name) for name in _FILES[part]]
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _load_part(str(root), part, signature)


class MNISTDataset(Dataset):
    """Uint8 images kept as read; ``x = byte / 255`` as float32 ``[1, 28, 28]`` per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        x = torch.from_numpy(self.images[index].astype(np.float32) / 255.0).unsqueeze(0)
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(int(self.labels[index]))


@register_dataset(
    "mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    bundled=False,
    description="full MNIST from the IDX files (60,000 train / 10,000 test)",
    layout=LAYOUT,
)
def load_mnist(split: str, root=None, transform=None) -> MNISTDataset:
    """Dataset of ``(x [1, 28, 28] in [0, 1], label)``; ``transform`` maps each ``x``."""
    folder = data_root(root).resolve()
    images, labels = _raw(folder, "test" if split == "test" else "train")
    if split == "val":
        start = len(images) - len(images) // 10
        images, labels = images[start:], labels[start:]
    return MNISTDataset(images, labels, transform)
