"""Where datasets read from disk live, and the on-disk feature cache they share.

Root resolution order: the ``root`` argument, then ``$SPIKEQUANT_DATA``, then ``./data``.
Derived features (MFCCs, event frames) are cached under ``<root>/.spikequant_cache/`` in files
whose name carries a hash of every parameter that changes their content, so changing a front-end
parameter never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes

DATA_ENV_VAR = "SPIKEQUANT_DATA"
CACHE_DIRNAME = ".spikequant_cache"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The dataset root: ``root`` if given, else ``$SPIKEQUANT_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(DATA_ENV_VAR) or "data").expanduser()


def params_key(params: dict[str, Any]) -> str:
    """A short stable hash of JSON-able parameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(root: Path, name: str, params: dict[str, Any]) -> Path:
    return root / CACHE_DIRNAME / f"{name}-{params_key(params)}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, KeyError):
        return None


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache file atomically; a read-only dataset folder only costs a warning."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        warnings.warn(f"could not write feature cache {path}: {exc}", stacklevel=3)
