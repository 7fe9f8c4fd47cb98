"""Checkpoints: weights in safetensors plus a JSON metadata file, both written atomically.

A checkpoint is a folder::

    CHECKPOINT/model.safetensors   tensors (model state_dict; optional optimizer state in
                                   optimizer.pt written by the trainer)
    CHECKPOINT/meta.json           {"format": "spikequant-checkpoint/1", "model": {"name": ...,
                                   "kwargs": {...}}, ...free-form metadata...}

``model`` names a registered model so that :func:`load_model` can rebuild it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError
from .io import atomic_write_bytes, write_json

FORMAT = "spikequant-checkpoint/1"
WEIGHTS = "model.safetensors"
META = "meta.json"


def save_checkpoint(
    path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write weights then metadata (the metadata is the commit point: a folder with a valid
    meta.json always has the matching weights)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path / WEIGHTS, st_save(tensors))
    write_json(path / META, {"format": FORMAT, **meta})
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint folder; raise :class:`CheckpointError` naming what is wrong."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS, META):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(
            f"no checkpoint folder at {path} (expected {WEIGHTS} and {META} inside)"
        )
    meta_path, weights_path = path / META, path / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {p.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint metadata {meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a spikequant checkpoint (format {FORMAT!r})")
    try:
        state = st_load(weights_path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"checkpoint weights {weights_path} are corrupt: {exc}") from None
    return state, meta


def load_model(path: str | os.PathLike):
    """Rebuild the registered model named in the metadata and load its weights."""
    from .registry import create_model

    state, meta = load_checkpoint(path)
    spec = meta.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"checkpoint {path} does not name its model in meta.json")
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {path} do not fit model {spec['name']!r}: {exc}"
        ) from None
    return model, meta
