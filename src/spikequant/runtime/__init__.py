"""Integer inference runtime for quantized spiking networks (Quant-SNN / SpQuant-SNN, Ca-LIF).

* :mod:`~spikequant.runtime.format`: the ``.sqrt`` program file (safetensors + JSON header,
  SHA-256 content hash; numpy only),
* :mod:`~spikequant.runtime.lower`: trained model -> integer program,
* :mod:`~spikequant.runtime.lower_calif`: Ca-LIF converted network -> integer program,
* :mod:`~spikequant.runtime.calif`: the int64 reference interpreter of a Ca-LIF program,
* :mod:`~spikequant.runtime.reference`: the PyTorch int64 reference interpreter,
* :mod:`~spikequant.runtime.native`: the C++ runtime (event-driven, no torch needed at run time).

Names are imported lazily so that loading and running a program does not import PyTorch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Program": "format",
    "load_program": "format",
    "save_program": "format",
    "FORMAT_VERSION": "format",
    "lower_model": "lower",
    "lower_calif": "lower_calif",
    "CaLIFInterpreter": "calif",
    "quantize_input": "lower",
    "ReferenceInterpreter": "reference",
    "NativeRuntime": "native",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
