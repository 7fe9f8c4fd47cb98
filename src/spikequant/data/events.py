"""Event-camera datasets read from local folders and binned into binary frames with tonic.

Every sample becomes float32 ``[T, 2, 48, 48]``: events are sorted by time, their coordinates
scaled to 48 x 48 with ``tonic.transforms.Downsample(sensor_size, target_size=(48, 48))``
(coordinates are multiplied by ``48 / sensor side`` and truncated), split into ``T`` bins of
equal duration ``floor((t_last - t_first) / T)`` with ``tonic.transforms.ToFrame(n_time_bins=T)``
(tonic drops events at or after ``t_first + T * width``, e.g. the last event when the
span is a multiple of ``T``; a span shorter than ``T`` ticks is binned by
``floor((t - t_first) T / (span + 1))`` instead), and each count is binarised (``count > 0``).
Channel 0 holds OFF (p = 0) events, channel 1 ON (p = 1).

Nothing is downloaded. Layouts (``<root>`` = ``root`` argument, else ``$SPIKEQUANT_DATA``, else
``./data``):

* ``dvs_cifar10``: ``<root>/CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat`` (the original
  figshare release, AER-DAT 2.0 files, 128 x 128; 10 class folders airplane ... truck), or the
  ``.aedat4`` files of tonic's re-release in the same folders (needs the ``aedat`` package).
  Addresses decode as in the DVS128: ``x_raw = (a >> 1) & 127``, ``y_raw = (a >> 8) & 127``,
  ``p_raw = a & 1``; like common readers we store ``x = 127 - y_raw``, ``y = 127 - x_raw``,
  ``p = 1 - p_raw`` so objects appear upright. No official split: per class, the first 10 %
  of the files by index (``i = 0..99`` for the full set) are ``test``, the rest ``train``
  (the split of Duan et al., 2022, used by most later work).
* ``ncaltech101``: ``<root>/NCALTECH101/Caltech101/<class>/image_<n>.bin`` (tonic's layout of
  the Orchard et al. release; 40-bit ATIS events read by ``tonic.io.read_mnist_file``).
  Coordinates are shifted so the minimum is 0 (as tonic does) and taken on a 240 x 180
  sensor (events beyond it are dropped), so width and height are scaled by 48/240 and 48/180.
  Labels are indices into the sorted class folder names (101 in the full archive). Split as
  for DVS-CIFAR10: first 10 % of each class's files (sorted) ``test``.
* ``dvs_gesture``: ``<root>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy`` and
  ``.../ibmGestureTest/...`` (tonic's preprocessed release: one ``[N, 4]`` array of
  ``x, y, p, t`` per gesture, ``t`` in ms, 128 x 128). Labels 0..10 come from the file name;
  the train/test split is the official one.

``val`` is the last 10 % of each class's training files (a subset of ``train``). Frames are cached
bit-packed in ``<root>/.spikequant_cache/<name>-<split>-<hash>.npz`` keyed by ``T``, the frame
size and the file list (``cache=False`` converts every sample on access instead).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._optional import require
from ..errors import ConfigError, DatasetNotFoundError, SpikequantError
from .paths import cache_path, data_root, load_cached, save_cached
from .registry import register_dataset

FRAME_SIZE = 48
DEFAULT_TIMESTEPS = 10
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
GESTURE_CLASSES = (
    "hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
    "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise", "arm roll",
    "air drums", "air guitar", "other gestures",
)  # fmt: skip
NCALTECH_SENSOR = (240, 180)  # width, height after the per-sample shift to a zero minimum

EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])

LAYOUTS = {
    "dvs_cifar10": "<root>/CIFAR10DVS/<class>/*.aedat (or *.aedat4), class in airplane..truck",
    "ncaltech101": "<root>/NCALTECH101/Caltech101/<class>/*.bin",
    "dvs_gesture": "<root>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy and "
    "<root>/DVSGesture/ibmGestureTest/...",
}
TITLES = {
    "dvs_cifar10": "DVS-CIFAR10",
    "ncaltech101": "N-Caltech101",
    "dvs_gesture": "DVS128 Gesture",
}


def _not_found(name: str, root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{TITLES[name]} {problem}; expected under {root}: {LAYOUTS[name]} "
        f"(set root= or $SPIKEQUANT_DATA; nothing is downloaded)"
    )


def _structured(x, y, t, p) -> np.ndarray:
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


# --- readers: one file -> structured events (x, y, t, p) on the dataset's sensor ---------------


def read_dvs_cifar10(path: Path) -> np.ndarray:
    """One DVS-CIFAR10 recording: ``.aedat`` 2.0 via tonic's AER reader, or ``.aedat4``."""
    if path.suffix == ".aedat4":
        # tonic reads .aedat4 through the separate aedat package, which no extra installs
        require("aedat", f"{path.name} (.aedat4, unlike the original .aedat release)")
        raw = require("tonic.io", "the dvs_cifar10 dataset").read_aedat4(str(path))
        names = raw.dtype.names
        return _structured(
            raw[names[1]], raw[names[2]], raw[names[0]], raw[names[3]].astype(np.int64)
        )
    tonic_io = require("tonic.io", "the dvs_cifar10 dataset")
    version, data_start, _ = tonic_io.read_aedat_header_from_file(str(path))
    if not 2 <= version < 3:
        # AER-DAT 3.x packs DVS128 addresses differently; the original release is 2.0
        raise ValueError(f"AER-DAT version {version} is not supported (expected 2.x)")
    raw = tonic_io.get_aer_events_from_file(str(path), version, data_start)
    address = raw["address"].astype(np.int64)
    x_raw = (address >> 1) & 0x7F
    y_raw = (address >> 8) & 0x7F
    return _structured(
        127 - y_raw, 127 - x_raw, raw["timeStamp"].astype(np.int64), 1 - (address & 1)
    )


def read_ncaltech101(path: Path) -> np.ndarray:
    tonic_io = require("tonic.io", "the ncaltech101 dataset")
    raw = tonic_io.read_mnist_file(str(path), dtype=EVENT_DTYPE)
    if len(raw):
        raw["x"] -= raw["x"].min()
        raw["y"] -= raw["y"].min()
    return raw


def read_dvs_gesture(path: Path) -> np.ndarray:
    table = np.load(path, allow_pickle=False)
    if table.ndim != 2 or table.shape[1] != 4:
        raise ValueError(f"expected an [N, 4] array of x, y, p, t, got shape {list(table.shape)}")
    table = table.astype(np.int64)
    return _structured(table[:, 0], table[:, 1], table[:, 3] * 1000, table[:, 2])


# --- binning -----------------------------------------------------------------------------------


def events_to_frames(
    events: np.ndarray, sensor_size: tuple[int, int], timesteps: int, size: int = FRAME_SIZE
) -> np.ndarray:
    """Structured events on a ``sensor_size = (width, height)`` sensor -> binary float32
    ``[timesteps, 2, size, size]`` frames (see the module docstring for the binning rule)."""
    tt = require("tonic.transforms", "binning events into frames")

    width, height = sensor_size
    frames = np.zeros((timesteps, 2, size, size), dtype=np.float32)
    inside = (
        (events["x"] >= 0) & (events["x"] < width) & (events["y"] >= 0) & (events["y"] < height)
    )
    events = _structured(
        events["x"][inside], events["y"][inside], events["t"][inside], events["p"][inside]
    )
    if len(events) == 0:
        return frames
    events = events[np.argsort(events["t"], kind="stable")]
    events["p"] = events["p"] > 0
    events = tt.Downsample(sensor_size=(width, height, 2), target_size=(size, size))(events)
    span = int(events["t"][-1] - events["t"][0])
    if span < timesteps:
        # tonic's bin width floor(span / T) would be 0 and every bin empty; bin k holds the
        # events with floor((t - t_first) * T / (span + 1)) = k instead, which keeps them all
        bins = (events["t"] - events["t"][0]) * timesteps // (span + 1)
        frames[bins, events["p"], events["y"], events["x"]] = 1.0
        return frames
    counts = tt.ToFrame(sensor_size=(size, size, 2), n_time_bins=timesteps)(events)
    return (counts > 0).astype(np.float32)


# --- file lists and splits ---------------------------------------------------------------------


def _index_key(path: Path):
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


def _class_split(
    per_class: dict[int, list[Path]], split: str, test_fraction: float = 0.1
) -> list[tuple[Path, int]]:
    """Per class (files sorted by index): the first ``test_fraction`` (rounded half up, at least
    one file when the class has two or more) test, the rest train; val = the last 10 % of each
    class's train files (at least one)."""
    chosen: list[tuple[Path, int]] = []
    for label in sorted(per_class):
        files = sorted(per_class[label], key=_index_key)
        n_test = max(1, int(len(files) * test_fraction + 0.5)) if len(files) > 1 else 0
        part = files[:n_test] if split == "test" else files[n_test:]
        if split == "val":
            part = part[len(part) - len(part) // 10 :] if len(part) >= 10 else part[-1:]
        chosen.extend((f, label) for f in part)
    return chosen


def _list_dvs_cifar10(root: Path, split: str) -> list[tuple[Path, int]]:
    base = root / "CIFAR10DVS"
    if not base.is_dir():
        raise _not_found("dvs_cifar10", root, f"folder {base} does not exist")
    per_class: dict[int, list[Path]] = {}
    for label, cls in enumerate(CIFAR10_CLASSES):
        folder = base / cls
        files = (
            [p for p in folder.glob("*.aedat*") if p.suffix in (".aedat", ".aedat4")]
            if folder.is_dir()
            else []
        )
        if files:
            per_class[label] = files
    if not per_class:
        raise _not_found("dvs_cifar10", root, f"folder {base} holds no <class>/*.aedat files")
    return _class_split(per_class, split)


def _list_ncaltech101(root: Path, split: str) -> list[tuple[Path, int]]:
    base = root / "NCALTECH101" / "Caltech101"
    if not base.is_dir():
        raise _not_found("ncaltech101", root, f"folder {base} does not exist")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and any(p.glob("*.bin")))
    if not classes:
        raise _not_found("ncaltech101", root, f"folder {base} holds no <class>/*.bin files")
    return _class_split({i: list((base / c).glob("*.bin")) for i, c in enumerate(classes)}, split)


def _list_dvs_gesture(root: Path, split: str) -> list[tuple[Path, int]]:
    part = "ibmGestureTest" if split == "test" else "ibmGestureTrain"
    base = root / "DVSGesture" / part
    if not base.is_dir():
        raise _not_found("dvs_gesture", root, f"folder {base} does not exist")
    per_class: dict[int, list[Path]] = defaultdict(list)
    for path in sorted(base.glob("user*/*.npy")):
        if not path.stem.isdigit() or not 0 <= int(path.stem) < len(GESTURE_CLASSES):
            raise _not_found(
                "dvs_gesture", root, f"{path.relative_to(root)} is not named <label 0..10>.npy"
            )
        per_class[int(path.stem)].append(path)
    if not per_class:
        raise _not_found("dvs_gesture", root, f"folder {base} holds no user*/<label>.npy files")
    if split != "val":
        return [(p, label) for label in sorted(per_class) for p in per_class[label]]
    return [
        (p, label)
        for label in sorted(per_class)
        for p in per_class[label][len(per_class[label]) - max(1, len(per_class[label]) // 10) :]
    ]


_SOURCES: dict[str, tuple[Callable, Callable, tuple[int, int]]] = {
    "dvs_cifar10": (_list_dvs_cifar10, read_dvs_cifar10, (128, 128)),
    "ncaltech101": (_list_ncaltech101, read_ncaltech101, NCALTECH_SENSOR),
    "dvs_gesture": (_list_dvs_gesture, read_dvs_gesture, (128, 128)),
}


class EventFrames(Dataset):
    """``(frames, label)`` with frames float32 ``[T, 2, size, size]`` in {0, 1}.

    Samples are time-first; a DataLoader batch is ``[B, T, 2, H, W]``, so models that take
    ``[T, B, ...]`` need ``x.transpose(0, 1)``.
    """

    time_first_samples = True

    def __init__(
        self,
        name: str,
        split: str,
        root=None,
        timesteps: int = DEFAULT_TIMESTEPS,
        size: int = FRAME_SIZE,
        cache: bool = True,
    ):
        if name not in _SOURCES:
            raise ConfigError(f"unknown event dataset {name!r}; known: {sorted(_SOURCES)}")
        if int(timesteps) < 1 or int(size) < 1:
            raise ConfigError(f"timesteps and size must be >= 1, got {timesteps} and {size}")
        self.name, self.split = name, split
        self.timesteps, self.size = int(timesteps), int(size)
        self.root = data_root(root).resolve()
        lister, self._reader, self.sensor_size = _SOURCES[name]
        entries = lister(self.root, split)
        if not entries:
            raise _not_found(name, self.root, f"the {split} split is empty")
        self.files = [path for path, _ in entries]
        self.labels = torch.tensor([label for _, label in entries], dtype=torch.long)
        self._packed = self._load_or_build_cache() if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def _convert(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            events = self._reader(path)
        except SpikequantError:  # already one clear line (bad layout, missing package)
            raise
        except Exception as exc:  # a truncated or foreign file: report it, not a reader traceback
            raise _not_found(
                self.name,
                self.root,
                f"cannot read {path.relative_to(self.root)} ({type(exc).__name__}: {exc})",
            ) from None
        return events_to_frames(events, self.sensor_size, self.timesteps, self.size)

    def _load_or_build_cache(self) -> np.ndarray:
        key = {
            "timesteps": self.timesteps,
            "size": self.size,
            "files": [(str(p.relative_to(self.root)), p.stat().st_size) for p in self.files],
        }
        path = cache_path(self.root, f"{self.name}-{self.split}", key)
        cached = load_cached(path)
        if cached is not None and cached["bits"].shape[0] == len(self.files):
            return cached["bits"]
        bits = np.stack(
            [np.packbits(self._convert(i).astype(bool)) for i in range(len(self.files))]
        )
        save_cached(path, {"bits": bits})
        return bits

    def __getitem__(self, index: int):
        if self._packed is not None:
            count = self.timesteps * 2 * self.size * self.size
            flat = np.unpackbits(self._packed[index], count=count)
            frames = flat.reshape(self.timesteps, 2, self.size, self.size).astype(np.float32)
        else:
            frames = self._convert(index)
        return torch.from_numpy(frames), self.labels[index]


def time_first_collate(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn`` for event frames: ``[(x [T, 2, H, W], y), ...]`` ->
    ``(x [T, B, 2, H, W], y [B])``, the time-first layout spiking modules take."""
    frames = torch.stack([item[0] for item in batch], dim=1)
    labels = torch.as_tensor([int(item[1]) for item in batch], dtype=torch.long)
    return frames, labels


def _register(name: str, num_classes: int, description: str) -> None:
    def loader(
        split: str,
        root=None,
        timesteps: int = DEFAULT_TIMESTEPS,
        size: int = FRAME_SIZE,
        cache: bool = True,
    ):
        return EventFrames(name, split, root=root, timesteps=timesteps, size=size, cache=cache)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = (
        f"{TITLES[name]} as binary frames ``[T, 2, 48, 48]`` (see spikequant.data.events)."
    )
    register_dataset(
        name,
        num_classes=num_classes,
        input_shape=(2, FRAME_SIZE, FRAME_SIZE),
        bundled=False,
        description=description,
        layout=LAYOUTS[name],
    )(loader)


_register(
    "dvs_cifar10",
    10,
    "DVS-CIFAR10 event recordings, T binary 2-polarity 48x48 frames (9:1 split per class)",
)
_register(
    "ncaltech101",
    101,
    "N-Caltech101 event recordings, T binary 2-polarity 48x48 frames (9:1 split per class)",
)
_register(
    "dvs_gesture",
    11,
    "DVS128 Gesture (tonic's npy release), T binary 2-polarity 48x48 frames, official split",
)
