"""The one loader of spikequant's compiled C++ extensions (neuron kernels, TTFS solver, integer
runtime).

Each extension is built on first use with ``torch.utils.cpp_extension`` into
``$SPIKEQUANT_CACHE/<subdir>/<key>`` (default ``~/.cache/spikequant``), where the key hashes the
source, the torch version and the CPU (builds use ``-march=native``), and later imported from
there directly. ``SPIKEQUANT_DISABLE_KERNELS`` refuses every build. A failed build is recorded
with its reason (one line) and the caller falls back or refuses; it is never retried in the same
process.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import sys
import threading
import warnings
from typing import Any

import torch


def cache_root() -> pathlib.Path:
    """Root of the compiled-kernel cache: ``$SPIKEQUANT_CACHE`` or ``~/.cache/spikequant``."""
    root = os.environ.get("SPIKEQUANT_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "spikequant"


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def import_built_extension(build_dir: pathlib.Path, name: str) -> Any:
    """Import an already compiled extension ``name`` from ``build_dir`` directly, or None (no
    ninja check: the directory name already encodes the source, torch version and CPU)."""
    import importlib.machinery
    import importlib.util

    path = build_dir / f"{name}.so"
    if not path.is_file():
        return None
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class CompiledExtension:
    """A C++ extension built once per machine and loaded once per process.

    ``source`` is a ``.cpp`` file, or C++ text with ``functions`` to bind (``load_inline``).
    """

    def __init__(
        self,
        name: str,
        *,
        subdir: str,
        source: pathlib.Path | str,
        functions: list[str] | None = None,
        cflags: tuple[str, ...] = ("-O3", "-ffp-contract=off"),
        openmp: bool = False,
        message: str | None = None,
    ) -> None:
        self.name = name
        self.subdir = subdir
        self.source = source
        self.functions = functions
        self.cflags = list(cflags)
        self.openmp = openmp
        self.message = message  # printed once before a (slow) build
        self.module: Any = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def _text(self) -> bytes:
        if isinstance(self.source, pathlib.Path):
            return self.source.read_bytes()
        return self.source.encode()

    def build_dir(self) -> pathlib.Path:
        key = hashlib.sha256()
        for part in (
            self._text(),
            torch.__version__.encode(),
            platform.machine().encode(),
            cpu_model().encode(),
            " ".join(self.cflags).encode(),
        ):
            key.update(part)
        return cache_root() / self.subdir / key.hexdigest()[:16]

    def load(self) -> Any:
        """The extension module, or None when it cannot be built here (see :attr:`error`)."""
        if self.module is not None or self.error is not None:
            return self.module
        with self._lock:
            if self.module is None and self.error is None:
                if os.environ.get("SPIKEQUANT_DISABLE_KERNELS"):
                    self.error = "disabled by SPIKEQUANT_DISABLE_KERNELS"
                else:
                    try:
                        self.module = self._build()
                    except Exception as exc:  # no compiler, no ninja, broken toolchain
                        lines = str(exc).strip().splitlines() or [""]
                        self.error = f"{type(exc).__name__}: {lines[-1]}"
        return self.module

    def _build(self) -> Any:
        build_dir = self.build_dir()
        try:
            built = import_built_extension(build_dir, self.name)
        except ImportError:
            built = None
        if built is not None:
            return built
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        if self.message:
            print(f"spikequant: {self.message}", file=sys.stderr, flush=True)
        flags = list(self.cflags)
        if platform.machine() in ("x86_64", "AMD64"):
            flags.append("-march=native")
        ldflags = []
        if self.openmp:
            flags.append("-fopenmp")
            ldflags.append("-fopenmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(self.source, pathlib.Path):
                return cpp_extension.load(
                    name=self.name,
                    sources=[str(self.source)],
                    extra_cflags=flags,
                    extra_ldflags=ldflags,
                    build_directory=str(build_dir),
                    verbose=False,
                )
            return cpp_extension.load_inline(
                name=self.name,
                cpp_sources=[self.source],
                functions=self.functions,
                extra_cflags=flags,
                extra_ldflags=ldflags,
                build_directory=str(build_dir),
                verbose=False,
            )
