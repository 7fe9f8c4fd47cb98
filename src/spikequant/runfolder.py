"""Run folders: where a training run keeps its checkpoints, and the rules that keep them safe.

Layout of a run folder ``OUT``::

    OUT/run.json                      recipe (resolved), the overrides given, method, format
    OUT/.lock                         held by the one process writing the run
    OUT/latest.json                   {"epoch": N, "checkpoint": "checkpoints/epoch_000N"}
    OUT/checkpoints/epoch_000N/       one complete epoch (see :func:`save_epoch`)
    OUT/metrics.json                  final metrics, written when the run ends
    OUT/metrics.jsonl                 one JSON line per finished epoch

Guarantees, each tested in ``tests/core/test_runfolder.py``:

* nothing read from a run folder can execute code: weights and trainer state are safetensors,
  everything else is JSON (no pickle);
* every path read from a run's JSON is confined to ``OUT/checkpoints`` (an absolute path, ``..``
  or a link leading elsewhere is refused), and only folders named ``epoch_NNNN`` inside it are
  ever deleted;
* an epoch is committed by its ``meta.json``, written last, which holds the SHA-256 of every other
  file of the epoch; a damaged newest epoch falls back to the previous one with a warning;
* one writer at a time (the lock file), and a folder that holds a run is only reused with
  ``resume`` or ``overwrite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .checkpoint import load_checkpoint, save_checkpoint, upgrade_recipe
from .errors import CheckpointError, RunFolderError
from .io import atomic_write_bytes, write_json

RUN_FORMAT = "spikequant-run/1"
RUN_FILE = "run.json"
LATEST = "latest.json"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"
EPOCH_LOG = "metrics.jsonl"
TRAINER_STATE = "trainer_state"
KEEP_EPOCHS = 2  # the newest epoch and one good fallback
_EPOCH_DIR = re.compile(r"^epoch_(\d{4,})$")
# Files that make a folder "hold a run": train refuses to write over them by accident (a
# run.json alone is a run that failed before its first epoch: nothing to lose).
RUN_MARKERS = (LATEST, METRICS, "meta.json")


# ----------------------------------------------------------------------------- paths


def confine(run_dir: Path, relative: Any) -> Path:
    """``run_dir / relative`` if it names an epoch folder inside ``run_dir/checkpoints``; raise
    :class:`CheckpointError` otherwise (absolute paths, ``..``, links out, other names)."""
    if not isinstance(relative, str) or not relative:
        raise CheckpointError(f"{run_dir / LATEST}: checkpoint must be a relative path string")
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise CheckpointError(
            f"{run_dir / LATEST} names {relative!r}, outside the run folder: refused"
        )
    root = (run_dir / CHECKPOINTS).resolve()
    target = (run_dir / candidate).resolve()
    if target.parent != root or not _EPOCH_DIR.match(target.name):
        raise CheckpointError(
            f"{run_dir / LATEST} names {relative!r}, not an epoch folder under "
            f"{CHECKPOINTS}/: refused"
        )
    return run_dir / CHECKPOINTS / target.name


def epoch_folders(run_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, folder)`` of every epoch folder under ``checkpoints/``, newest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _EPOCH_DIR.match(child.name)
        if match and child.is_dir() and not child.is_symlink():
            found.append((int(match.group(1)), child))
    return sorted(found, reverse=True)


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run (a latest-checkpoint pointer, metrics, checkpoint
    metadata or an epoch folder)."""
    return run_dir.is_dir() and (
        any((run_dir / m).exists() for m in RUN_MARKERS) or bool(epoch_folders(run_dir))
    )


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and prove it writable now, before any work starts."""
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunFolderError(f"output folder {run_dir} exists and is not a folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except RunFolderError:
        raise
    except OSError as exc:
        raise RunFolderError(
            f"output folder {run_dir} is not writable ({exc.strerror or exc}); choose another "
            "with --out"
        ) from None


def prepare(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Check ``run_dir`` before training: writable, and holding no run unless asked for."""
    check_writable(run_dir)
    if not holds_run(run_dir) or resume:
        return
    if not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    for name in (RUN_FILE, LATEST, METRICS, EPOCH_LOG, "meta.json", "model.safetensors"):
        (run_dir / name).unlink(missing_ok=True)
    for _, folder in epoch_folders(run_dir):
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------- lock


class RunLock:
    """Exclusive writer lock on a run folder (``OUT/.lock`` holding host and pid).

    A lock left by a process that no longer runs on this host is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def __enter__(self) -> RunLock:
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunFolderError(
                    f"{self.path.parent} is being written by another process "
                    f"({self._owner_text()}); wait for it or choose another --out"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunFolderError(f"could not take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            return owner if isinstance(owner, dict) else {}
        except (OSError, ValueError):
            return {}

    def _owner_text(self) -> str:
        owner = self._owner()
        return f"pid {owner.get('pid')} on {owner.get('host')}"

    def _stale(self) -> bool:
        owner = self._owner()
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
            return not owner  # unreadable lock: left by a crash during its own write
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


# ----------------------------------------------------------------------------- state files


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, numpy arrays, scalars) into a JSON
    tree and a flat dict of tensors, so that it can be stored without pickle."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().cpu().contiguous()
            return {"$tensor": key}
        if isinstance(value, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(value.astype(np.int64, copy=True))
            return {"$ndarray": key, "dtype": str(value.dtype)}
        if isinstance(value, np.generic):
            return enc(value.item())
        if isinstance(value, tuple):
            return {"$tuple": [enc(v) for v in value]}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: enc(v) for k, v in value.items()}
            return {"$items": [[enc(k), enc(v)] for k, v in value.items()]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise CheckpointError(f"cannot store a {type(value).__name__} in trainer state")

    return enc(obj), tensors


def decode_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild a trainer-state tree from its JSON form, putting back the tensors (``$tensor``)
    and arrays it refers to."""

    def dec(value: Any) -> Any:
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        try:
            if "$tensor" in value:
                return tensors[value["$tensor"]]
            if "$ndarray" in value:
                return tensors[value["$ndarray"]].numpy().astype(np.dtype(value["dtype"]))
            if "$tuple" in value:
                return tuple(dec(v) for v in value["$tuple"])
            if "$items" in value:
                return {_hashable(dec(k)): dec(v) for k, v in value["$items"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"trainer state is malformed: {exc}") from None
        return {k: dec(v) for k, v in value.items()}

    return dec(tree)


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise CheckpointError("trainer state is malformed: unhashable key")
    return key


def state_files(state: Any) -> dict[str, bytes]:
    """The two files that store ``state``: ``trainer_state.json`` and ``.safetensors``."""
    tree, tensors = encode_state(state)
    return {
        f"{TRAINER_STATE}.json": json.dumps(tree).encode(),
        f"{TRAINER_STATE}.safetensors": st_save(tensors),
    }


def read_state(folder: Path) -> Any:
    """The trainer state (optimizer, schedule, random generators) stored in checkpoint
    ``folder``."""
    try:
        tree = json.loads((folder / f"{TRAINER_STATE}.json").read_text(encoding="utf-8"))
        tensors = st_load((folder / f"{TRAINER_STATE}.safetensors").read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no trainer state; it cannot be resumed") from None
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"trainer state in {folder} is corrupt: {exc}") from None
    return decode_state(tree, tensors)


# ----------------------------------------------------------------------------- epochs


def save_epoch(
    run_dir: Path, *, epoch: int, model_state: dict, meta: dict, trainer_state: dict
) -> Path:
    """Write one epoch folder, point ``latest.json`` at it, then drop epochs older than the
    previous one. A kill at any moment leaves a loadable newest-or-previous epoch."""
    folder = run_dir / CHECKPOINTS / f"epoch_{epoch:04d}"
    if folder.exists():  # a partial write of this epoch from a killed attempt
        shutil.rmtree(folder)
    save_checkpoint(folder, model_state, {**meta, "epoch": epoch}, state_files(trainer_state))
    write_json(run_dir / LATEST, {"epoch": epoch, "checkpoint": f"{CHECKPOINTS}/{folder.name}"})
    for _, old in epoch_folders(run_dir)[KEEP_EPOCHS:]:
        shutil.rmtree(old, ignore_errors=True)
    for stray in (run_dir / CHECKPOINTS).glob(".*.tmp"):
        stray.unlink(missing_ok=True)
    return folder


def latest_folder(run_dir: Path) -> Path:
    """The epoch folder ``latest.json`` names (confined to the run's checkpoints)."""
    pointer = run_dir / LATEST
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pointer} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{pointer} is not a JSON object")
    return confine(run_dir, data.get("checkpoint"))


def load_epoch(run_dir: Path) -> tuple[dict, dict, Any] | None:
    """``(model_state, meta, trainer_state)`` of the newest good epoch, or None if the run has
    none. A damaged newest epoch falls back to the previous one, with a one-line warning."""
    candidates: list[Path] = []
    if (run_dir / LATEST).exists():
        try:
            candidates.append(latest_folder(run_dir))
        except CheckpointError as exc:
            if "refused" in str(exc):
                raise
            _warn(f"{exc}; looking for the newest good epoch instead")
    candidates += [f for _, f in epoch_folders(run_dir) if f not in candidates]
    if not candidates:
        return None
    first_error = None
    for folder in candidates:
        try:
            state, meta = load_checkpoint(folder)
            trainer_state = read_state(folder)
        except CheckpointError as exc:
            first_error = first_error or exc
            continue
        if first_error is not None:
            _warn(f"{first_error}; resuming from {folder.name} instead")
        return state, meta, trainer_state
    raise first_error  # every epoch is damaged


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder given either itself or a run folder (its newest epoch)."""
    path = Path(path)
    if (path / LATEST).is_file():
        return latest_folder(path)
    return path


def _warn(message: str) -> None:
    print(f"spikequant: warning: {message}", file=sys.stderr, flush=True)


def write_run_file(run_dir: Path, record: dict) -> None:
    """Write the run file of ``run_dir`` (the method and recipe of the run), atomically."""
    write_json(run_dir / RUN_FILE, {"format": RUN_FORMAT, **record})


def read_run_file(run_dir: Path) -> dict | None:
    """The run file of ``run_dir``, or ``None`` when there is none; a corrupt one raises
    :class:`~spikequant.errors.CheckpointError`."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} is not a spikequant run file ({RUN_FORMAT})")
    upgrade_recipe(record.get("recipe"))
    return record


def write_epoch_log(run_dir: Path, history: list[dict]) -> None:
    """``metrics.jsonl``: one JSON line per finished epoch (rewritten whole, so a resumed run
    never repeats the epochs a kill undid)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(run_dir / EPOCH_LOG, text.encode())
