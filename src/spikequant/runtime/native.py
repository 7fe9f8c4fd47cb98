r"""The C++ integer runtime (``engine.cpp``), loaded through ctypes.

The engine is plain C++ with a C API and no PyTorch dependency, so a deployed process runs a
program with numpy alone (the point of an integer runtime is a small, torch-free footprint). It is
compiled on first use with the host C++ compiler (``$CXX`` or ``c++``, ``-O3 -fopenmp``,
``-march=native`` on x86-64) into ``<spikequant cache>/runtime/<hash of source, compiler, flags and
CPU>/`` (the cache root of :func:`spikequant.kernels.cache_root`) and reused afterwards.

:class:`NativeRuntime` offers a batched mode (``run``: a whole window, samples in parallel with
OpenMP) and a streaming mode (``step``: one time step per call, membranes kept between calls,
``reset`` between sequences). Semantics: :mod:`spikequant.runtime.reference`, bit for bit.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ProgramError, ShapeError
from .format import Program

SOURCE = Path(__file__).with_name("engine.cpp")
_CFG_WIDTH = 22
_P64 = ctypes.POINTER(ctypes.c_int64)


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _flags() -> list[str]:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def _cpu() -> str:
    """The CPU's model and feature flags: a ``-march=native`` build only runs on its own kind of
    CPU, so a cache shared between machines must key on it (read without importing torch)."""
    found = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                name = line.split(":", 1)[0].strip()
                if name in ("model name", "flags", "Features", "CPU part") and name not in found:
                    found[name] = line.strip()
    except OSError:
        pass
    return "\n".join(found.values()) or platform.processor()


def library_dir(root: Path | None = None) -> Path:
    if root is None:
        from ..kernels.build import cache_root

        root = cache_root()
    key = hashlib.sha256(SOURCE.read_bytes())
    for part in (_compiler(), platform.machine(), _cpu(), " ".join(_flags())):
        key.update(part.encode())
    return Path(root) / "runtime" / key.hexdigest()[:16]


def build_library(root: Path | None = None) -> Path:
    """Compile ``engine.cpp`` once (cached); returns the shared library's path."""
    out_dir = library_dir(root)
    target = out_dir / "libspikequant_runtime.so"
    if target.is_file():
        return target
    compiler = shutil.which(_compiler())
    if compiler is None:
        raise ProgramError(
            f"the C++ runtime needs a C++ compiler ({_compiler()!r} not found; set CXX)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = _flags()
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True
        )
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise ProgramError(f"compiling the C++ runtime failed: {tail}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    lib.sq_create.restype = ctypes.c_void_p
    # both engines take (layer count, layer configs, four per-layer pointer arrays, ...)
    layers = [ctypes.c_int64, _P64, *[ctypes.POINTER(ctypes.c_void_p)] * 4]
    lib.sq_create.argtypes = [*layers, ctypes.c_int64]
    lib.sq_free.argtypes = [ctypes.c_void_p]
    lib.sq_reset.argtypes = [ctypes.c_void_p]
    lib.sq_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.sq_run.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int64,
    ]
    lib.sq_trace.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    lib.sq_bytes.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.sqc_create.restype = ctypes.c_void_p
    lib.sqc_create.argtypes = [*layers, *[ctypes.c_int64] * 5]
    lib.sqc_free.argtypes = [ctypes.c_void_p]
    lib.sqc_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.sqc_counts.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    return lib


def _layer_config(layer: dict, first: bool, analog: bool) -> list[int]:
    conv = layer["op"] == "conv"
    shape = layer["in_shape"]
    cin, hin, win = (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)
    out = layer["out_shape"]
    cout, hout, wout = (out[0], out[1], out[2]) if len(out) == 3 else (out[0], 1, 1)
    neuron = layer["neuron"] or {}
    levels = neuron.get("levels", [0, 0])
    if neuron and not -128 <= levels[0] <= 0 <= levels[1] <= 127:
        raise ProgramError("membrane levels must fit int8")
    return [
        int(conv),
        cin,
        hin,
        win,
        layer["pool"],
        cout,
        hout,
        wout,
        layer["kernel"],
        layer["stride"],
        layer["padding"],
        int(bool(neuron)),
        layer["frac_bits"],
        layer["shift"],
        neuron.get("leak_shift", 0),
        levels[0],
        levels[1],
        int(neuron.get("binary_membrane", 0)),
        neuron.get("spatial_drop", 0),
        int(layer["weight_encoding"] == "ternary2"),
        int(first and analog),
        0,
    ]


class NativeRuntime:
    """A program loaded into the C++ engine for ``batch`` samples at a time."""

    def __init__(
        self,
        program: Program,
        batch: int = 1,
        *,
        threads: int = 1,
        library: str | os.PathLike | None = None,
    ) -> None:
        if batch < 1:
            raise ProgramError(f"batch must be positive, got {batch}")
        self.program = program
        self.batch = int(batch)
        self.threads = max(1, int(threads))
        self._lib = _load(Path(library) if library else build_library())
        self._calif = program.kind == "calif"
        spec = program.header["input"]
        self.input_shape = tuple(spec["shape"])
        self.input_size = int(np.prod(self.input_shape))
        self.num_classes = int(program.header["num_classes"])
        if self._calif:
            self._handle = None
            self._create_calif()
            return
        layers = program.layers
        analog = program.header["input"]["kind"] == "analog"
        cfg = np.array(
            [_layer_config(layer, i == 0, analog) for i, layer in enumerate(layers)], dtype=np.int64
        ).reshape(-1)
        # keep every array alive as long as the engine (it copies, but be safe during create)
        self._keep = [cfg]
        arrays = {"w": [], "m": [], "o": [], "t": []}
        for i, layer in enumerate(layers):
            weight = np.ascontiguousarray(
                program.weight(i).reshape(layer["out_shape"][0], -1), dtype=np.int8
            )
            mult = np.ascontiguousarray(program.tensors[f"layers.{i}.multiplier"], dtype=np.int64)
            off = np.ascontiguousarray(program.tensors[f"layers.{i}.offset"], dtype=np.int64)
            name = f"layers.{i}.threshold"
            th = np.ascontiguousarray(
                program.tensors.get(name, np.zeros(1, np.int64)), dtype=np.int64
            )
            for key, arr in zip("wmot", (weight, mult, off, th), strict=True):
                arrays[key].append(arr)
                self._keep.append(arr)

        def pointers(key):
            return (ctypes.c_void_p * len(layers))(*[a.ctypes.data for a in arrays[key]])

        self._handle = self._lib.sq_create(
            len(layers),
            cfg.ctypes.data_as(_P64),
            pointers("w"),
            pointers("m"),
            pointers("o"),
            pointers("t"),
            self.batch,
        )
        self._keep = []

    def _create_calif(self) -> None:
        program = self.program
        layers = program.layers
        cfg, arrays = [], {"w": [], "m": [], "o": [], "t": []}
        for i, layer in enumerate(layers):
            cfg.extend(_calif_config(layer))
            weight = np.ascontiguousarray(
                program.weight(i).reshape(layer["out_shape"][0], -1), dtype=np.int64
            )
            tensors = program.tensors
            threshold = tensors.get(f"layers.{i}.threshold", np.zeros(1, np.int64))
            for key, arr in zip(
                "wmot",
                (
                    weight,
                    tensors[f"layers.{i}.multiplier"],
                    tensors[f"layers.{i}.offset"],
                    threshold,
                ),
                strict=True,
            ):
                arrays[key].append(np.ascontiguousarray(arr, dtype=np.int64))
        config = np.array(cfg, dtype=np.int64)

        def pointers(key):
            return (ctypes.c_void_p * len(layers))(*[a.ctypes.data for a in arrays[key]])

        self._handle = self._lib.sqc_create(
            len(layers),
            config.ctypes.data_as(_P64),
            pointers("w"),
            pointers("m"),
            pointers("o"),
            pointers("t"),
            self.batch,
            program.timesteps,
            int(program.header["input"]["budget"]),
            self.input_size,
            int(layers[-1].get("logit_shift", 0)),
        )
        self._held = {
            "weights": sum(a.nbytes for key in "wmot" for a in arrays[key]),
            "membranes": 24 * sum(_calif_neurons(layer) for layer in layers),
            "spikes": 16 * max(self.input_size, *(_calif_outputs(layer) for layer in layers)),
            "scratch": 8 * max(_calif_neurons(layer) for layer in layers),
        }

    def close(self) -> None:
        if getattr(self, "_handle", None):
            if self._calif:
                self._lib.sqc_free(self._handle)
            else:
                self._lib.sq_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()

    def _codes(self, codes, leading: tuple[int, ...]) -> np.ndarray:
        array = np.ascontiguousarray(codes, dtype=np.int32)
        expected = (*leading, *self.input_shape)
        if array.shape != expected:
            raise ShapeError(f"runtime input must be {expected} int codes, got {array.shape}")
        return array

    def _whole_windows_only(self, what: str) -> None:
        if self._calif:
            raise ProgramError(
                f"a Ca-LIF program has no {what}: it runs whole windows (its rounding phase "
                "follows step T)"
            )

    def reset(self) -> None:
        self._whole_windows_only("streaming mode")
        self._lib.sq_reset(self._handle)

    def step(self, codes) -> np.ndarray:
        """Streaming: one time step ``codes[batch, C, H, W]`` -> this step's logits (int64)."""
        self._whole_windows_only("streaming mode")
        x = self._codes(codes, (self.batch,))
        out = np.zeros((self.batch, self.num_classes), np.int64)
        self._lib.sq_step(self._handle, x.ctypes.data, out.ctypes.data, self.threads)
        return out

    def run(self, codes) -> np.ndarray:
        """Batched: ``[batch, C, H, W]`` (static, repeated T times) or ``[T, batch, C, H, W]``
        -> integer logits summed over the window ``[batch, K]``."""
        array = np.asarray(codes)
        if self._calif:
            x = self._codes(array, (self.batch,))
            if x.size and (x.min() < 0 or x.max() > 255):
                raise ProgramError("a Ca-LIF program takes 8-bit pixels 0..255")
            out = np.zeros((self.batch, self.num_classes), np.int64)
            self._lib.sqc_run(self._handle, x.ctypes.data, out.ctypes.data, self.threads)
            return out
        static = array.ndim == len(self.input_shape) + 1
        steps = self.program.timesteps if static else array.shape[0]
        x = self._codes(array, (self.batch,) if static else (steps, self.batch))
        out = np.zeros((self.batch, self.num_classes), np.int64)
        self._lib.sq_run(
            self._handle, x.ctypes.data, steps, int(static), out.ctypes.data, self.threads
        )
        return out

    def trace(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Spikes and stored membrane levels of spiking layer ``index`` after the last step."""
        self._whole_windows_only("per-step trace (use counts)")
        layer = self.program.layers[index]
        if layer["neuron"] is None:
            raise ProgramError(f"layer {index} is the read-out (no neurons)")
        shape = (self.batch, *layer["out_shape"])
        spikes = np.zeros(shape, np.int8)
        membranes = np.zeros(shape, np.int8)
        self._lib.sq_trace(self._handle, index, spikes.ctypes.data, membranes.ctypes.data)
        return spikes, membranes

    def memory_bytes(self) -> dict[str, int]:
        """Bytes the engine holds: weights (+ per-channel integers), membranes, spikes, scratch."""
        if self._calif:
            return dict(self._held)
        out = np.zeros(4, np.int64)
        self._lib.sq_bytes(self._handle, out.ctypes.data)
        keys = ("weights", "membranes", "spikes", "scratch")
        return {k: int(v) for k, v in zip(keys, out, strict=True)}

    def counts(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Ca-LIF program, after ``run``: the counts ``c`` of spiking layer ``index`` (before
        pooling), the pool neuron's counts (None without pooling) and each sample's total spikes."""
        if not self._calif:
            raise ProgramError("counts are the integer activations of a Ca-LIF program")
        layer = self.program.layers[index]
        if layer["neuron"] is None:
            raise ProgramError(f"layer {index} is the read-out (no neurons)")
        full = (self.batch, layer["out_shape"][0], *_pre_pool(layer)[1:])
        counts = np.zeros(full, np.int64)
        pooled = np.zeros((self.batch, *layer["out_shape"]), np.int64)
        spikes = np.zeros(self.batch, np.int64)
        self._lib.sqc_counts(
            self._handle, index, counts.ctypes.data, pooled.ctypes.data, spikes.ctypes.data
        )
        return counts, (pooled if layer["neuron"]["pool"] > 1 else None), spikes


def _pre_pool(layer: dict) -> list[int]:
    """Output shape of a Ca-LIF layer's conv/linear (before its pooling)."""
    if layer["op"] == "linear":
        return list(layer["out_shape"])
    k, pad, stride = layer["kernel"], layer["padding"], layer["stride"]
    _, h, w = layer["in_shape"]
    return [layer["out_shape"][0], (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1]


def _calif_neurons(layer: dict) -> int:
    return int(np.prod(_pre_pool(layer))) if layer["neuron"] else 0


def _calif_outputs(layer: dict) -> int:
    return int(np.prod(layer["out_shape"]))


def _calif_config(layer: dict) -> list[int]:
    full = _pre_pool(layer)
    shape = layer["in_shape"]
    cin, hin, win = (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)
    cout, hout, wout = (full[0], full[1], full[2]) if len(full) == 3 else (full[0], 1, 1)
    neuron = layer["neuron"] or {}
    qmax = neuron.get("qmax")
    return [
        int(layer["op"] == "conv"),
        cin,
        hin,
        win,
        cout,
        hout,
        wout,
        layer["kernel"],
        layer["stride"],
        layer["padding"],
        int(bool(neuron)),
        -1 if qmax is None else int(qmax),
        int(neuron.get("gate", False)),
        int(neuron.get("tie", "up") == "up"),
        int(neuron.get("pool", 1)),
        0,
    ]


__all__ = ["NativeRuntime", "build_library", "library_dir"]
