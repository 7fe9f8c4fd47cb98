"""Reading and writing NIR files (HDF5) with spikequant's errors and atomic writes."""

from __future__ import annotations

import io
import os
from pathlib import Path

from .._optional import require
from ..errors import ConversionError
from ..io import atomic_write_bytes

nir = require("nir", "NIR export")


def write_nir(path: str | os.PathLike, graph: nir.NIRGraph) -> Path:
    """Serialise ``graph`` to ``path``; the file appears complete or not at all."""
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return atomic_write_bytes(path, buffer.getvalue())


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """Read a NIR file; a missing file raises FileNotFoundError, a malformed one ConversionError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NIR file at {path}")
    try:
        return nir.read(path)
    except (OSError, ValueError, KeyError, AssertionError, TypeError) as exc:
        raise ConversionError(f"{path} is not a readable NIR graph: {exc}") from None
