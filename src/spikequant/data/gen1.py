"""Prophesee Gen1 Automotive Detection (de Tournemire et al., 2020) from its released files.

Expected layout (the dataset's own folders and file names)::

    <root>/gen1/{train,val,test}/<recording>_td.dat      events
    <root>/gen1/{train,val,test}/<recording>_bbox.npy    boxes

``<root>`` is the ``root`` argument, else ``$SPIKEQUANT_DATA``, else ``./data``.

**Events (``_td.dat``, Prophesee DAT).** A text header of lines starting with ``%`` (e.g.
``% Height 240``, ``% Width 304``, ``% Version 2``), then one byte event type and one byte event
size (8), then the events as little-endian pairs ``(uint32 t, int32 word)`` with ``t`` in
microseconds and ``x = word & 0x3FFF``, ``y = (word & 0x0FFFC000) >> 14``,
``p = (word & 0x10000000) >> 28`` (1 = ON).

**Boxes (``_bbox.npy``).** A numpy structured array (read with ``allow_pickle=False``) with
fields ``t`` (or ``ts`` in the first release; microseconds), ``x, y, w, h`` (top-left corner
and size in pixels), ``class_id`` (0 = car, 1 = pedestrian), ``confidence``, ``track_id``.

Each item of ``gen1`` is one labelled instant ``t_k`` of a recording: the events of the window
``[t_k - window, t_k)`` binned into ``T`` binary frames ``[T, 2, 240, 304]`` (ON, OFF; a pixel is
1 where it saw at least one event of that polarity in the bin) and the boxes at ``t_k`` as
``{"boxes": float [K, 4] xyxy, "labels": int64 [K]}`` (batch with
:func:`spikequant.data.canvas.detection_collate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetNotFoundError
from .paths import data_root
from .registry import register_dataset

GEN1_FOLDER = "gen1"
HEIGHT, WIDTH = 240, 304
CLASSES = ("car", "pedestrian")
LAYOUT = (
    f"<root>/{GEN1_FOLDER}/{{train,val,test}}/ with <recording>_td.dat (events) and "
    "<recording>_bbox.npy (boxes) per recording"
)
_X_MASK, _Y_MASK, _P_MASK = 0x00003FFF, 0x0FFFC000, 0x10000000
_EVENT = np.dtype([("t", "<u4"), ("word", "<i4")])
DEFAULT_WINDOW_US = 50_000
DEFAULT_TIMESTEPS = 5


def _dat_layout(path: Path) -> tuple[int, dict]:
    """Byte offset of the first event and the header's ``key: value`` pairs."""
    header: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as fh:
        while True:
            line = fh.readline()
            if not line.startswith(b"%"):
                break
            if not line.endswith(b"\n"):
                raise ValueError(f"{path.name}: the header never ends")
            words = line[1:].decode("latin-1").strip().split(maxsplit=1)
            if words:
                header[words[0]] = words[1] if len(words) > 1 else ""
            offset += len(line)
        if header:  # DAT files with a header name their event type and size in two bytes
            fh.seek(offset)
            kind_size = fh.read(2)
            if len(kind_size) < 2:
                raise ValueError(f"{path.name}: missing event type and size")
            if kind_size[1] != _EVENT.itemsize:
                raise ValueError(f"{path.name}: events of {kind_size[1]} bytes, expected 8")
            offset += 2
    if (path.stat().st_size - offset) % _EVENT.itemsize:
        raise ValueError(f"{path.name}: truncated event data")
    return offset, header


def _decode(raw: np.ndarray) -> np.ndarray:
    word = np.asarray(raw["word"])
    events = np.empty(len(raw), dtype=[("t", "<u8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    events["t"] = raw["t"]
    events["x"] = word & _X_MASK
    events["y"] = (word & _Y_MASK) >> 14
    events["p"] = (word & _P_MASK) >> 28
    return events


def read_dat_events(
    path: str | Path, start: int | None = None, stop: int | None = None
) -> tuple[np.ndarray, dict]:
    """Events of a Prophesee DAT file as a structured array ``(t uint64 us, x, y int16, p uint8)``
    and the header's ``key: value`` pairs (module docstring); ValueError if malformed.

    With ``start``/``stop`` only the events with ``start <= t < stop`` are decoded: the file is
    memory-mapped and the window found by binary search on the (sorted) timestamps, so a window
    of a long recording costs what the window holds."""
    path = Path(path)
    offset, header = _dat_layout(path)
    count = (path.stat().st_size - offset) // _EVENT.itemsize
    if count == 0:
        return _decode(np.zeros(0, dtype=_EVENT)), header
    raw = np.memmap(path, dtype=_EVENT, mode="r", offset=offset, shape=(count,))
    lo = 0 if start is None else int(np.searchsorted(raw["t"], start, side="left"))
    hi = count if stop is None else int(np.searchsorted(raw["t"], stop, side="left"))
    return _decode(np.array(raw[lo : max(lo, hi)])), header


def read_bbox_npy(path: str | Path) -> np.ndarray:
    """Boxes of a ``_bbox.npy`` file as ``(t uint64, x, y, w, h float32, class_id uint8)``
    (``ts`` is renamed ``t``); ValueError on a missing field."""
    boxes = np.load(Path(path), allow_pickle=False)
    names = boxes.dtype.names or ()
    time_field = "t" if "t" in names else "ts"
    missing = {time_field, "x", "y", "w", "h", "class_id"} - set(names)
    if missing:
        raise ValueError(f"{Path(path).name}: no field(s) {sorted(missing)} (has {names})")
    out = np.empty(
        len(boxes),
        dtype=[
            ("t", "<u8"),
            ("x", "<f4"),
            ("y", "<f4"),
            ("w", "<f4"),
            ("h", "<f4"),
            ("class_id", "u1"),
        ],
    )
    out["t"] = boxes[time_field]
    for name in ("x", "y", "w", "h", "class_id"):
        out[name] = boxes[name]
    return out


def events_to_binary_frames(
    events: np.ndarray, start: int, stop: int, timesteps: int, height: int, width: int
) -> torch.Tensor:
    """Binary frames ``[T, 2, H, W]`` of the events with ``start <= t < stop``: bin
    ``floor(T (t - start) / (stop - start))``, channel 0 = ON (p = 1), 1 = OFF."""
    chosen = events[(events["t"] >= start) & (events["t"] < stop)]
    frames = torch.zeros(timesteps, 2, height, width)
    if len(chosen):
        bins = ((chosen["t"] - start) * timesteps // max(stop - start, 1)).astype(np.int64)
        channel = 1 - chosen["p"].astype(np.int64)
        inside = (chosen["x"] < width) & (chosen["y"] < height)
        index = (
            torch.from_numpy(bins[inside]),
            torch.from_numpy(channel[inside]),
            torch.from_numpy(chosen["y"][inside].astype(np.int64)),
            torch.from_numpy(chosen["x"][inside].astype(np.int64)),
        )
        frames[index] = 1.0
    return frames


class Gen1Detection(Dataset):
    """One item per labelled instant of each recording (module docstring)."""

    def __init__(
        self,
        split: str,
        root=None,
        *,
        window_us: int = DEFAULT_WINDOW_US,
        timesteps: int = DEFAULT_TIMESTEPS,
    ) -> None:
        base = data_root(root)
        folder = base / GEN1_FOLDER / split
        recordings = sorted(folder.glob("*_td.dat")) if folder.is_dir() else []
        if not recordings:
            raise DatasetNotFoundError(
                f"Prophesee Gen1 split {split!r} not found under {base}: expected {LAYOUT} "
                f"(set root= or $SPIKEQUANT_DATA to the folder holding {GEN1_FOLDER}/)"
            )
        self.window_us = int(window_us)
        self.timesteps = int(timesteps)
        self.items: list[tuple[Path, int]] = []
        self._boxes: dict[Path, np.ndarray] = {}
        for events_path in recordings:
            boxes_path = events_path.with_name(events_path.name[: -len("_td.dat")] + "_bbox.npy")
            if not boxes_path.is_file():
                raise DatasetNotFoundError(
                    f"Gen1 recording {events_path.name} has no {boxes_path.name}"
                )
            boxes = read_bbox_npy(boxes_path)
            self._boxes[events_path] = boxes
            self.items += [(events_path, int(t)) for t in np.unique(boxes["t"])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, t = self.items[index]
        start = max(0, t - self.window_us)
        events, header = read_dat_events(path, start, t)
        height = int(header.get("Height", HEIGHT))
        width = int(header.get("Width", WIDTH))
        frames = events_to_binary_frames(events, start, t, self.timesteps, height, width)
        boxes = self._boxes[path]
        now = boxes[boxes["t"] == t]
        xyxy = np.stack([now["x"], now["y"], now["x"] + now["w"], now["y"] + now["h"]], axis=1)
        target = {
            "boxes": torch.from_numpy(xyxy.astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(now["class_id"].astype(np.int64)),
        }
        return frames, target


@register_dataset(
    "gen1",
    num_classes=len(CLASSES),
    input_shape=(2, HEIGHT, WIDTH),
    bundled=False,
    description="Prophesee Gen1 automotive detection (cars, pedestrians), binary event frames",
    layout=LAYOUT,
)
def load_gen1(split: str, root=None, **kwargs) -> Gen1Detection:
    """:class:`Gen1Detection` of a local copy of the released files."""
    return Gen1Detection(split, root, **kwargs)


__all__ = ["Gen1Detection", "events_to_binary_frames", "read_bbox_npy", "read_dat_events"]
