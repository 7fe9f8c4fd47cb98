"""Image datasets stored as one JPEG/PNG file per image: ImageNet, Tiny-ImageNet, Caltech-101.

Nothing is decoded up front: a split is a list of ``(path, label)`` pairs and each
``__getitem__`` opens one file with Pillow (the ``images`` extra), converts it to RGB, resizes
its shorter side to ``resize`` (bilinear), centre-crops ``size x size`` and returns float32
``[3, size, size] = byte / 255`` (or ``(x - mean) / std`` per channel with ``normalize=True``),
then applies ``transform`` (e.g. the per-sample augmentations of :mod:`spikequant.data.augment`).

Layouts (``<root>`` = ``root`` argument, else ``$SPIKEQUANT_DATA``, else ``./data``):

* ``imagenet``: ``<root>/imagenet/train/<wnid>/*.JPEG`` and ``<root>/imagenet/val/<wnid>/*.JPEG``
  (the ILSVRC-2012 archives with the validation images sorted into class folders, as the
  usual ``valprep.sh`` does). Labels: index of the wnid among the sorted train folders.
  ``test`` = the official validation set (ImageNet's test labels are not public); shorter side
  256, centre crop 224.
* ``tiny_imagenet``: ``<root>/tiny-imagenet-200/`` as extracted from ``tiny-imagenet-200.zip``:
  ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` with
  ``val/val_annotations.txt`` (tab-separated ``file wnid x y w h``). Labels: index of the wnid
  in the sorted ``wnids.txt``. ``test`` = the official (labelled) validation set; the official
  test images carry no labels and are never read. Images are 64 x 64, kept as they are.
* ``caltech101``: ``<root>/caltech101/101_ObjectCategories/<class>/image_<n>.jpg`` (the
  static Caltech-101 archive). ``BACKGROUND_Google`` is not a class, leaving 101. There is no
  official split: per class, a permutation of the sorted files seeded with 0 puts the first
  20 % (rounded up) in ``test`` and the rest in ``train``. Shorter side 256, centre crop 224.

``val`` is every tenth file (positions 9, 19, ...) of the sorted training list, so each class
is represented; it is a subset of ``train``, for monitoring only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetNotFoundError
from .paths import data_root
from .registry import register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
CALTECH_BACKGROUND = "BACKGROUND_Google"
CALTECH_TEST_FRACTION = 0.2
_SPLIT_SEED = 0

LAYOUTS = {
    "imagenet": "<root>/imagenet/train/<wnid>/*.JPEG and <root>/imagenet/val/<wnid>/*.JPEG",
    "tiny_imagenet": (
        "<root>/tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG "
        "and val/val_annotations.txt"
    ),
    "caltech101": "<root>/caltech101/101_ObjectCategories/<class>/*.jpg",
}
_TITLES = {"imagenet": "ImageNet", "tiny_imagenet": "Tiny-ImageNet", "caltech101": "Caltech-101"}


def _not_found(name: str, root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{_TITLES[name]} {problem}; expected under {root}: {LAYOUTS[name]} "
        f"(set root= or $SPIKEQUANT_DATA to the folder that holds it)"
    )


def _require_pil():
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            "decoding JPEG/PNG images needs Pillow: pip install 'spikequant[images]'"
        ) from None
    return Image


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
    )


def _class_folders(folder: Path, exclude: Sequence[str] = ()) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in exclude
    )


def _every_tenth(items: list) -> list:
    return items[9::10]


class ImageFileDataset(Dataset):
    """``(path, label)`` pairs decoded one at a time: shorter side -> ``resize``, centre crop
    ``size``, ``x = byte / 255`` (then per-channel ``(x - mean) / std`` if ``mean`` is given)."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        *,
        size: int,
        resize: int | None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        classes: Sequence[str] = (),
    ) -> None:
        if size < 1 or (resize is not None and resize < size):
            raise ConfigError(f"need 1 <= size <= resize, got size={size}, resize={resize}")
        self.samples = samples
        self.size = int(size)
        self.resize = resize
        self.mean = None if mean is None else torch.tensor(mean).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(-1, 1, 1)
        self.transform = transform
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, path: Path) -> torch.Tensor:
        Image = _require_pil()
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                width, height = img.size
                target = self.resize if self.resize is not None else self.size
                if self.resize is not None or min(width, height) < self.size:
                    scale = target / min(width, height)
                    new_size = (
                        max(target, round(width * scale)),
                        max(target, round(height * scale)),
                    )
                    img = img.resize(new_size, Image.BILINEAR)
                    width, height = img.size
                left, top = (width - self.size) // 2, (height - self.size) // 2
                img = img.crop((left, top, left + self.size, top + self.size))
                array = np.asarray(img, dtype=np.uint8)
        except OSError as exc:  # PIL raises OSError subclasses for truncated/unknown files
            raise DatasetNotFoundError(
                f"cannot decode image {path} ({type(exc).__name__}: {exc})"
            ) from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        x = self.decode(path)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(label)


def imagenet_samples(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    base = root / "imagenet"
    for part in ("train", "val"):
        if not (base / part).is_dir():
            raise _not_found("imagenet", root, f"folder {base / part} does not exist")
    classes = _class_folders(base / "train")
    if not classes:
        raise _not_found("imagenet", root, f"folder {base / 'train'} holds no class folders")
    index = {wnid: i for i, wnid in enumerate(classes)}
    part = "val" if split == "test" else "train"
    samples = []
    for wnid in _class_folders(base / part):
        if wnid not in index:
            raise _not_found("imagenet", root, f"val class folder {wnid} is not in train/")
        samples += [(path, index[wnid]) for path in _images_in(base / part / wnid)]
    if split == "val":
        samples = _every_tenth(samples)
    if not samples:
        raise _not_found("imagenet", root, f"the {split} split holds no images")
    return samples, classes


def tiny_imagenet_samples(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    base = root / "tiny-imagenet-200"
    if not base.is_dir():
        raise _not_found("tiny_imagenet", root, f"folder {base} does not exist")
    required = ["wnids.txt", "train", "val/images", "val/val_annotations.txt"]
    missing = [item for item in required if not (base / item).exists()]
    if missing:
        raise _not_found(
            "tiny_imagenet", root, f"{base} is incomplete (missing {', '.join(missing)})"
        )
    classes = sorted(line.strip() for line in (base / "wnids.txt").read_text().split() if line)
    index = {wnid: i for i, wnid in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    if split == "test":
        for number, line in enumerate(
            (base / "val" / "val_annotations.txt").read_text().splitlines()
        ):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise _not_found(
                    "tiny_imagenet", root, f"val_annotations.txt line {number + 1} is malformed"
                )
            path = base / "val" / "images" / fields[0]
            if not path.is_file():
                raise _not_found("tiny_imagenet", root, f"val image {fields[0]} is missing")
            samples.append((path, index[fields[1]]))
        samples.sort()
    else:
        for wnid in classes:
            samples += [(p, index[wnid]) for p in _images_in(base / "train" / wnid / "images")]
        if split == "val":
            samples = _every_tenth(samples)
    if not samples:
        raise _not_found("tiny_imagenet", root, f"the {split} split holds no images")
    return samples, classes


def caltech101_samples(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    base = root / "caltech101" / "101_ObjectCategories"
    if not base.is_dir():
        raise _not_found("caltech101", root, f"folder {base} does not exist")
    classes = _class_folders(base, exclude=(CALTECH_BACKGROUND,))
    if not classes:
        raise _not_found("caltech101", root, f"folder {base} holds no class folders")
    samples = []
    for label, name in enumerate(classes):
        files = _images_in(base / name)
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(files))
        n_test = math.ceil(CALTECH_TEST_FRACTION * len(files))
        chosen = order[:n_test] if split == "test" else order[n_test:]
        samples += [(files[i], label) for i in sorted(chosen)]
    if split == "val":
        samples = _every_tenth(samples)
    if not samples:
        raise _not_found("caltech101", root, f"the {split} split holds no images")
    return samples, classes


_SAMPLERS = {
    "imagenet": imagenet_samples,
    "tiny_imagenet": tiny_imagenet_samples,
    "caltech101": caltech101_samples,
}
_DEFAULT_SIZES = {"imagenet": (224, 256), "tiny_imagenet": (64, None), "caltech101": (224, 256)}


def load_image_folder(
    name: str,
    split: str,
    root=None,
    *,
    size=None,
    resize="default",
    normalize=False,
    transform=None,
) -> ImageFileDataset:
    _require_pil()
    folder = data_root(root).resolve()
    samples, classes = _SAMPLERS[name](folder, split)
    default_size, default_resize = _DEFAULT_SIZES[name]
    return ImageFileDataset(
        samples,
        size=int(size or default_size),
        resize=default_resize if resize == "default" else resize,
        mean=IMAGENET_MEAN if normalize else None,
        std=IMAGENET_STD if normalize else None,
        transform=transform,
        classes=classes,
    )


@register_dataset(
    "imagenet",
    num_classes=1000,
    input_shape=(3, 224, 224),
    bundled=False,
    description="ImageNet ILSVRC-2012 class folders (test = the official validation set)",
    layout=LAYOUTS["imagenet"],
)
def load_imagenet(split: str, root=None, **kwargs) -> ImageFileDataset:
    return load_image_folder("imagenet", split, root, **kwargs)


@register_dataset(
    "tiny_imagenet",
    num_classes=200,
    input_shape=(3, 64, 64),
    bundled=False,
    description="Tiny-ImageNet-200, 64 x 64 (100,000 train / 10,000 labelled val as test)",
    layout=LAYOUTS["tiny_imagenet"],
)
def load_tiny_imagenet(split: str, root=None, **kwargs) -> ImageFileDataset:
    return load_image_folder("tiny_imagenet", split, root, **kwargs)


@register_dataset(
    "caltech101",
    num_classes=101,
    input_shape=(3, 224, 224),
    bundled=False,
    description="static Caltech-101 (101 classes, seeded 80/20 split per class)",
    layout=LAYOUTS["caltech101"],
)
def load_caltech101(split: str, root=None, **kwargs) -> ImageFileDataset:
    return load_image_folder("caltech101", split, root, **kwargs)
