"""Detection sets built from the real ``mnist5k`` digits (no download).

* ``digits_canvas``: ``K`` (1 to ``max_digits``) real digits, each resized to a random side
  ``s`` in ``[min_scale, max_scale]`` pixels, pasted at random non-overlapping positions on a
  blank ``size x size`` canvas. Item ``i`` is ``(image [1, H, W], target)`` with ``target =
  {"boxes": float [K, 4], "labels": int64 [K]}``; boxes are ``(x1, y1, x2, y2)`` in pixels with
  the pixel-edge convention: the digit's non-zero pixels are exactly the rows ``y1 .. y2 - 1`` and
  columns ``x1 .. x2 - 1`` of the tight box (every border row/column of the box holds one).
* ``digits_canvas_events``: the same kind of scene, but each digit moves with its own constant
  non-zero integer velocity (each component at most ``max_speed`` pixels per step; a digit at
  rest would make no events) over ``T + 1`` frames ``f_0 .. f_T``;
  the events are the thresholded frame differences (an ideal DVS pixel)::

      ON_t  = 1[f_{t+1} - f_t >  threshold]      OFF_t = 1[f_t - f_{t+1} > threshold]

  giving binary ``[T, 2, H, W]`` (channel 0 = ON, 1 = OFF). The boxes are those of the last frame
  ``f_T`` (as Gen1 labels a box at the end of its event window).

Every scene is a pure function of ``(seed, split, index)`` (``numpy.random.default_rng``), so
item ``i`` is the same in every process. The digits come from the matching ``mnist5k`` split, so
the test scenes use only test digits. Scene ``i`` always contains source digit ``i mod N``; the
others are drawn at random. Digits never overlap (for events: their swept squares never overlap),
so each box holds one digit only.

``detection_collate`` batches these items for a DataLoader: images ``[B, C, H, W]`` (events
time-first ``[T, B, 2, H, W]``) and the list of target dicts (boxes vary in number).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError
from .registry import load_arrays, register_dataset

CANVAS_SIZE = 64
MAX_DIGITS = 3
MIN_SCALE, MAX_SCALE = 14, 28
EVENT_TIMESTEPS = 8
EVENT_THRESHOLD = 0.1
MAX_SPEED = 2
# resized strokes below this intensity are set to 0, so faint resampling halos do not widen boxes
INK_FLOOR = 0.05
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_PLACEMENT_TRIES = 100


def _digit_patch(image: np.ndarray, side: int) -> np.ndarray:
    """A ``28 x 28`` digit resized to ``side x side`` (bilinear, antialiased), halo removed."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    patch = F.interpolate(
        x, size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    patch = patch[0, 0].clamp(0, 1).numpy()
    patch[patch < INK_FLOOR] = 0.0
    return patch


def _tight_box(patch: np.ndarray) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)`` of the non-zero pixels of ``patch`` (edges; x2, y2 exclusive)."""
    rows = np.flatnonzero(patch.any(axis=1))
    cols = np.flatnonzero(patch.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


class DigitsCanvas(Dataset):
    """Scenes of real mnist5k digits with their boxes (see the module docstring).

    ``timesteps=0`` gives static images ``[1, H, W]``; ``timesteps=T >= 1`` gives moving digits
    as events ``[T, 2, H, W]``.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = CANVAS_SIZE,
        max_digits: int = MAX_DIGITS,
        min_scale: int = MIN_SCALE,
        max_scale: int = MAX_SCALE,
        length: int | None = None,
        seed: int = 0,
        timesteps: int = 0,
        max_speed: int = MAX_SPEED,
        threshold: float = EVENT_THRESHOLD,
    ) -> None:
        if not 1 <= max_digits <= 8:
            raise ConfigError(f"max_digits must be in 1..8, got {max_digits!r}")
        if not 4 <= min_scale <= max_scale <= size:
            raise ConfigError(
                f"need 4 <= min_scale <= max_scale <= size, got {min_scale}, {max_scale}, {size}"
            )
        if timesteps < 0 or max_speed < 0 or (timesteps and max_speed < 1):
            raise ConfigError("timesteps must be >= 0 and max_speed >= 1 (>= 0 for static scenes)")
        if timesteps and size - max_scale - timesteps * max_speed < 0:
            raise ConfigError(
                f"a {max_scale}-pixel digit moving {max_speed} pixels per step for {timesteps} "
                f"steps does not fit on a {size}-pixel canvas"
            )
        images, labels = load_arrays("mnist5k", split)
        self.images = images[:, 0].numpy()
        self.labels = labels.numpy()
        self.split = split
        self.size = int(size)
        self.max_digits = int(max_digits)
        self.min_scale, self.max_scale = int(min_scale), int(max_scale)
        self.length = len(self.images) if length is None else int(length)
        self.seed = int(seed)
        self.timesteps = int(timesteps)
        self.max_speed = int(max_speed) if timesteps else 0
        self.threshold = float(threshold)

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])

    def layout(self, index: int) -> list[dict]:
        """The scene's digits: source index, label, side, start corner ``(x, y)`` and velocity."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        rng = self._rng(index)
        count = int(rng.integers(1, self.max_digits + 1))
        sources = [index % len(self.images)]
        sources += [int(s) for s in rng.integers(0, len(self.images), size=count - 1)]
        steps = self.timesteps
        placed: list[dict] = []
        swept: list[tuple[int, int, int, int]] = []
        for source in sources:
            side = int(rng.integers(self.min_scale, self.max_scale + 1))
            for _ in range(_PLACEMENT_TRIES):
                vx, vy = (int(v) for v in rng.integers(-self.max_speed, self.max_speed + 1, 2))
                if steps and vx == vy == 0:
                    continue  # a digit at rest makes no events: it would be invisible
                # the square must stay on the canvas at t = 0 and t = T
                lo_x, hi_x = max(0, -vx * steps), self.size - side - max(0, vx * steps)
                lo_y, hi_y = max(0, -vy * steps), self.size - side - max(0, vy * steps)
                if hi_x < lo_x or hi_y < lo_y:
                    continue
                x, y = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
                ends = (x + vx * steps, y + vy * steps)
                rect = (
                    min(x, ends[0]),
                    min(y, ends[1]),
                    max(x, ends[0]) + side,
                    max(y, ends[1]) + side,
                )
                if all(_disjoint(rect, other) for other in swept):
                    swept.append(rect)
                    placed.append(
                        {
                            "source": source,
                            "label": int(self.labels[source]),
                            "side": side,
                            "x": x,
                            "y": y,
                            "velocity": (vx, vy),
                        }
                    )
                    break
        return placed

    def frames(self, index: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(frames [T + 1, H, W], boxes [K, 4] at the last frame, labels [K])``."""
        digits = self.layout(index)
        steps = self.timesteps
        frames = np.zeros((steps + 1, self.size, self.size), dtype=np.float32)
        boxes, labels = [], []
        for d in digits:
            patch = _digit_patch(self.images[d["source"]], d["side"])
            px1, py1, px2, py2 = _tight_box(patch)
            vx, vy = d["velocity"]
            for t in range(steps + 1):
                x, y = d["x"] + vx * t, d["y"] + vy * t
                frames[t, y : y + d["side"], x : x + d["side"]] = patch
            x, y = d["x"] + vx * steps, d["y"] + vy * steps
            boxes.append([x + px1, y + py1, x + px2, y + py2])
            labels.append(d["label"])
        return (
            frames,
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.long),
        )

    def __getitem__(self, index: int):
        frames, boxes, labels = self.frames(index)
        target = {"boxes": boxes, "labels": labels}
        if self.timesteps == 0:
            return torch.from_numpy(frames[0])[None], target
        return frames_to_events(torch.from_numpy(frames), self.threshold), target


def frames_to_events(frames: torch.Tensor, threshold: float = EVENT_THRESHOLD) -> torch.Tensor:
    """Ideal DVS events from ``frames [T + 1, H, W]``: ``[T, 2, H, W]`` float 0/1 with
    ``ON_t = 1[f_{t+1} - f_t > threshold]`` (channel 0) and ``OFF_t = 1[f_t - f_{t+1} >
    threshold]`` (channel 1)."""
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ConfigError(f"frames must be [T + 1 >= 2, H, W], got {tuple(frames.shape)}")
    diff = frames[1:] - frames[:-1]
    return torch.stack([diff > threshold, -diff > threshold], dim=1).to(torch.float32)


def detection_collate(batch) -> tuple[torch.Tensor, list[dict]]:
    """DataLoader ``collate_fn`` for detection items ``(x, {"boxes", "labels"})``: images
    ``[C, H, W]`` stack to ``[B, C, H, W]``, event clips ``[T, C, H, W]`` to the time-first
    ``[T, B, C, H, W]``; the targets (a different number of boxes each) stay a list of dicts."""
    xs = [item[0] for item in batch]
    time_first = xs[0].ndim == 4
    x = torch.stack(xs, dim=1 if time_first else 0)
    return x, [item[1] for item in batch]


@register_dataset(
    "digits_canvas",
    num_classes=10,
    input_shape=(1, CANVAS_SIZE, CANVAS_SIZE),
    bundled=True,
    description="detection: 1-3 real mnist5k digits on a 64x64 canvas, boxes + labels",
)
def load_digits_canvas(split: str, root=None, **kwargs) -> DigitsCanvas:
    """``DigitsCanvas(split, **kwargs)`` of static ``[1, 64, 64]`` scenes (items are
    ``(image, {"boxes", "labels"})``; batch with :func:`detection_collate`)."""
    kwargs.setdefault("timesteps", 0)
    return DigitsCanvas(split, **kwargs)


@register_dataset(
    "digits_canvas_events",
    num_classes=10,
    input_shape=(2, CANVAS_SIZE, CANVAS_SIZE),
    bundled=True,
    description="detection: 1-3 moving real mnist5k digits as ON/OFF events [T, 2, 64, 64]",
)
def load_digits_canvas_events(split: str, root=None, **kwargs) -> DigitsCanvas:
    """``DigitsCanvas(split, timesteps=8, **kwargs)``: moving digits as events ``[T, 2, 64,
    64]`` with the boxes of the last frame."""
    kwargs.setdefault("timesteps", EVENT_TIMESTEPS)
    if kwargs["timesteps"] < 1:
        raise ConfigError("digits_canvas_events needs timesteps >= 1")
    return DigitsCanvas(split, **kwargs)


__all__ = ["DigitsCanvas", "detection_collate", "frames_to_events"]
