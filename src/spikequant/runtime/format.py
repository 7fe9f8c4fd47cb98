r"""The ``.sqrt`` integer program file: safetensors tensors + a JSON header, no pickle.

A program is a JSON description (``header``) and named integer tensors (``tensors``). On disk it
is one safetensors file whose metadata holds

* ``spikequant_program``: the header as canonical JSON (sorted keys),
* ``format_version``: :data:`FORMAT_VERSION`,
* ``sha256``: SHA-256 over the canonical header and, in sorted name order, every tensor's name,
  dtype, shape and little-endian bytes.

:func:`load_program` recomputes the hash and refuses a file whose content does not match it, or
whose version it does not know. This module needs only numpy and safetensors (no torch), so a
deployed process can load and run a program without PyTorch.

Header layout (version 2; a version-1 file is a QLIF program of the same layout and still loads)::

    {"timesteps": T, "num_classes": K,
     "input": {"shape": [C, H, W], "kind": "analog" | "spikes", "scale": s, "code_max": m},
     "layers": [{"name", "op": "conv" | "linear", "in_shape", "pool", "out_shape",
                 "kernel", "stride", "padding", "weight_bits", "weight_encoding",
                 "frac_bits": F, "shift": S, "neuron": null | {"leak_shift", "levels": [lo, hi],
                 "binary_membrane", "spatial_drop"}}, ...],
     "source": {...}}

and per layer ``i`` the tensors ``layers.i.weight`` (int8 levels ``[out, in, k, k]`` / ``[out,
in]``, or for ``ternary2`` uint8 with four 2-bit codes per byte: 0 -> 0, 1 -> +1, 3 -> -1, first
weight in the low bits), ``layers.i.multiplier`` / ``layers.i.offset`` (int64 ``[out]``) and, for
a spiking layer, ``layers.i.threshold`` (int64 ``[out]``, in units of ``2^-(F+1)``).

Version 2 adds Ca-LIF programs (``"kind": "calif"`` at the top of the header; QLIF programs have
no ``kind`` or ``"qlif"``): the input is ``"kind": "isi"`` with the spike budget ``"budget": K``
(8-bit pixels, ISI-coded inside the program), a spiking layer's neuron is ``{"kind": "calif",
"qmax", "gate", "tie", "pool"}``, its weights may be ``"weight_encoding": "int32"`` (exact integer
levels of float32 weights that are not a small multiple of one step) and the read-out gives the
float value of one integer logit as ``"logit_unit"`` (and ``"logit_shift"``: the exact logits are
shifted right by it to fit int64); ``"membrane_bits"`` (64 or 128) says how wide the exact
membranes are. The equations are in
:mod:`spikequant.runtime.calif`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ProgramError

FORMAT_NAME = "spikequant-integer-program"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: QLIF programs only, read as they are
_TERNARY_CODES = {0: 0, 1: 1, -1: 3}


@dataclass
class Program:
    """An integer-only network: ``header`` (JSON-able dict) + named numpy integer ``tensors``."""

    header: dict
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layers(self) -> list[dict]:
        return self.header["layers"]

    @property
    def kind(self) -> str:
        """``"qlif"`` (binary-spike QLIF layers) or ``"calif"`` (Ca-LIF layers, ISI input)."""
        return str(self.header.get("kind", "qlif"))

    @property
    def timesteps(self) -> int:
        return int(self.header["timesteps"])

    def weight(self, index: int) -> np.ndarray:
        """int8 weight levels of layer ``index`` (unpacked), shaped as in the header."""
        layer = self.layers[index]
        raw = self.tensors[f"layers.{index}.weight"]
        shape = weight_shape(layer)
        if layer["weight_encoding"] == "ternary2":
            return unpack_ternary(raw, int(np.prod(shape))).reshape(shape)
        if layer["weight_encoding"] not in ("int8", "int32"):
            raise ProgramError(f"unknown weight encoding {layer['weight_encoding']!r}")
        return raw.reshape(shape)

    def content_hash(self) -> str:
        return content_hash(self.header, self.tensors)

    def weight_bytes(self) -> int:
        """Bytes of the stored weights (packed as in the file)."""
        return sum(int(self.tensors[f"layers.{i}.weight"].nbytes) for i in range(len(self.layers)))


def weight_shape(layer: dict) -> tuple[int, ...]:
    in_channels = layer["in_shape"][0] if layer["op"] == "conv" else _flat_in(layer)
    out = layer["out_shape"][0]
    if layer["op"] == "conv":
        return (out, in_channels, layer["kernel"], layer["kernel"])
    return (out, in_channels)


def _flat_in(layer: dict) -> int:
    shape = layer["in_shape"]
    if len(shape) == 1:
        return int(shape[0])
    c, h, w = shape
    p = layer["pool"]
    return int(c * (h // p) * (w // p))


def pack_ternary(levels: np.ndarray) -> np.ndarray:
    """Four ternary levels per byte (0 -> 0, +1 -> 1, -1 -> 3), the first in the low bits."""
    flat = np.asarray(levels, dtype=np.int8).reshape(-1)
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ProgramError("ternary packing needs levels in {-1, 0, 1}")
    codes = np.where(flat < 0, 3, flat).astype(np.uint8)
    pad = (-codes.size) % 4
    codes = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, 4)
    return (codes[:, 0] | (codes[:, 1] << 2) | (codes[:, 2] << 4) | (codes[:, 3] << 6)).astype(
        np.uint8
    )


def unpack_ternary(packed: np.ndarray, count: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    codes = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:count]
    if np.any(codes == 2):
        raise ProgramError("corrupt ternary weights (code 2 is unused)")
    return np.where(codes == 3, -1, codes).astype(np.int8)


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def content_hash(header: dict, tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    digest.update(_canonical(header))
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(name.encode() + b"\0")
        digest.update(array.dtype.newbyteorder("<").str.encode() + b"\0")
        digest.update(json.dumps(list(array.shape)).encode() + b"\0")
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def save_program(program: Program, path: str | os.PathLike) -> str:
    """Write ``program`` atomically; returns its SHA-256 content hash."""
    from safetensors.numpy import save

    from ..io import atomic_write_bytes

    tensors = {k: np.ascontiguousarray(v) for k, v in program.tensors.items()}
    header = {"format": FORMAT_NAME, **program.header}
    digest = content_hash(header, tensors)
    metadata = {
        "spikequant_program": _canonical(header).decode(),
        "format_version": str(FORMAT_VERSION),
        "sha256": digest,
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return digest


def load_program(path: str | os.PathLike) -> Program:
    """Read a ``.sqrt`` file, check its version and content hash."""
    from safetensors import safe_open
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"no program file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
        tensors = load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ProgramError(f"{path} is not a safetensors program file ({exc})") from None
    if "spikequant_program" not in metadata:
        raise ProgramError(f"{path} holds no spikequant program header")
    version = metadata.get("format_version")
    if version not in {str(v) for v in READABLE_VERSIONS}:
        raise ProgramError(
            f"{path} has program format version {version!r}; this spikequant reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    header = json.loads(metadata["spikequant_program"])
    if header.get("format") != FORMAT_NAME:
        raise ProgramError(f"{path} is not a {FORMAT_NAME} file")
    if header.get("kind", "qlif") not in ("qlif", "calif"):
        raise ProgramError(f"{path} holds a program of unknown kind {header.get('kind')!r}")
    digest = content_hash(header, tensors)
    if digest != metadata.get("sha256"):
        raise ProgramError(
            f"{path}: content hash mismatch (file says {metadata.get('sha256')}, content is "
            f"{digest}); the file is corrupt or was edited"
        )
    return Program(header=header, tensors=tensors)


__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "Program",
    "content_hash",
    "load_program",
    "pack_ternary",
    "save_program",
    "unpack_ternary",
    "weight_shape",
]
