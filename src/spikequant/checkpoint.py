"""Checkpoints: weights in safetensors plus a JSON metadata file, both written atomically.

A checkpoint is a folder::

    CHECKPOINT/model.safetensors   tensors (model state_dict)
    CHECKPOINT/<extra files>       e.g. the trainer state of a training epoch (safetensors + JSON)
    CHECKPOINT/meta.json           {"format": "spikequant-checkpoint/1", "model": {"name": ...,
                                   "kwargs": {...}}, "files": {name: sha256, ...}, ...}

``model`` names a registered model so that :func:`load_model` can rebuild it. ``files`` holds
the SHA-256 of every other file of the folder; :func:`load_checkpoint` verifies them, so a
damaged or swapped file is refused instead of loaded.
"""

from __future__ import annotations

import hashlib
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write weights (and ``extra_files``) then metadata with their hashes: the metadata is the
    commit point, so a folder with a valid meta.json always has the matching files."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    files = {WEIGHTS: st_save(tensors), **(extra_files or {})}
    for name, data in files.items():
        atomic_write_bytes(path / name, data)
    hashes = {name: sha256(data) for name, data in files.items()}
    write_json(path / META, {"format": FORMAT, **meta, "files": hashes})
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
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"checkpoint metadata {meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a spikequant checkpoint (format {FORMAT!r})")
    hashes = meta.get("files", {})
    if not isinstance(hashes, dict):
        raise CheckpointError(f"{meta_path}: 'files' must map file names to SHA-256 hashes")
    for name, expected in hashes.items():
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise CheckpointError(f"{meta_path} lists {name!r}, not a file of the folder")
        try:
            actual = sha256((path / name).read_bytes())
        except OSError as exc:
            raise CheckpointError(f"checkpoint {path}: cannot read {name}: {exc}") from None
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {path}: {name} does not match its SHA-256 in {META} (damaged)"
            )
    upgrade_meta(meta)
    try:
        state = st_load(weights_path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"checkpoint weights {weights_path} are corrupt: {exc}") from None
    return state, meta


# Neuron keywords renamed since runs were first saved: {neuron: {old name: new name}}.
RENAMED_NEURON_KWARGS = {"qlif": {"tau": "decay"}}


def _rename_neuron_kwargs(section: Any) -> None:
    """In place, on a ``{"neuron", "neuron_kwargs"}`` mapping (a recipe's ``model`` section or a
    model spec's ``kwargs``)."""
    if not isinstance(section, dict):
        return
    renames = RENAMED_NEURON_KWARGS.get(section.get("neuron"), {})
    kwargs = section.get("neuron_kwargs")
    if not isinstance(kwargs, dict):
        return
    for old, new in renames.items():
        if old in kwargs and new not in kwargs:
            kwargs[new] = kwargs.pop(old)


def upgrade_recipe(recipe: Any) -> Any:
    """A stored recipe with renamed neuron keywords given their current names (in place)."""
    if isinstance(recipe, dict):
        _rename_neuron_kwargs(recipe.get("model"))
    return recipe


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint metadata written by older versions, in the current names (in place): the
    neuron keywords of the model spec and of the stored recipe (see ``RENAMED_NEURON_KWARGS``)."""
    spec = meta.get("model")
    if isinstance(spec, dict):
        _rename_neuron_kwargs(spec.get("kwargs"))
    upgrade_recipe(meta.get("recipe"))
    return meta


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
