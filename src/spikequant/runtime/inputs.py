"""Read one input for a program: a ``.npy`` array or an image file (PIL), as int32 codes.

A float array is quantized with the program's input scale (``clamp(round(x / scale), 0,
code_max)``); an integer array is taken as codes already. Accepted shapes: ``[C, H, W]`` or
``[1, C, H, W]`` (a static input, repeated over T) and ``[T, C, H, W]`` / ``[T, 1, C, H, W]``
(one frame per step). An image is read as 8-bit pixels ``p`` (grayscale for one channel, RGB for
three) and scaled to ``p / 255`` first. A Ca-LIF program (input kind ``isi``) takes one static
image; its float values become the pixels ``round(255 x)``, as its network reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ProgramError
from .format import Program

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")


def _quantize(program: Program, array: np.ndarray) -> np.ndarray:
    spec = program.header["input"]
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        codes = array.astype(np.int64)
    else:
        if not np.all(np.isfinite(array)):
            raise ProgramError("the input contains NaN or infinity")
        if spec["kind"] == "isi":  # as the Ca-LIF network reads an image: round(255 x)
            codes = np.rint(array.astype(np.float64) * spec["code_max"])
        else:
            codes = np.rint(array.astype(np.float64) / spec["scale"])
    return np.clip(codes, 0, spec["code_max"]).astype(np.int32)


def read_input(program: Program, path: str | Path) -> tuple[np.ndarray, bool]:
    """``(codes, static)``: ``codes[1, C, H, W]`` if static else ``codes[T, 1, C, H, W]``."""
    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"no input file at {path}")
    shape = tuple(program.header["input"]["shape"])
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ProgramError(f"{path} is not a plain .npy array ({exc})") from None
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            from PIL import Image
        except ImportError:
            raise ProgramError(
                "reading images needs Pillow (pip install pillow); or pass a .npy array"
            ) from None
        with Image.open(path) as image:
            mode = "L" if shape[0] == 1 else "RGB"
            array = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    else:
        raise ProgramError(f"input must be a .npy array or an image ({', '.join(IMAGE_SUFFIXES)})")
    if array.shape == shape:
        return _quantize(program, array)[None], True
    if array.shape == (1, *shape):
        return _quantize(program, array), True
    if program.header["input"]["kind"] == "isi":
        raise ProgramError(
            f"a Ca-LIF program takes one static image {list(shape)} (it ISI-codes it over T "
            f"steps itself), got shape {array.shape}"
        )
    if array.ndim == 4 and array.shape[1:] == shape:
        return _quantize(program, array)[:, None], False
    if array.ndim == 5 and array.shape[1:] == (1, *shape):
        return _quantize(program, array), False
    raise ProgramError(
        f"input of shape {array.shape} does not fit the program's input {list(shape)} "
        "(static [C, H, W] or frames [T, C, H, W])"
    )


__all__ = ["read_input"]
